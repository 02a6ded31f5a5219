//! Handler slots: the worker's concurrency and its per-queue limits as semaphores. A job
//! task takes its slots before its handler starts and gives them back the moment the
//! handler ends (before its outcome is written). Without prefetch the claim loop only
//! claims free slots, so a task finds its slot at once; with prefetch, jobs claimed ahead
//! wait here in claim order (tokio's semaphore is fair, first come first served).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug, Clone)]
pub struct Slots {
    all: Arc<Semaphore>,
    per_queue: Arc<HashMap<String, Arc<Semaphore>>>,
}

/// A held slot (and the queue's own slot when the queue has a limit); dropping frees both.
#[derive(Debug)]
pub struct Slot {
    _queue: Option<OwnedSemaphorePermit>,
    _all: OwnedSemaphorePermit,
}

impl Slots {
    pub fn new(concurrency: usize, queues: &[(String, Option<usize>)]) -> Self {
        let per_queue = queues
            .iter()
            .filter_map(|(q, limit)| limit.map(|l| (q.clone(), Arc::new(Semaphore::new(l)))))
            .collect();
        Slots {
            all: Arc::new(Semaphore::new(concurrency.max(1))),
            per_queue: Arc::new(per_queue),
        }
    }

    /// Waits for a slot on `queue`. The queue's own slot is taken first, so a job of a
    /// limited queue never sits on one of the worker's slots while it waits for its queue's.
    /// `None` only if the semaphores were closed, which this runtime never does.
    pub async fn acquire(&self, queue: &str) -> Option<Slot> {
        let queue_slot = match self.per_queue.get(queue) {
            Some(s) => Some(s.clone().acquire_owned().await.ok()?),
            None => None,
        };
        let all = self.all.clone().acquire_owned().await.ok()?;
        Some(Slot {
            _queue: queue_slot,
            _all: all,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_limited_queue_waits_for_its_own_slot_without_taking_a_worker_slot() {
        let slots = Slots::new(2, &[("slow".into(), Some(1)), ("fast".into(), None)]);
        let first = slots.acquire("slow").await;
        assert!(first.is_some());
        let second =
            tokio::time::timeout(std::time::Duration::from_millis(50), slots.acquire("slow")).await;
        assert!(second.is_err(), "the queue's one slot is taken");
        let fast =
            tokio::time::timeout(std::time::Duration::from_millis(50), slots.acquire("fast")).await;
        assert!(
            matches!(fast, Ok(Some(_))),
            "the other worker slot is still free"
        );
        drop(first);
        assert!(slots.acquire("slow").await.is_some());
    }
}
