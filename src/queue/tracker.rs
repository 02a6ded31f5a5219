//! The worker's table of the jobs it holds leases on: their lease tokens, cancellation
//! tokens, last renewal, and whether the handler has finished (a finished job keeps its
//! lease renewed until its batched completion is written).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::job::JobId;

/// Why the runtime stopped a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Cancelled or discarded by hand: the new state is already stored.
    ByHand,
    /// The lease could not be renewed in time: another worker may get the job.
    LeaseLost,
    /// The worker is shutting down past its grace period: the job is released.
    Shutdown,
}

#[derive(Debug)]
pub struct Held {
    pub token: i64,
    pub queue: String,
    pub cancel: CancellationToken,
    pub stop: Option<StopReason>,
    pub renewed_at: Instant,
    pub handler_done: bool,
}

/// Shared by the claimers, job tasks, heartbeat, listener and completer.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    inner: Arc<Mutex<HashMap<JobId, Held>>>,
    /// Slots promised to claim statements in flight, overall and per queue, so concurrent
    /// claimers never claim more than the free slots between them.
    reserved: Arc<Mutex<(usize, HashMap<String, usize>)>>,
}

impl Tracker {
    pub fn lock(&self) -> MutexGuard<'_, HashMap<JobId, Held>> {
        // The map holds plain values; a panic elsewhere cannot leave it half-updated.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves up to the free slots of `queue` for one claim statement.
    pub fn reserve(&self, queue: &str, concurrency: usize, limit: Option<usize>) -> usize {
        let mut r = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        let (all, mine) = self.busy(queue);
        let queue_reserved = r.1.get(queue).copied().unwrap_or(0);
        let free_global = concurrency.saturating_sub(all + r.0);
        let free = limit.map_or(free_global, |l| {
            free_global.min(l.saturating_sub(mine + queue_reserved))
        });
        r.0 += free;
        *r.1.entry(queue.to_string()).or_default() += free;
        free
    }

    /// Returns a reservation once its claimed jobs are held (or the claim failed).
    pub fn unreserve(&self, queue: &str, n: usize) {
        let mut r = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        r.0 = r.0.saturating_sub(n);
        if let Some(q) = r.1.get_mut(queue) {
            *q = q.saturating_sub(n);
        }
    }

    pub fn hold(&self, id: JobId, token: i64, queue: &str, cancel: CancellationToken) {
        self.lock().insert(
            id,
            Held {
                token,
                queue: queue.to_string(),
                cancel,
                stop: None,
                renewed_at: Instant::now(),
                handler_done: false,
            },
        );
    }

    /// Handlers still running, overall and for one queue (finished ones free their slot).
    pub fn busy(&self, queue: &str) -> (usize, usize) {
        let map = self.lock();
        let active = map.values().filter(|h| !h.handler_done);
        let (mut all, mut mine) = (0, 0);
        for h in active {
            all += 1;
            if h.queue == queue {
                mine += 1;
            }
        }
        (all, mine)
    }

    pub fn active(&self) -> usize {
        self.lock().values().filter(|h| !h.handler_done).count()
    }

    /// Stops a handler (first reason wins) and fires its token.
    pub fn stop(&self, id: JobId, reason: StopReason) -> bool {
        let mut map = self.lock();
        match map.get_mut(&id) {
            Some(h) if !h.handler_done => {
                h.stop.get_or_insert(reason);
                h.cancel.cancel();
                true
            }
            _ => false,
        }
    }

    pub fn cancel_token(&self, id: JobId) -> CancellationToken {
        self.lock()
            .get(&id)
            .map(|h| h.cancel.clone())
            .unwrap_or_default()
    }

    pub fn stop_reason(&self, id: JobId) -> Option<StopReason> {
        self.lock().get(&id).and_then(|h| h.stop)
    }

    pub fn mark_handler_done(&self, id: JobId) {
        if let Some(h) = self.lock().get_mut(&id) {
            h.handler_done = true;
        }
    }

    pub fn release(&self, id: JobId) {
        self.lock().remove(&id);
    }

    /// Every held lease, in ascending id order (the lock order of the batch statements).
    pub fn leases(&self) -> Vec<(JobId, i64)> {
        let mut l: Vec<(JobId, i64)> = self.lock().iter().map(|(id, h)| (*id, h.token)).collect();
        l.sort_unstable();
        l
    }
}
