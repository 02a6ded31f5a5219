//! The worker's table of the jobs it holds leases on: their lease tokens, cancellation
//! tokens, last renewal, and where each one is — waiting for a slot (claimed ahead, only
//! with `prefetch`), running, or finished with its batched completion not yet written (a
//! finished job keeps its lease renewed until then). Counters kept beside the table make
//! the claim loop's "how many may I claim" O(1), whatever the number of jobs held.

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
    /// Claimed ahead and never started: the worker shut down and gave it back in one
    /// batch with the other waiting jobs (attempt given back).
    Unstarted,
}

#[derive(Debug)]
pub struct Held {
    pub token: i64,
    pub queue: String,
    pub cancel: CancellationToken,
    pub stop: Option<StopReason>,
    pub renewed_at: Instant,
    pub started: bool,
    pub handler_done: bool,
}

/// How many jobs a claim may take for one queue.
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    /// Handler slots of the worker (`--concurrency`).
    pub slots: usize,
    /// Jobs claimed ahead of free slots (`--prefetch`, 0 = claim free slots only).
    pub prefetch: usize,
    /// The queue's own slot limit, if any.
    pub queue_limit: Option<usize>,
    /// Claim loops sharing this room (`WorkerConfig::claimers`).
    pub claimers: usize,
}

impl Capacity {
    /// The smallest claim worth a commit while the queue has jobs running: half its slots
    /// (see [`Tracker::reserve_batch`]); with prefetch, half of the most one claim of this
    /// queue can take ([`max_claim`](Self::max_claim), or the queue's limit plus prefetch).
    pub fn min_batch(&self) -> usize {
        if self.prefetch > 0 {
            let most = self.queue_limit.map_or(self.max_claim(), |l| {
                self.max_claim().min(l + self.prefetch)
            });
            return (most / 2).max(1);
        }
        let slots = self.queue_limit.map_or(self.slots, |l| l.min(self.slots));
        slots.div_ceil(2).max(1)
    }

    /// The most one claim statement takes. With prefetch, an equal share of
    /// `slots + prefetch` per claim loop: a claim costs PostgreSQL ~15 µs per row, more than
    /// a short job takes to run, so one loop claiming the whole room leaves the others idle
    /// and the claims run one after another on one core; shares keep one claim per loop
    /// in flight (measured: a 20,000-job drain claimed by one loop at a time, 510 rows in
    /// 8–14 ms, back to back). Without prefetch: the free slots, however many.
    pub fn max_claim(&self) -> usize {
        if self.prefetch == 0 {
            return usize::MAX;
        }
        (self.slots + self.prefetch)
            .div_ceil(self.claimers.max(1))
            .max(1)
    }
}

/// What [`Tracker::reserve_batch`] granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// Jobs the claim may take (reserved; give them back with `unreserve`).
    pub jobs: usize,
    /// Some slots are free, fewer than the batch asked for, while jobs run: claim them
    /// later (when more free up, or after a short linger).
    pub deferred: bool,
}

/// Finished jobs whose batched completion is not written yet, past which the worker stops
/// claiming: a completer that falls behind (a slow or stalled database) must not let the
/// claim loop run ahead without bound (each of those jobs is a lease to renew).
pub const MAX_UNWRITTEN: usize = 2_000;

#[derive(Debug, Default)]
struct Count {
    /// Held and not finished: waiting for a slot or running.
    active: usize,
    /// Claimed ahead, not started.
    waiting: usize,
    /// Slots promised to claim statements in flight.
    reserved: usize,
}

/// The held jobs and their counts, under one lock.
#[derive(Debug, Default)]
pub struct Table {
    pub held: HashMap<JobId, Held>,
    all: Count,
    per_queue: Vec<(String, Count)>,
}

impl Table {
    /// The queue's counts. A worker serves a handful of queues, so a short list searched
    /// by name: this runs several times per job, and allocates only for a new queue.
    fn count(&mut self, queue: &str) -> &mut Count {
        let i = match self.per_queue.iter().position(|(q, _)| q == queue) {
            Some(i) => i,
            None => {
                self.per_queue.push((queue.to_string(), Count::default()));
                self.per_queue.len() - 1
            }
        };
        &mut self.per_queue[i].1
    }

    fn adjust(&mut self, queue: &str, f: impl Fn(&mut Count)) {
        f(&mut self.all);
        f(self.count(queue));
    }
}

/// Shared by the claimers, job tasks, heartbeat, listener and completer.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    inner: Arc<Mutex<Table>>,
}

