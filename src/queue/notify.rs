//! Wake-ups over `LISTEN`/`NOTIFY`. Enqueues notify `coinpilot_jobs` with the queue name;
//! admin actions notify `coinpilot_control` with `cancel:ID` so the worker running that job
//! fires its cancellation token at once. Notifications can be lost (reconnects), so the
//! claim loop also polls, and the heartbeat finds cancelled jobs within one interval.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::enqueue::JOBS_CHANNEL;
use super::job::JobId;
use super::runtime::{EventSender, WorkerEvent};
use super::tracker::{StopReason, Tracker};
use super::wake::Wake;

pub const CONTROL_CHANNEL: &str = "coinpilot_control";

/// The listener service: `start` returns its task; it stops on `shutdown`.
pub struct Listener {
    pub pool: PgPool,
    pub queues: Vec<String>,
    pub wake: Arc<Wake>,
    pub tracker: Tracker,
    pub events: EventSender,
}

impl Listener {
    pub fn start(self, shutdown: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            while !shutdown.is_cancelled() {
                match self.listen(&shutdown).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "job notification listener lost its connection; polling until it is back");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        })
    }

    async fn listen(&self, shutdown: &CancellationToken) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen_all([JOBS_CHANNEL, CONTROL_CHANNEL]).await?;
        // Anything enqueued while we were not listening is found by this first wake.
        self.wake.wake();
        let _unobserved = self.events.send(WorkerEvent::Listening);
        loop {
            let n = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                n = listener.recv() => n?,
            };
            if n.channel() == CONTROL_CHANNEL {
                self.on_control(n.payload());
            } else if self.queues.iter().any(|q| q == n.payload()) {
                self.wake.wake();
            }
        }
    }

    fn on_control(&self, payload: &str) {
        if let Some(id) = payload
            .strip_prefix("cancel:")
            .and_then(|s| s.parse::<i64>().ok())
        {
            if self.tracker.stop(JobId(id), StopReason::ByHand) {
                tracing::info!(job_id = id, "stopping job cancelled by hand");
            }
        }
    }
}
