//! What a scheduler tick does with one due schedule, as a pure function of its oldest
//! unproduced fire time, the clock, and its catch-up policy (SPEC A2):
//!
//! - a fire time no older than `misfire_grace` at tick time is on time and always fires;
//! - older fire times were missed (the workers were down): `none` skips them, `latest`
//!   fires only the most recent of them and only when no on-time fire stands for it, `all`
//!   fires each, oldest first, keeping the most recent `max_catch_up`.
//!
//! Counting the missed fires of a long downtime of a per-second cron is bounded by
//! [`MAX_WALK`]; the kept catch-up fires are found walking back from the grace horizon, so
//! they are the most recent ones however long the downtime.

use chrono::{DateTime, Duration, Utc};

use super::cron::CronSchedule;

/// How missed fires are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    None,
    Latest,
    All,
}

impl CatchUp {
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::None => "none",
            CatchUp::Latest => "latest",
            CatchUp::All => "all",
        }
    }

    pub fn parse(s: &str) -> Option<CatchUp> {
        [CatchUp::None, CatchUp::Latest, CatchUp::All]
            .into_iter()
            .find(|c| c.as_str() == s)
    }
}

/// Whether a fire is the cron's own or a catch-up of a missed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FireKind {
    OnTime,
    CatchUp,
}

impl FireKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FireKind::OnTime => "cron",
            FireKind::CatchUp => "catch_up",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirePlan {
    /// Oldest first.
    pub fires: Vec<(DateTime<Utc>, FireKind)>,
    /// Missed fire times that were skipped.
    pub skipped: u64,
    /// The new oldest unproduced fire time (after `now`).
    pub next: Option<DateTime<Utc>>,
}

/// At most this many missed fire times are counted (a bound on a tick's work).
pub const MAX_WALK: usize = 100_000;

pub struct Policy {
    pub catch_up: CatchUp,
    pub max_catch_up: usize,
    pub misfire_grace: Duration,
}

/// Plans the fires of a schedule whose oldest unproduced fire time is `from`, at `now`.
pub fn plan_fires(
    cron: &CronSchedule,
    from: DateTime<Utc>,
    now: DateTime<Utc>,
    p: &Policy,
) -> FirePlan {
    let horizon = now - p.misfire_grace;
    let keep = match p.catch_up {
        CatchUp::None => 0,
        CatchUp::Latest => 1,
        CatchUp::All => p.max_catch_up.max(1),
    };
    let (mut missed, mut missed_total, mut start) = (Vec::new(), 0u64, from);
    if from < horizon {
        let before_horizon = horizon - Duration::nanoseconds(1);
        missed_total = cron
            .fires_between(from, before_horizon)
            .take(MAX_WALK)
            .count() as u64;
        // The most recent missed fires, found walking back from the horizon.
        missed = cron
            .fires_before(horizon)
            .take_while(|t| *t >= from)
            .take(keep)
            .collect();
        missed.reverse();
        missed_total = missed_total.max(missed.len() as u64);
        start = horizon;
    }
    let mut on_time = Vec::new();
    on_time.extend(cron.fires_between(start, now));
    let mut fires: Vec<(DateTime<Utc>, FireKind)> = Vec::new();
    let catch_up: Vec<DateTime<Utc>> = match p.catch_up {
        CatchUp::None => Vec::new(),
        CatchUp::Latest if !on_time.is_empty() => Vec::new(),
        CatchUp::Latest | CatchUp::All => missed,
    };
    let skipped = missed_total - catch_up.len() as u64;
    fires.extend(catch_up.into_iter().map(|t| (t, FireKind::CatchUp)));
    fires.extend(on_time.into_iter().map(|t| (t, FireKind::OnTime)));
    FirePlan {
        fires,
        skipped,
        next: cron.next_after(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Tz;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn policy(catch_up: CatchUp) -> Policy {
        Policy {
            catch_up,
            max_catch_up: 3,
            misfire_grace: Duration::seconds(60),
        }
    }

    #[test]
    fn an_on_time_fire_fires() {
        let c = CronSchedule::parse("* * * * *", Tz::UTC).unwrap();
        let p = plan_fires(
            &c,
            utc("2025-09-01T00:01:00Z"),
            utc("2025-09-01T00:01:00.010Z"),
            &policy(CatchUp::None),
        );
        assert_eq!(
            p.fires,
            vec![(utc("2025-09-01T00:01:00Z"), FireKind::OnTime)]
        );
        assert_eq!(p.next, Some(utc("2025-09-01T00:02:00Z")));
        assert_eq!(p.skipped, 0);
    }

    // Five minutes down: fires at 00:01..00:05 are due at 00:05:30; 00:05 is within grace.
    fn after_downtime(catch_up: CatchUp) -> FirePlan {
        let c = CronSchedule::parse("* * * * *", Tz::UTC).unwrap();
        plan_fires(
            &c,
            utc("2025-09-01T00:01:00Z"),
            utc("2025-09-01T00:05:30Z"),
            &policy(catch_up),
        )
    }

    #[test]
    fn downtime_with_none_skips_missed_fires() {
        let p = after_downtime(CatchUp::None);
        assert_eq!(
            p.fires,
            vec![(utc("2025-09-01T00:05:00Z"), FireKind::OnTime)]
        );
        assert_eq!(p.skipped, 4);
    }

    #[test]
    fn downtime_with_latest_lets_the_on_time_fire_stand_for_the_missed() {
        let p = after_downtime(CatchUp::Latest);
        assert_eq!(
            p.fires,
            vec![(utc("2025-09-01T00:05:00Z"), FireKind::OnTime)]
        );
        assert_eq!(p.skipped, 4);
        // With nothing on time (between fires), the most recent missed one fires once.
        let c = CronSchedule::parse("* * * * *", Tz::UTC).unwrap();
        let p = plan_fires(
            &c,
            utc("2025-09-01T00:01:00Z"),
            utc("2025-09-01T00:06:59Z"),
            &Policy {
                misfire_grace: Duration::seconds(30),
                ..policy(CatchUp::Latest)
            },
        );
        assert_eq!(
            p.fires,
            vec![(utc("2025-09-01T00:06:00Z"), FireKind::CatchUp)]
        );
        assert_eq!(p.skipped, 5);
    }

    #[test]
    fn downtime_with_all_fires_each_up_to_the_bound() {
        let p = after_downtime(CatchUp::All);
        assert_eq!(
            p.fires,
            vec![
                (utc("2025-09-01T00:02:00Z"), FireKind::CatchUp),
                (utc("2025-09-01T00:03:00Z"), FireKind::CatchUp),
                (utc("2025-09-01T00:04:00Z"), FireKind::CatchUp),
                (utc("2025-09-01T00:05:00Z"), FireKind::OnTime),
            ]
        );
        assert_eq!(p.skipped, 1, "max_catch_up 3 drops the oldest");
    }

    #[test]
    fn a_very_long_downtime_is_bounded() {
        let c = CronSchedule::parse("* * * * * *", Tz::UTC).unwrap();
        let p = plan_fires(
            &c,
            utc("2025-01-01T00:00:00Z"),
            utc("2025-09-01T00:00:00Z"),
            &policy(CatchUp::All),
        );
        assert_eq!(
            p.fires.iter().filter(|f| f.1 == FireKind::CatchUp).count(),
            3
        );
        assert_eq!(
            p.fires.iter().filter(|f| f.1 == FireKind::OnTime).count(),
            61
        );
        assert!(p.skipped >= MAX_WALK as u64 - 3);
    }
}
