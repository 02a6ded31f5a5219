//! Cron expressions in a time zone, with Vixie cron's semantics as `croner` implements
//! them: 5 fields, or 6 with seconds first; 0 and 7 are Sunday; when both day-of-month and
//! day-of-week are restricted, either matches. Across DST, a fixed-time fire that falls in
//! a gap fires at the first instant after it, and one in a repeated hour fires once, at
//! the first occurrence (interval patterns such as `*/10 * * * *` fire on both passes of
//! a repeated hour, as the wall clock really shows those minutes twice).

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// A parsed cron expression bound to its zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    tz: Tz,
}

impl CronSchedule {
    /// Parses `expr` (5 or 6 fields) for zone `tz`; the error says what is wrong.
    pub fn parse(expr: &str, tz: Tz) -> Result<CronSchedule, String> {
        let fields = expr.split_whitespace().count();
        if expr.trim_start().starts_with('@') {
            return Err(format!(
                "`{expr}`: nicknames such as @daily are not accepted; write the 5 fields"
            ));
        }
        if !(5..=6).contains(&fields) {
            return Err(format!(
                "`{expr}` has {fields} fields; a cron needs 5 (minute hour day month weekday) \
                 or 6 (second first)"
            ));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let cron = parser
            .parse(expr)
            .map_err(|e| format!("`{expr}` is not a valid cron expression: {e}"))?;
        Ok(CronSchedule { cron, tz })
    }

    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The first fire time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// Fire times from `start` (inclusive when it is a fire time) up to `end` inclusive.
    pub fn fires_between(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        // Fire times are whole seconds. Searching strictly after the second before `start`
        // (rather than inclusively from `start`) keeps a fire that a DST gap moved: 02:30
        // in a gap fires at 03:00, which the pattern itself does not match.
        let first = self.next_after(start - chrono::Duration::seconds(1));
        std::iter::successors(first, move |t| self.next_after(*t)).take_while(move |t| *t <= end)
    }
}

impl CronSchedule {
    /// Fire times strictly before `t`, newest first.
    pub fn fires_before(&self, t: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        let prev = move |t: DateTime<Utc>| {
            self.cron
                .find_previous_occurrence(&t.with_timezone(&self.tz), false)
                .ok()
                .map(|d| d.with_timezone(&Utc))
        };
        std::iter::successors(prev(t), move |t| prev(*t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn five_and_six_fields() {
        let c = CronSchedule::parse("*/15 * * * *", Tz::UTC).unwrap();
        assert_eq!(
            c.next_after(utc("2025-09-01T00:00:00Z")),
            Some(utc("2025-09-01T00:15:00Z"))
        );
        let c = CronSchedule::parse("5 * * * * *", Tz::UTC).unwrap();
        assert_eq!(
            c.next_after(utc("2025-09-01T00:00:05Z")),
            Some(utc("2025-09-01T00:01:05Z"))
        );
        assert!(CronSchedule::parse("* * * *", Tz::UTC).is_err());
        assert!(CronSchedule::parse("* * * * * * *", Tz::UTC).is_err());
        assert!(CronSchedule::parse("61 * * * *", Tz::UTC).is_err());
        assert!(CronSchedule::parse("@daily", Tz::UTC).is_err());
    }

    #[test]
    fn seoul_midnight_is_fifteen_utc() {
        let c = CronSchedule::parse("5 0 * * *", chrono_tz::Asia::Seoul).unwrap();
        assert_eq!(
            c.next_after(utc("2025-09-01T12:00:00Z")),
            Some(utc("2025-09-01T15:05:00Z"))
        );
    }

    #[test]
    fn sunday_is_0_and_7_and_dom_dow_is_either() {
        let a = CronSchedule::parse("0 12 * * 0", Tz::UTC).unwrap();
        let b = CronSchedule::parse("0 12 * * 7", Tz::UTC).unwrap();
        let from = utc("2025-09-01T00:00:00Z"); // a Monday
        assert_eq!(a.next_after(from), Some(utc("2025-09-07T12:00:00Z")));
        assert_eq!(a.next_after(from), b.next_after(from));
        // The 15th or any Friday: Friday 5 September comes first.
        let c = CronSchedule::parse("0 12 15 * 5", Tz::UTC).unwrap();
        assert_eq!(c.next_after(from), Some(utc("2025-09-05T12:00:00Z")));
    }

    #[test]
    fn spring_forward_gap_fires_at_the_first_instant_after_it() {
        // 2025-03-09 02:00 EST → 03:00 EDT in New York; 02:30 does not exist that day.
        let c = CronSchedule::parse("30 2 * * *", chrono_tz::America::New_York).unwrap();
        let fires: Vec<_> = c
            .fires_between(utc("2025-03-08T00:00:00Z"), utc("2025-03-11T00:00:00Z"))
            .collect();
        assert_eq!(
            fires,
            vec![
                utc("2025-03-08T07:30:00Z"), // 02:30 EST
                utc("2025-03-09T07:00:00Z"), // 03:00 EDT, the first instant after the gap
                utc("2025-03-10T06:30:00Z"), // 02:30 EDT
            ]
        );
    }

    #[test]
    fn fall_back_repeated_hour_fires_once() {
        // 2025-11-02 02:00 EDT → 01:00 EST: 01:30 happens twice; it fires the first time.
        let c = CronSchedule::parse("30 1 * * *", chrono_tz::America::New_York).unwrap();
        let fires: Vec<_> = c
            .fires_between(utc("2025-11-01T12:00:00Z"), utc("2025-11-03T12:00:00Z"))
            .collect();
        assert_eq!(
            fires,
            vec![utc("2025-11-02T05:30:00Z"), utc("2025-11-03T06:30:00Z")]
        );
    }

    #[test]
    fn fires_between_is_inclusive_at_both_ends() {
        let c = CronSchedule::parse("0 * * * *", Tz::UTC).unwrap();
        let f: Vec<_> = c
            .fires_between(utc("2025-09-01T01:00:00Z"), utc("2025-09-01T03:00:00Z"))
            .collect();
        assert_eq!(f.len(), 3);
    }
}
