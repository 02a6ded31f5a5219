//! The `workers` table: which worker processes are alive, for the dashboard's overview, and
//! how far each one's clock has gone (a job enqueued by hand is made due for all of them,
//! [`due_for_every_worker`]). Nothing in the queue's correctness reads it (rescue goes by
//! leases, never by worker rows), so every write here is best-effort past start-up.
//!
//! A row is one *name*. Names should be unique, but two processes started with the same
//! `--name` (a copy-pasted manifest, a restarted pod whose predecessor is not yet stale) must
//! not hide each other: each row remembers which start wrote it (`started_at`), a process
//! removes the row at exit only if it is still its own, and a heartbeat re-creates a row
//! that is gone. A start that finds a live row under its name says so in the log.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::QueueError;

/// Writes this start's row and returns the heartbeat of the row it replaced, if any. The
/// `old` CTE reads the row as it was before the upsert (one snapshot), so two starts at the
/// same instant may not see each other: the warning is best-effort. Locks: the row.
const REGISTER: &str = "
WITH old AS (SELECT heartbeat_at FROM workers WHERE name = $1)
INSERT INTO workers (name, queues, concurrency, started_at, heartbeat_at)
VALUES ($1, $2, $3, $4, $4)
ON CONFLICT (name) DO UPDATE
SET queues = $2, concurrency = $3, started_at = $4, heartbeat_at = $4
RETURNING (SELECT heartbeat_at FROM old)";

/// Marks the name alive; re-creates the row if another process of the same name removed it
/// at its exit (then this start's details are written again). Locks: the row.
const TOUCH: &str = "
INSERT INTO workers (name, queues, concurrency, started_at, heartbeat_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (name) DO UPDATE SET heartbeat_at = greatest(workers.heartbeat_at, $5)";

/// Removes the row only if this start wrote it last. Locks: the row.
const UNREGISTER: &str = "DELETE FROM workers WHERE name = $1 AND started_at = $2";

/// Whether a worker of this name has a row. Reads only; no lock.
const IS_REGISTERED: &str = "SELECT EXISTS (SELECT 1 FROM workers WHERE name = $1)";

/// Whether a worker named `name` has registered (and not yet left).
pub async fn is_registered(pool: &PgPool, name: &str) -> Result<bool, QueueError> {
    Ok(sqlx::query_scalar(IS_REGISTERED)
        .bind(name)
        .fetch_one(pool)
        .await?)
}

/// The earliest of `$1` and every registered worker's last heartbeat, each written on that
/// worker's own clock. Reads only; no lock.
const EARLIEST_CLOCK: &str = "SELECT least($1, min(heartbeat_at)) FROM workers";

/// A time that is due on every registered worker's clock: the demo's `up` replays 2025 at
/// 60×, so a job due at the host's `now` would wait there until 2025 caught up with today.
/// A heartbeat is at most `lease / 3` old on its worker's clock, so the earliest one is
/// already past for all of them (a stale row of a crashed worker only makes it earlier).
pub async fn due_for_every_worker(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, QueueError> {
    let due: Option<DateTime<Utc>> = sqlx::query_scalar(EARLIEST_CLOCK)
        .bind(now)
        .fetch_one(conn)
        .await?;
    Ok(due.unwrap_or(now))
}

/// One worker process's row.
#[derive(Debug, Clone)]
pub struct Presence {
    pub name: String,
    pub queues: Vec<String>,
    pub concurrency: i32,
    pub started_at: DateTime<Utc>,
}

impl Presence {
    /// Registers this start. `alive_within` is how recent another row's heartbeat must be
    /// for it to count as a live process of the same name (warned, not refused: a
    /// restarted process must be able to take its own name back).
    pub async fn register(
        &self,
        pool: &PgPool,
        alive_within: chrono::Duration,
    ) -> Result<(), QueueError> {
        let previous: Option<DateTime<Utc>> = sqlx::query_scalar(REGISTER)
            .bind(&self.name)
            .bind(&self.queues)
            .bind(self.concurrency)
            .bind(self.started_at)
            .fetch_one(pool)
            .await?;
        let since = self.started_at.checked_sub_signed(alive_within);
        if let Some(at) = previous.filter(|at| since.is_some_and(|s| *at > s)) {
            tracing::warn!(
                worker = %self.name,
                last_heartbeat = %at,
                "another worker with this name looks alive; give each process its own --name \
                 (the dashboard counts them as one)"
            );
        }
        Ok(())
    }

    /// The heartbeat: the name is alive at `now`.
    pub async fn touch(&self, pool: &PgPool, now: DateTime<Utc>) -> Result<(), QueueError> {
        sqlx::query(TOUCH)
            .bind(&self.name)
            .bind(&self.queues)
            .bind(self.concurrency)
            .bind(self.started_at)
            .bind(now)
            .execute(pool)
            .await?;
        Ok(())
    }

    /// At exit: the row goes, unless a later start of the same name owns it now.
    pub async fn unregister(&self, pool: &PgPool) {
        let removed = sqlx::query(UNREGISTER)
            .bind(&self.name)
            .bind(self.started_at)
            .execute(pool)
            .await;
        if let Err(e) = removed {
            tracing::warn!(error = %e, "could not remove the worker's row; it will show as stale");
        }
    }
}
