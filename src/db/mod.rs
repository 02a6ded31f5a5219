//! The database: connecting (to `DATABASE_URL`, or to the embedded private cluster when it
//! is unset) and running the embedded migrations.

pub mod embedded;

use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool, SqlSafeStr};

/// Errors of the database layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("DATABASE_URL is not a valid PostgreSQL URL ({url}): {source}")]
    BadUrl { url: String, source: sqlx::Error },
    #[error("cannot connect to PostgreSQL at {target}: {source}")]
    Connect { target: String, source: sqlx::Error },
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("embedded PostgreSQL: {0}")]
    Embedded(String),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
}

/// The migrations, compiled into the binary so a container needs no files beside it.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "queue", include_str!("../../migrations/0001_queue.sql")),
    (
        2,
        "probe_runs",
        include_str!("../../migrations/0002_probe_runs.sql"),
    ),
    (
        3,
        "schedules_workflows",
        include_str!("../../migrations/0003_schedules_workflows.sql"),
    ),
    (4, "paper", include_str!("../../migrations/0004_paper.sql")),
    (
        5,
        "market",
        include_str!("../../migrations/0005_market.sql"),
    ),
    (
        6,
        "dashboard",
        include_str!("../../migrations/0006_dashboard.sql"),
    ),
    (7, "bot", include_str!("../../migrations/0007_bot.sql")),
    (8, "live", include_str!("../../migrations/0008_live.sql")),
    (
        9,
        "dashboard search",
        include_str!("../../migrations/0009_dashboard_search.sql"),
    ),
    (
        10,
        "dashboard failed jobs",
        include_str!("../../migrations/0010_dashboard_failed.sql"),
    ),
    (
        11,
        "notify once",
        include_str!("../../migrations/0011_notify_once.sql"),
    ),
];

pub fn migrator() -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|(v, d, sql)| {
            Migration::new(
                *v,
                (*d).into(),
                MigrationType::Simple,
                sqlx::AssertSqlSafe(*sql).into_sql_str(),
                false,
            )
        })
        .collect();
    Migrator::with_migrations(migrations)
}

/// The latest migration version this binary knows.
pub fn latest_migration() -> i64 {
    MIGRATIONS.iter().map(|m| m.0).max().unwrap_or(0)
}

pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    migrator().run(pool).await?;
    Ok(())
}

/// Where to connect: an explicit URL, or the embedded cluster's socket.
#[derive(Debug, Clone)]
pub enum Target {
    Url(String),
    Embedded(embedded::Cluster),
}

impl Target {
    pub fn describe(&self) -> String {
        match self {
            // Never print a password that may be inside the URL.
            Target::Url(u) => redact_url(u),
            Target::Embedded(c) => format!(
                "embedded cluster in {} (socket {})",
                c.data_dir.display(),
                c.socket_dir.display()
            ),
        }
    }

    pub fn connect_options(&self) -> Result<PgConnectOptions, DbError> {
        match self {
            Target::Url(u) => u
                .parse::<PgConnectOptions>()
                .map_err(|source| DbError::BadUrl {
                    url: redact_url(u),
                    source,
                }),
            Target::Embedded(c) => Ok(c.connect_options("coinpilot")),
        }
    }
}

/// Resolves the target: `DATABASE_URL` when set, else the embedded cluster (started now).
pub async fn resolve_target() -> Result<Target, DbError> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Ok(Target::Url(url)),
        _ => {
            let cluster = embedded::Cluster::default_location()?;
            cluster.ensure_running().await?;
            cluster.ensure_database("coinpilot").await?;
            Ok(Target::Embedded(cluster))
        }
    }
}

/// A pool of `max` connections; fails fast (10 s) with a message naming the target and
/// the server's or the network's own reason.
pub async fn connect(target: &Target, max: u32) -> Result<PgPool, DbError> {
    let opts = target.connect_options()?;
    let fail = |source| DbError::Connect {
        target: target.describe(),
        source,
    };
    // One direct connection first: a pool would only say "timed out".
    match tokio::time::timeout(Duration::from_secs(10), opts.connect()).await {
        Ok(Ok(conn)) => conn.close().await.map_err(fail)?,
        Ok(Err(e)) => return Err(fail(e)),
        Err(_) => return Err(fail(sqlx::Error::PoolTimedOut)),
    }
    PgPoolOptions::new()
        .max_connections(max)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(opts)
        .await
        .map_err(|source| DbError::Connect {
            target: target.describe(),
            source,
        })
}

/// `postgres://user:secret@host/db` → `postgres://user:****@host/db`: the one masking rule
/// of `config::secrets` (a `password=` query parameter is masked too, a URL that cannot be
/// read is masked whole), so an error never shows what `config check` hides.
pub fn redact_url(url: &str) -> String {
    crate::config::secrets::mask_url_password(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A migration file not listed in `MIGRATIONS` would never run: every file in
    /// `migrations/` must be listed under its number, with the file's exact text.
    #[test]
    fn every_migration_file_is_compiled_in() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if !name.ends_with(".sql") {
                continue;
            }
            files += 1;
            let version: i64 = name.split('_').next().unwrap().parse().unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                MIGRATIONS.iter().any(|m| m.0 == version && m.2 == text),
                "{name} is not in MIGRATIONS (or its text differs)"
            );
        }
        assert_eq!(
            files,
            MIGRATIONS.len(),
            "MIGRATIONS lists a file that is gone"
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:pw@h:5432/d"),
            "postgres://u:****@h:5432/d"
        );
        assert_eq!(redact_url("postgres://u@h/d"), "postgres://u@h/d");
        assert_eq!(redact_url("u:pw@h/d"), "****");
        assert_eq!(
            redact_url("postgres://u@h/d?password=pw"),
            "postgres://u@h/d?password=****"
        );
    }
}
