//! Retry backoff (SPEC A1): 2^attempt seconds after attempt `attempt` failed, ±10 % jitter,
//! capped at one hour. Jitter spreads retries of jobs that failed together (a dependency
//! outage) so they do not all come back in the same millisecond.

use chrono::Duration;

/// The longest wait between attempts.
pub const MAX_BACKOFF_SECS: f64 = 3600.0;

/// Backoff after attempt `attempt` (1-based) failed, with `jitter` in [-1, 1] scaling ±10 %.
pub fn backoff_with_jitter(attempt: i32, jitter: f64) -> Duration {
    let base = 2f64.powi(attempt.clamp(0, 30)).min(MAX_BACKOFF_SECS);
    let secs = base * (1.0 + 0.1 * jitter.clamp(-1.0, 1.0));
    Duration::milliseconds((secs * 1000.0).round() as i64)
}

/// Backoff with random jitter.
pub fn backoff(attempt: i32) -> Duration {
    backoff_with_jitter(attempt, fastrand::f64() * 2.0 - 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_per_attempt_and_caps_at_an_hour() {
        assert_eq!(backoff_with_jitter(1, 0.0), Duration::seconds(2));
        assert_eq!(backoff_with_jitter(5, 0.0), Duration::seconds(32));
        assert_eq!(backoff_with_jitter(12, 0.0), Duration::seconds(3600));
        assert_eq!(backoff_with_jitter(40, 0.0), Duration::seconds(3600));
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for attempt in 1..15 {
            let base = backoff_with_jitter(attempt, 0.0).num_milliseconds() as f64;
            for _ in 0..100 {
                let d = backoff(attempt).num_milliseconds() as f64;
                assert!(
                    d >= base * 0.9 - 1.0 && d <= base * 1.1 + 1.0,
                    "{d} vs {base}"
                );
            }
        }
    }
}
