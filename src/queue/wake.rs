//! Wake-ups for the claim loops, which must never lose one. A wake says "something may be
//! claimable now" (a `NOTIFY`, a freed slot, a rescue, a batched completion).
//!
//! A bare `Notify` lost wakes with two claim loops: loop A is mid-round, holding every
//! free slot in the tracker and reading a snapshot from before a commit; the commit's
//! `NOTIFY` wakes loop B, which finds no free slot (A holds them) and idles; A's round
//! finds nothing and idles too. The jobs then waited for the poll (1 s by default, seen
//! as ~1 s stalls in `bench trade-cycle`). So every wake also bumps a counter: a loop reads
//! it before its round ([`Wake::seen`]) and runs another round instead of idling when it
//! moved ([`Wake::moved_since`]).

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// The wake-up every claim loop of one worker shares.
#[derive(Debug, Default)]
pub struct Wake {
    notify: Notify,
    count: AtomicU64,
}

impl Wake {
    /// Something may be claimable: counts, and wakes one waiting loop (or the next to wait).
    pub fn wake(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_one();
    }

    /// The wake count, read before a claim round starts.
    pub fn seen(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// Whether a wake came since `seen` (then the round may have missed what it announced).
    pub fn moved_since(&self, seen: u64) -> bool {
        self.seen() != seen
    }

    /// Waits for the next wake (or a permit a wake left while nobody waited).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::Wake;

    #[test]
    fn a_wake_during_a_round_is_seen_after_it() {
        let w = Wake::default();
        let before = w.seen();
        assert!(!w.moved_since(before));
        w.wake();
        assert!(w.moved_since(before));
        assert!(!w.moved_since(w.seen()));
    }
}
