//! The alert on a discarded trading job (SPEC B7): a completion hook that wraps the
//! workflow engine's and, in the same transaction that discards a job of a
//! [`TRADING_KINDS`](super::TRADING_KINDS) kind, enqueues a critical `notify` alert.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use sqlx::PgConnection;

use crate::notify::{self, AlertNote, Message, Severity};
use crate::queue::runtime::CompletionHook;
use crate::queue::{Job, QueueError};

pub struct AlertOnDiscard {
    pub inner: Arc<dyn CompletionHook>,
}

impl CompletionHook for AlertOnDiscard {
    fn on_completed<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        job: &'a Job,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), QueueError>> {
        self.inner.on_completed(tx, job, now)
    }

    fn on_discarded<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        job: &'a Job,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), QueueError>> {
        Box::pin(async move {
            self.inner.on_discarded(tx, job, now).await?;
            if !super::TRADING_KINDS.contains(&job.kind.as_str()) {
                return Ok(());
            }
            let last = job
                .errors
                .as_array()
                .and_then(|a| a.last())
                .and_then(|e| e.get("message"))
                .and_then(|m| m.as_str())
                .unwrap_or("no error recorded");
            let msg = Message::Alert(AlertNote {
                severity: Severity::Critical,
                title: format!("Trading job {} ({}) discarded", job.id, job.kind),
                detail: format!(
                    "After {} attempts: {last}. Retry it from the dashboard or with `coinpilot jobs retry {}`.",
                    job.attempt, job.id
                ),
                at: now,
            });
            notify::enqueue(tx, now, &msg, Some(format!("alert:discarded:{}", job.id))).await?;
            Ok(())
        })
    }
}

/// Live start-up (SPEC B6): compares Upbit's balances with the ledger and raises a critical
/// alert listing every difference (the process still starts: the operator decides).
pub async fn reconcile_at_start(
    pool: &sqlx::PgPool,
    bot: &super::Bot,
    client: &crate::live::UpbitClient,
    now: DateTime<Utc>,
) -> Result<usize, super::BotError> {
    let mut tx = pool.begin().await?;
    let account = bot.account(&mut tx, now).await?;
    let diffs = crate::live::reconcile(client, &mut tx, account)
        .await
        .map_err(|e| super::BotError::Job(e.into_job_error()))?;
    if !diffs.is_empty() {
        let detail = diffs
            .iter()
            .map(|d| {
                format!(
                    "{}: exchange {} vs ledger {}",
                    d.asset, d.exchange, d.ledger
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        tracing::error!(%detail, "live reconciliation found differences");
        let msg = Message::Alert(AlertNote {
            severity: Severity::Critical,
            title: "Upbit balances differ from the ledger".into(),
            detail,
            at: now,
        });
        notify::enqueue(&mut tx, now, &msg, None).await?;
    }
    tx.commit().await?;
    Ok(diffs.len())
}
