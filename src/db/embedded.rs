//! The embedded default database: a private PostgreSQL cluster started from the system's
//! binaries (`initdb`, `pg_ctl` on PATH or under `/usr/lib/postgresql/*/bin`) when no
//! `DATABASE_URL` is given. It listens only on a unix socket in a short private directory
//! (`/tmp/coinpilot-<hash>`: socket paths are limited to ~107 bytes).
//!
//! As root, `initdb` refuses to run, so the cluster is created and run as the `postgres`
//! OS user, in a data directory that user owns (`/var/lib/coinpilot`; root's home is not
//! readable by it). The cluster is **left running** on exit so the next start is instant;
//! `coinpilot db stop` stops it. Concurrent starters serialise on a lock file.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

use super::DbError;

/// The port number only names the socket file; nothing listens on TCP.
const PORT: u16 = 5432;

#[derive(Debug, Clone)]
pub struct Cluster {
    pub base: PathBuf,
    pub data_dir: PathBuf,
    pub socket_dir: PathBuf,
    pub log_file: PathBuf,
    bin_dir: PathBuf,
    /// (uid, gid) to run as when we are root.
    run_as: Option<(u32, u32)>,
}

fn err(msg: impl Into<String>) -> DbError {
    DbError::Embedded(msg.into())
}

impl Cluster {
    /// `COINPILOT_DATA_DIR`, else `/var/lib/coinpilot` as root, else the user's data dir.
    pub fn default_location() -> Result<Self, DbError> {
        let base = match std::env::var_os("COINPILOT_DATA_DIR") {
            Some(d) => PathBuf::from(d),
            None if is_root() => PathBuf::from("/var/lib/coinpilot"),
            None => match (std::env::var_os("XDG_DATA_HOME"), std::env::var_os("HOME")) {
                (Some(x), _) => PathBuf::from(x).join("coinpilot"),
                (None, Some(h)) => PathBuf::from(h).join(".local/share/coinpilot"),
                (None, None) => return Err(err("neither COINPILOT_DATA_DIR nor HOME is set")),
            },
        };
        Self::at(&base)
    }

