//! Lease renewal and the lease watchdog. Every `lease / 3` the heartbeat extends the
//! leases of every job this worker holds in one statement; a job the statement does not
//! return is no longer ours (cancelled, discarded by hand, rescued) and its handler is
//! stopped. The watchdog stops any handler whose lease was not renewed for
//! `lease − margin` of real time, so a worker cut off from the database stops its
//! handlers *before* the lease expires and a rescued job never overlaps its last attempt.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::job::JobId;
use super::presence::Presence;
use super::tracker::{StopReason, Tracker};
use crate::clock::SharedClock;

/// Extends the leases of the given (id, token) pairs still running under that token.
/// Row locks on those rows only; index: primary key. No join with the pairs: lease tokens
/// are unique, so matching ids and tokens as two sets is the pairwise check (see
/// `claim::COMPLETE_BATCH` for the generic plan a join fell into, and why the state is not
/// named: a lease token is only ever set on a running job). Ids come in ascending
/// order, the order the batched completion locks in (see `claim::COMPLETE_BATCH` on the
/// plan that order rests on).
const RENEW_LEASES: &str = "
UPDATE jobs j SET lease_expires_at = $3 + make_interval(secs => $4)
WHERE j.id = ANY($1) AND j.lease_token = ANY($2)
RETURNING j.id";

/// How long before the lease's end a handler is stopped when renewals fail.
pub fn watchdog_margin(lease: Duration) -> Duration {
    (lease / 5).max(Duration::from_millis(200)).min(lease / 2)
}

pub struct Heartbeat {
    pub pool: PgPool,
    pub clock: SharedClock,
    pub tracker: Tracker,
    pub lease: Duration,
    pub presence: Presence,
}

impl Heartbeat {
    /// Renewal and watchdog run as two loops, so a renewal stuck on a stalled database
    /// never delays the watchdog.
    pub fn start(self, shutdown: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            let renewals = async {
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(self.lease / 3) => {}
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = self.renew() => {}
                    }
                }
            };
            let watchdog = async {
                let check_every = (self.lease / 10).min(Duration::from_secs(1));
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(check_every) => {}
                    }
                    self.watchdog();
                }
            };
            tokio::join!(renewals, watchdog);
        })
    }

    /// One renewal round; failures are logged and left to the watchdog.
    pub async fn renew(&self) {
        let leases = self.tracker.leases();
        let sent_at = Instant::now();
        let now = self.clock.now();
        if let Err(e) = self.presence.touch(&self.pool, now).await {
            tracing::warn!(error = %e, "worker heartbeat failed");
        }
        if leases.is_empty() {
            return;
        }
        let lease = self.clock.scaled(self.lease);
        match renew_leases(&self.pool, &leases, now, lease).await {
            Ok(kept) => self.apply(&leases, &kept, sent_at),
            Err(e) => tracing::warn!(error = %e, jobs = leases.len(), "lease renewal failed"),
        }
    }

    fn apply(&self, sent: &[(JobId, i64)], kept: &[JobId], sent_at: Instant) {
        let kept: std::collections::HashSet<JobId> = kept.iter().copied().collect();
        let mut lost = Vec::new();
        {
            let mut table = self.tracker.lock();
            for (id, token) in sent {
                let Some(h) = table.held.get_mut(id) else {
                    continue;
                };
                if h.token != *token {
                    continue;
                }
                if kept.contains(id) {
                    h.renewed_at = sent_at;
                } else if !h.handler_done {
                    lost.push(*id);
                }
            }
        }
        for id in lost {
            // Not ours any more: cancelled or discarded by hand, or rescued after a stall.
            if self.tracker.stop(id, StopReason::ByHand) {
                tracing::info!(
                    job_id = id.0,
                    "job no longer held by this worker; stopping its handler"
                );
            }
        }
    }

    fn watchdog(&self) {
        let limit = self.lease.saturating_sub(watchdog_margin(self.lease));
        let overdue: Vec<JobId> = self
            .tracker
            .lock()
            .held
            .iter()
            .filter(|(_, h)| !h.handler_done && h.renewed_at.elapsed() >= limit)
            .map(|(id, _)| *id)
            .collect();
        for id in overdue {
            if self.tracker.stop(id, StopReason::LeaseLost) {
                tracing::warn!(
                    job_id = id.0,
                    "lease not renewed in time; stopping handler before the lease expires"
                );
            }
        }
    }
}

pub async fn renew_leases(
    pool: &PgPool,
    leases: &[(JobId, i64)],
    now: DateTime<Utc>,
    lease: Duration,
) -> Result<Vec<JobId>, sqlx::Error> {
    let ids: Vec<i64> = leases.iter().map(|(id, _)| id.0).collect();
    let tokens: Vec<i64> = leases.iter().map(|(_, t)| *t).collect();
    let kept: Vec<i64> = sqlx::query_scalar(RENEW_LEASES)
        .bind(&ids)
        .bind(&tokens)
        .bind(now)
        .bind(lease.as_secs_f64())
        .fetch_all(pool)
        .await?;
    Ok(kept.into_iter().map(JobId).collect())
}
