//! Cron strings: arbitrary field combinations and arbitrary text never panic; a string
//! that parses gives fire times strictly after the time asked, in every zone.

use chrono::{DateTime, Duration, Utc};
use coinpilot::schedule::cron::CronSchedule;
use proptest::prelude::*;

const FIELDS: &[&str] = &[
    "*",
    "*/5",
    "*/0",
    "0",
    "59",
    "60",
    "1-5",
    "5-1",
    "MON",
    "mon-fri",
    "JAN",
    "7",
    "L",
    "?",
    "1,2",
    "-1",
    "x",
    "",
    "1/3",
    "0-59/15",
    "31",
    "2-30/7",
    "W",
    "#",
    "99999999999",
];

fn cron_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(prop::sample::select(FIELDS), 0..9).prop_map(|f| f.join(" ")),
        1 => super::noise(40),
        1 => "\\PC{0,40}",
    ]
}

fn zone() -> impl Strategy<Value = chrono_tz::Tz> {
    prop::sample::select(vec![
        chrono_tz::Tz::UTC,
        chrono_tz::Asia::Seoul,
        chrono_tz::America::New_York,
        chrono_tz::Australia::Lord_Howe,
    ])
}

proptest! {
    #[test]
    fn cron_strings_never_panic_and_fire_after_the_time_asked(
        expr in cron_text(),
        tz in zone(),
        secs in 0i64..4_000_000_000,
    ) {
        let Ok(c) = CronSchedule::parse(&expr, tz) else {
            return Ok(());
        };
        let t: DateTime<Utc> = DateTime::from_timestamp(secs, 0).unwrap();
        if let Some(next) = c.next_after(t) {
            prop_assert!(next > t, "{expr:?} in {tz}: {next} not after {t}");
            if let Some(after) = c.next_after(next) {
                prop_assert!(after > next, "{expr:?}: {after} not after {next}");
            }
            let fires: Vec<_> = c.fires_between(t, t + Duration::hours(2)).take(50).collect();
            prop_assert!(fires.windows(2).all(|w| w[0] < w[1]), "{expr:?}: {fires:?}");
        }
    }
}
