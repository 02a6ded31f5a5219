//! Time as a dependency. Every query that needs "now" takes it from a [`Clock`] passed in
//! by the caller (SPEC A1), never from PostgreSQL's `now()`, so tests drive leases,
//! backoff, schedules and cooldowns with a [`ManualClock`].

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};

/// A source of the current UTC time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;

    /// Clock seconds per real second: 1 but for the demo's [`AcceleratedClock`]. Durations
    /// stored as clock time (lease expiries) are real durations × speed; sleeps until a
    /// clock time are clock durations ÷ speed ([`Clock::real`]).
    fn speed(&self) -> f64 {
        1.0
    }

    /// The real time it takes this clock to move by `d` (zero for a negative `d`).
    fn real(&self, d: Duration) -> std::time::Duration {
        d.to_std()
            .map(|d| d.div_f64(self.speed().max(f64::MIN_POSITIVE)))
            .unwrap_or_default()
    }

    /// How far this clock moves in the real duration `d`.
    fn scaled(&self, d: std::time::Duration) -> std::time::Duration {
        d.mul_f64(self.speed())
    }
}

/// The clock everything shares.
pub type SharedClock = Arc<dyn Clock>;

/// Production time: the host's UTC clock (hosts are NTP-synced).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to. Cloning shares the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
    }

    pub fn set(&self, t: DateTime<Utc>) {
        *self.lock() = t;
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.lock();
        *now += by;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DateTime<Utc>> {
        // A poisoned lock only means another thread panicked while holding a plain value;
        // the value itself is always valid.
        self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.lock()
    }
}

/// Time replayed faster than real time (the offline demo): starts at `origin` and runs
/// `speed` times as fast as the host's monotonic clock.
#[derive(Debug, Clone)]
pub struct AcceleratedClock {
    origin: DateTime<Utc>,
    started: std::time::Instant,
    speed: f64,
}

impl AcceleratedClock {
    /// `speed` ≥ 1 (clamped).
    pub fn new(origin: DateTime<Utc>, speed: f64) -> Self {
        AcceleratedClock {
            origin,
            started: std::time::Instant::now(),
            speed: speed.max(1.0),
        }
    }
}

impl Clock for AcceleratedClock {
    fn now(&self) -> DateTime<Utc> {
        let real = self.started.elapsed().mul_f64(self.speed);
        self.origin + Duration::from_std(real).unwrap_or(Duration::MAX)
    }

    fn speed(&self) -> f64 {
        self.speed
    }
}

/// The system clock, shared.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start = DateTime::parse_from_rfc3339("2025-09-09T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let clock = ManualClock::new(start);
        let shared = clock.clone();
        assert_eq!(clock.now(), start);
        shared.advance(Duration::seconds(90));
        assert_eq!(clock.now(), start + Duration::seconds(90));
    }

    #[test]
    fn an_accelerated_clock_scales_durations_both_ways() {
        let start = Utc::now();
        let clock = AcceleratedClock::new(start, 120.0);
        assert!(clock.now() >= start);
        assert_eq!(
            clock.real(Duration::seconds(60)),
            std::time::Duration::from_millis(500)
        );
        assert_eq!(
            clock.scaled(std::time::Duration::from_secs(1)),
            std::time::Duration::from_secs(120)
        );
        assert_eq!(
            SystemClock.real(Duration::seconds(-5)),
            std::time::Duration::ZERO
        );
    }
}