impl Tracker {
    pub fn lock(&self) -> MutexGuard<'_, Table> {
        // The table holds plain values; a panic elsewhere cannot leave it half-updated.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves room for one claim statement on `queue`; 0 when it should not claim now.
    ///
    /// Without prefetch this is the free slots (SPEC A1). With prefetch the worker holds up
    /// to `slots + prefetch` unfinished jobs, and claims only once the queue's jobs waiting
    /// for a slot fall to half the prefetch, so claims come in large batches rather than
    /// one job per freed slot; one claim takes at most its loop's share of that room
    /// ([`Capacity::max_claim`]).
    pub fn reserve(&self, queue: &str, cap: Capacity) -> usize {
        self.reserve_batch(queue, cap, 1).jobs
    }

    /// [`reserve`](Self::reserve), but while the queue has jobs running or a claim in
    /// flight, grants nothing unless at least `min` slots are free: a handler that ends
    /// frees one slot, and claiming it alone costs a commit (a WAL flush) per job. An idle
    /// queue claims whatever is free at once, so pickup latency is not touched.
    pub fn reserve_batch(&self, queue: &str, cap: Capacity, min: usize) -> Reservation {
        let mut t = self.lock();
        let busy = {
            let q = t.count(queue);
            q.active + q.reserved > 0
        };
        let free = Self::room(&mut t, queue, cap);
        if free > 0 && free < min && busy {
            return Reservation {
                jobs: 0,
                deferred: true,
            };
        }
        t.adjust(queue, |c| c.reserved += free);
        Reservation {
            jobs: free,
            deferred: false,
        }
    }

    /// Free room for `queue` under `cap`, reserving nothing.
    fn room(t: &mut Table, queue: &str, cap: Capacity) -> usize {
        let q = t.count(queue);
        let (q_active, q_waiting, q_reserved) = (q.active, q.waiting, q.reserved);
        if cap.prefetch > 0 && q_waiting > cap.prefetch / 2 {
            return 0;
        }
        let unwritten = t.held.len().saturating_sub(t.all.active);
        if unwritten >= MAX_UNWRITTEN {
            return 0;
        }
        let room = (cap.slots + cap.prefetch)
            .saturating_sub(t.all.active + t.all.reserved)
            .min(cap.max_claim());
        cap.queue_limit.map_or(room, |l| {
            room.min((l + cap.prefetch).saturating_sub(q_active + q_reserved))
        })
    }

    /// Returns a reservation once its claimed jobs are held (or the claim failed).
    pub fn unreserve(&self, queue: &str, n: usize) {
        self.lock()
            .adjust(queue, |c| c.reserved = c.reserved.saturating_sub(n));
    }

    /// Holds a claimed job. `claim_sent_at` is when the claim statement was sent: its lease
    /// was computed from that moment, so the watchdog must count from it, not from when the
    /// (possibly slow) claim came back.
    pub fn hold(
        &self,
        id: JobId,
        token: i64,
        queue: &str,
        cancel: CancellationToken,
        claim_sent_at: Instant,
    ) {
        let mut t = self.lock();
        let held = Held {
            token,
            queue: queue.to_string(),
            cancel,
            stop: None,
            renewed_at: claim_sent_at,
            started: false,
            handler_done: false,
        };
        if let Some(old) = t.held.insert(id, held) {
            // A job is held once; a second claim of the same id means the first lease was
            // lost and this is a new attempt. Undo the old entry's counts.
            Self::uncount(&mut t, &old);
        }
        t.adjust(queue, |c| {
            c.active += 1;
            c.waiting += 1;
        });
    }

    fn uncount(t: &mut Table, h: &Held) {
        let (waiting, active) = (!h.started, !h.handler_done);
        t.adjust(&h.queue, |c| {
            if waiting {
                c.waiting = c.waiting.saturating_sub(1);
            }
            if active {
                c.active = c.active.saturating_sub(1);
            }
        });
    }

    /// Moves a job from waiting to running; false when it was stopped before it started.
    pub fn try_start(&self, id: JobId) -> bool {
        let mut t = self.lock();
        let queue = match t.held.get_mut(&id) {
            Some(h) if h.stop.is_none() && !h.started => {
                h.started = true;
                h.queue.clone()
            }
            _ => return false,
        };
        t.adjust(&queue, |c| c.waiting = c.waiting.saturating_sub(1));
        true
    }