    /// A cluster whose files live under `base` (created if missing).
    pub fn at(base: &Path) -> Result<Self, DbError> {
        let bin_dir = find_bin_dir()?;
        let run_as = if is_root() {
            Some(postgres_user()?)
        } else {
            None
        };
        let data_dir = base.join("pgdata");
        let socket_dir = PathBuf::from(format!(
            "/tmp/coinpilot-{:08x}",
            fnv1a(data_dir.to_string_lossy().as_bytes())
        ));
        Ok(Cluster {
            base: base.to_path_buf(),
            log_file: base.join("postgres.log"),
            data_dir,
            socket_dir,
            bin_dir,
            run_as,
        })
    }

    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.socket_dir)
            .port(PORT)
            .username("postgres")
            .database(database)
    }

    /// Creates the cluster if needed and starts it unless it already runs.
    pub async fn ensure_running(&self) -> Result<(), DbError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.ensure_running_blocking())
            .await
            .map_err(|e| err(format!("start-up task failed: {e}")))?
    }

    fn ensure_running_blocking(&self) -> Result<(), DbError> {
        self.prepare_dirs()?;
        let lock = std::fs::File::create(self.base.join(".lock")).map_err(|e| {
            err(format!(
                "cannot create lock file in {}: {e}",
                self.base.display()
            ))
        })?;
        lock.lock()
            .map_err(|e| err(format!("cannot lock {}: {e}", self.base.display())))?;
        if !self.data_dir.join("PG_VERSION").exists() {
            self.initdb()?;
        }
        if !self.is_running() {
            self.start()?;
        }
        Ok(())
    }

    fn prepare_dirs(&self) -> Result<(), DbError> {
        for dir in [&self.base, &self.socket_dir] {
            std::fs::create_dir_all(dir)
                .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
            self.chown(dir)?;
        }
        Ok(())
    }

    fn chown(&self, path: &Path) -> Result<(), DbError> {
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| {
                err(format!(
                    "cannot hand {} to the postgres user: {e}",
                    path.display()
                ))
            })?;
        }
        Ok(())
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        // The postgres user cannot read root's working directory.
        cmd.current_dir(&self.base);
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn run(&self, mut cmd: Command, what: &str) -> Result<(), DbError> {
        let out = cmd
            .output()
            .map_err(|e| err(format!("cannot run {what}: {e}")))?;
        if out.status.success() {
            return Ok(());
        }
        Err(err(format!(
            "{what} failed ({}): {}{} (log: {})",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim(),
            self.log_file.display()
        )))
    }

    fn initdb(&self) -> Result<(), DbError> {
        tracing::info!(dir = %self.data_dir.display(), "creating the embedded PostgreSQL cluster");
        let mut cmd = self.command("initdb");
        cmd.arg("-D").arg(&self.data_dir).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-instructions",
        ]);
        self.run(cmd, "initdb")
    }

    fn is_running(&self) -> bool {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("status").arg("-D").arg(&self.data_dir);
        cmd.output().map(|o| o.status.success()).unwrap_or(false)
            && self.socket_dir.join(format!(".s.PGSQL.{PORT}")).exists()
    }

    fn start(&self) -> Result<(), DbError> {
        tracing::info!(socket = %self.socket_dir.display(), "starting the embedded PostgreSQL cluster");
        self.run(self.server_control(&["start"]), "pg_ctl start")
    }

    /// `pg_ctl` starting (or restarting) the server, which listens only on its unix socket.
    fn server_control(&self, action: &[&str]) -> std::process::Command {
        let opts = format!(
            "-k {} -c listen_addresses= -p {PORT}",
            self.socket_dir.display()
        );
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_file)
            .args(["-w", "-t", "60", "-o", &opts])
            .args(action);
        cmd
    }

    /// Restarts the cluster in fast mode (`pg_ctl restart -m fast`): every connection is
    /// cut and open transactions roll back. The fault suite uses it.
    pub fn restart(&self) -> Result<(), DbError> {
        self.run(
            self.server_control(&["-m", "fast", "restart"]),
            "pg_ctl restart",
        )
    }

    /// Stops the cluster (fast mode: running transactions are rolled back).
    pub fn stop(&self) -> Result<(), DbError> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "fast", "-w", "stop"]);
        self.run(cmd, "pg_ctl stop")
    }

    /// Creates `name` unless it exists.
    pub async fn ensure_database(&self, name: &str) -> Result<(), DbError> {
        let mut conn = self.connect_options("postgres").connect().await?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(name)
                .fetch_one(&mut conn)
                .await?;
        if !exists {
            let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
            match sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
            {
                Ok(_) => {}
                // Another starter created it first.
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
                Err(e) => return Err(e.into()),
            }
        }
        conn.close().await?;
        Ok(())
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// The `postgres` OS user's (uid, gid), from `/etc/passwd`.
fn postgres_user() -> Result<(u32, u32), DbError> {
    let passwd = std::fs::read_to_string("/etc/passwd")
        .map_err(|e| err(format!("cannot read /etc/passwd: {e}")))?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"postgres") && f.len() > 3)
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .ok_or_else(|| {
            err("running as root, but there is no `postgres` OS user to run the server as")
        })
}

/// `initdb` and `pg_ctl`: on PATH, else the newest `/usr/lib/postgresql/*/bin`.
fn find_bin_dir() -> Result<PathBuf, DbError> {
    if let Some(dir) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
    {
        return Ok(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            Some((
                e.file_name().to_str()?.parse::<u32>().ok()?,
                e.path().join("bin"),
            ))
        })
        .filter(|(_, bin)| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b).ok_or_else(|| {
        err("no PostgreSQL server binaries found (initdb, pg_ctl on PATH or under /usr/lib/postgresql/*/bin); install PostgreSQL or set DATABASE_URL")
    })
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x01000193)
    })
}
