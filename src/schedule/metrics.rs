//! Prometheus metrics of the scheduler: fires per schedule, missed fires skipped, and the
//! lateness of on-time fires (fire time → enqueue commit). No-ops without a recorder.

pub fn fired(schedules: &[String], lateness: &[chrono::Duration], skipped: u64) {
    for s in schedules {
        metrics::counter!("coinpilot_schedule_fires_total", "schedule" => s.clone()).increment(1);
    }
    for l in lateness {
        let secs = l.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
        metrics::histogram!("coinpilot_schedule_lateness_seconds").record(secs);
    }
    if skipped > 0 {
        metrics::counter!("coinpilot_schedule_missed_skipped_total").increment(skipped);
    }
}