    /// Stops a handler (first reason wins) and fires its token.
    pub fn stop(&self, id: JobId, reason: StopReason) -> bool {
        let mut t = self.lock();
        match t.held.get_mut(&id) {
            Some(h) if !h.handler_done => {
                h.stop.get_or_insert(reason);
                h.cancel.cancel();
                true
            }
            _ => false,
        }
    }

    /// Stops every job still waiting for a slot (reason [`StopReason::Unstarted`]) and
    /// returns their leases, in ascending id order, to give back in one statement.
    pub fn stop_unstarted(&self) -> Vec<(JobId, i64)> {
        let mut t = self.lock();
        let mut leases = Vec::new();
        for (id, h) in t.held.iter_mut() {
            if !h.started && h.stop.is_none() {
                h.stop = Some(StopReason::Unstarted);
                h.cancel.cancel();
                leases.push((*id, h.token));
            }
        }
        leases.sort_unstable();
        leases
    }

    pub fn cancel_token(&self, id: JobId) -> CancellationToken {
        self.lock()
            .held
            .get(&id)
            .map(|h| h.cancel.clone())
            .unwrap_or_default()
    }

    pub fn stop_reason(&self, id: JobId) -> Option<StopReason> {
        self.lock().held.get(&id).and_then(|h| h.stop)
    }

    /// The handler ended: its slot is free (its lease is kept until the outcome is written).
    pub fn mark_handler_done(&self, id: JobId) {
        let mut t = self.lock();
        let queue = match t.held.get_mut(&id) {
            Some(h) if !h.handler_done => {
                h.handler_done = true;
                h.queue.clone()
            }
            _ => return,
        };
        t.adjust(&queue, |c| c.active = c.active.saturating_sub(1));
    }

    pub fn release(&self, id: JobId) {
        let mut t = self.lock();
        if let Some(h) = t.held.remove(&id) {
            Self::uncount(&mut t, &h);
        }
    }

    /// Every held lease, in ascending id order (the lock order of the batch statements).
    pub fn leases(&self) -> Vec<(JobId, i64)> {
        let mut l: Vec<(JobId, i64)> = self
            .lock()
            .held
            .iter()
            .map(|(id, h)| (*id, h.token))
            .collect();
        l.sort_unstable();
        l
    }

    /// Ids of every held job.
    pub fn ids(&self) -> Vec<JobId> {
        self.lock().held.keys().copied().collect()
    }

    /// (held, unfinished, waiting) — for tests and the worker's gauges.
    pub fn counts(&self) -> (usize, usize, usize) {
        let t = self.lock();
        (t.held.len(), t.all.active, t.all.waiting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(slots: usize, prefetch: usize, queue_limit: Option<usize>) -> Capacity {
        Capacity {
            slots,
            prefetch,
            queue_limit,
            claimers: 1,
        }
    }

    fn hold_n(t: &Tracker, from: i64, n: i64, queue: &str) {
        for i in from..from + n {
            t.hold(JobId(i), i, queue, CancellationToken::new(), Instant::now());
        }
    }

    #[test]
    fn without_prefetch_only_free_slots_are_reserved() {
        let t = Tracker::default();
        assert_eq!(t.reserve("q", cap(10, 0, None)), 10);
        hold_n(&t, 1, 4, "q");
        t.unreserve("q", 10);
        assert_eq!(t.reserve("q", cap(10, 0, None)), 6);
        t.unreserve("q", 6);
        t.mark_handler_done(JobId(1));
        assert_eq!(
            t.reserve("q", cap(10, 0, None)),
            7,
            "a finished handler frees its slot"
        );
    }

    #[test]
    fn a_busy_queue_claims_half_its_slots_at_a_time_and_an_idle_one_at_once() {
        let t = Tracker::default();
        let c = cap(10, 0, None);
        assert_eq!(c.min_batch(), 5);
        let r = t.reserve_batch("q", c, c.min_batch());
        assert_eq!((r.jobs, r.deferred), (10, false));
        hold_n(&t, 1, 10, "q");
        t.unreserve("q", 10);
        for i in 1..=3 {
            assert!(t.try_start(JobId(i)));
            t.mark_handler_done(JobId(i));
        }
        let r = t.reserve_batch("q", c, c.min_batch());
        assert_eq!((r.jobs, r.deferred), (0, true), "3 free of 10: wait for 5");
        assert_eq!(t.reserve_batch("q", c, 1).jobs, 3, "after the linger");
        t.unreserve("q", 3);
        // Another queue with nothing running claims what is free at once.
        let r = t.reserve_batch("other", c, c.min_batch());
        assert_eq!((r.jobs, r.deferred), (3, false));
        t.unreserve("other", 3);
        for i in 4..=5 {
            assert!(t.try_start(JobId(i)));
            t.mark_handler_done(JobId(i));
        }
        assert_eq!(t.reserve_batch("q", c, c.min_batch()).jobs, 5);
        // The batch is half of what the queue may run; with prefetch, half of one claim.
        assert_eq!(cap(10, 0, Some(3)).min_batch(), 2);
        assert_eq!(cap(1, 0, None).min_batch(), 1);
        assert_eq!(cap(10, 100, None).min_batch(), 55);
    }

    #[test]
    fn with_prefetch_each_claim_loop_takes_its_share_so_two_claims_can_overlap() {
        let t = Tracker::default();
        let c = Capacity {
            claimers: 2,
            ..cap(10, 500, None)
        };
        assert_eq!(c.max_claim(), 255);
        assert_eq!(c.min_batch(), 127);
        // The first loop's claim leaves the second loop a full share, not nothing.
        assert_eq!(t.reserve_batch("q", c, c.min_batch()).jobs, 255);
        assert_eq!(t.reserve_batch("q", c, c.min_batch()).jobs, 255);
        assert_eq!(t.reserve("q", c), 0, "slots + prefetch are all reserved");
        t.unreserve("q", 510);
        // A queue limited below a share waits for half of what it may hold, not of a share.
        let limited = Capacity {
            claimers: 2,
            ..cap(50, 10, Some(2))
        };
        assert_eq!(limited.max_claim(), 30);
        assert_eq!(limited.min_batch(), 6, "half of 2 slots + 10 ahead");
        // Without prefetch a claim takes every free slot, however many loops there are.
        let free_only = Capacity {
            claimers: 2,
            ..cap(10, 0, None)
        };
        assert_eq!(t.reserve("q", free_only), 10);
    }

    #[test]
    fn prefetch_claims_ahead_then_waits_for_half_the_buffer() {
        let t = Tracker::default();
        let c = cap(10, 100, None);
        assert_eq!(t.reserve("q", c), 110);
        hold_n(&t, 1, 110, "q");
        t.unreserve("q", 110);
        for i in 1..=10 {
            assert!(t.try_start(JobId(i)));
        }
        assert_eq!(t.counts(), (110, 110, 100));
        // 100 waiting > 50: no claim even after some finish.
        for i in 1..=10 {
            t.mark_handler_done(JobId(i));
            t.release(JobId(i));
        }
        assert_eq!(t.reserve("q", c), 0);
        // Start 50 more: 50 waiting, half the prefetch: claim again, up to the room left.
        for i in 11..=60 {
            assert!(t.try_start(JobId(i)));
        }
        assert_eq!(t.reserve("q", c), 10);
    }

    #[test]
    fn a_queue_limit_bounds_its_own_share_only() {
        let t = Tracker::default();
        assert_eq!(t.reserve("slow", cap(10, 0, Some(2))), 2);
        hold_n(&t, 1, 2, "slow");
        t.unreserve("slow", 2);
        assert_eq!(t.reserve("slow", cap(10, 0, Some(2))), 0);
        assert_eq!(t.reserve("fast", cap(10, 0, None)), 8);
    }

    #[test]
    fn a_stopped_waiting_job_never_starts_and_counts_are_undone() {
        let t = Tracker::default();
        hold_n(&t, 1, 3, "q");
        assert!(t.try_start(JobId(1)));
        let given = t.stop_unstarted();
        assert_eq!(given, vec![(JobId(2), 2), (JobId(3), 3)]);
        assert!(!t.try_start(JobId(2)));
        assert_eq!(t.stop_reason(JobId(3)), Some(StopReason::Unstarted));
        t.release(JobId(2));
        t.release(JobId(3));
        assert_eq!(t.counts(), (1, 1, 0));
    }

    #[test]
    fn unwritten_completions_stop_claims_past_the_bound() {
        let t = Tracker::default();
        let n = MAX_UNWRITTEN as i64;
        hold_n(&t, 1, n, "q");
        for i in 1..=n {
            assert!(t.try_start(JobId(i)));
            t.mark_handler_done(JobId(i));
        }
        assert_eq!(t.reserve("q", cap(10, 0, None)), 0);
        t.release(JobId(1));
        assert_eq!(t.reserve("q", cap(10, 0, None)), 10);
    }
}
