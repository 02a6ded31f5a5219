//! Truth tables for every entry and exit condition at its boundary (`<` vs `<=`).

use super::*;
use chrono::TimeZone;
use std::str::FromStr;

fn passing() -> Snapshot {
    Snapshot {
        close: 100.0,
        rsi14: Some(30.0),
        rsi7: Some(20.0),
        ma200: Some(99.0),
        bands: Some(Bands {
            upper: 110.0,
            middle: 105.0,
            lower: 100.0,
        }),
        volume_ratio: Some(2.0),
    }
}

fn entry(s: Snapshot, r: Regime) -> EntrySignal {
    evaluate_entry(&s, Some(r), &EntryConfig::default())
}

#[test]
fn regime_boundaries_are_strict() {
    let c = RegimeConfig::default();
    assert_eq!(classify_regime(0.02, &c), Regime::Sideways);
    assert_eq!(classify_regime(0.020_000_1, &c), Regime::Bull);
    assert_eq!(classify_regime(-0.02, &c), Regime::Sideways);
    assert_eq!(classify_regime(-0.020_000_1, &c), Regime::Bear);
    assert_eq!(classify_regime(0.0, &c), Regime::Sideways);
}

#[test]
fn entry_when_every_condition_holds_including_close_on_the_band() {
    assert_eq!(entry(passing(), Regime::Sideways), EntrySignal::Entry);
}

#[test]
fn rsi14_must_be_strictly_below_42() {
    let s = Snapshot {
        rsi14: Some(42.0),
        ..passing()
    };
    assert_eq!(entry(s, Regime::Sideways), EntrySignal::No);
    let s = Snapshot {
        rsi14: Some(41.999),
        ..passing()
    };
    assert_eq!(entry(s, Regime::Sideways), EntrySignal::Entry);
}

#[test]
fn rsi7_limit_depends_on_the_regime_and_is_strict() {
    for (regime, limit) in [
        (Regime::Bear, 30.0),
        (Regime::Sideways, 35.0),
        (Regime::Bull, 42.0),
    ] {
        let at = Snapshot {
            rsi7: Some(limit),
            rsi14: Some(41.0),
            ..passing()
        };
        assert_eq!(entry(at, regime), EntrySignal::No, "{regime:?} at {limit}");
        let below = Snapshot {
            rsi7: Some(limit - 0.001),
            rsi14: Some(41.0),
            ..passing()
        };
        assert_eq!(
            entry(below, regime),
            EntrySignal::Entry,
            "{regime:?} below {limit}"
        );
    }
    // 32 passes in SIDEWAYS but not in BEAR.
    let s = Snapshot {
        rsi7: Some(32.0),
        ..passing()
    };
    assert_eq!(entry(s, Regime::Sideways), EntrySignal::Entry);
    assert_eq!(entry(s, Regime::Bear), EntrySignal::No);
}

#[test]
fn close_must_be_strictly_above_ma200() {
    let s = Snapshot {
        ma200: Some(100.0),
        ..passing()
    };
    assert_eq!(entry(s, Regime::Sideways), EntrySignal::No);
    let s = Snapshot {
        ma200: Some(99.999),
        ..passing()
    };
    assert_eq!(entry(s, Regime::Sideways), EntrySignal::Entry);
}

#[test]
fn close_may_equal_the_lower_band_but_not_exceed_it() {
    let mut s = passing();
    s.bands = Some(Bands {
        upper: 110.0,
        middle: 105.0,
        lower: 99.999,
    });
    assert_eq!(entry(s, Regime::Sideways), EntrySignal::No);
    s.bands = Some(Bands {
        upper: 110.0,
        middle: 105.0,
        lower: 100.001,
    });
    assert_eq!(entry(s, Regime::Sideways), EntrySignal::Entry);
}

#[test]
fn volume_ratio_must_be_strictly_above_1_5() {
    let s = Snapshot {
        volume_ratio: Some(1.5),
        ..passing()
    };
    assert_eq!(entry(s, Regime::Sideways), EntrySignal::No);
    let s = Snapshot {
        volume_ratio: Some(1.500_001),
        ..passing()
    };
    assert_eq!(entry(s, Regime::Sideways), EntrySignal::Entry);
}

#[test]
fn no_entry_while_any_input_is_undefined() {
    let cfg = EntryConfig::default();
    assert_eq!(
        evaluate_entry(&passing(), None, &cfg),
        EntrySignal::Undefined
    );
    let cases = [
        Snapshot {
            rsi14: None,
            ..passing()
        },
        Snapshot {
            rsi7: None,
            ..passing()
        },
        Snapshot {
            ma200: None,
            ..passing()
        },
        Snapshot {
            bands: None,
            ..passing()
        },
        Snapshot {
            volume_ratio: None,
            ..passing()
        },
    ];
    for s in cases {
        assert_eq!(entry(s, Regime::Sideways), EntrySignal::Undefined, "{s:?}");
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 9, 1, 0, 0, 0).unwrap()
}

fn exit(close: &str, rsi: f64, held: Duration) -> Option<ExitReason> {
    let fill = Decimal::from(100);
    let close = Decimal::from_str(close).unwrap();
    evaluate_exit(
        fill,
        t0(),
        close,
        Some(rsi),
        t0() + held,
        &ExitConfig::default(),
    )
}

#[test]
fn stop_loss_at_exactly_minus_3_percent() {
    let h = Duration::hours(1);
    assert_eq!(exit("97", 50.0, h), Some(ExitReason::StopLoss));
    assert_eq!(exit("97.0001", 50.0, h), None);
}

#[test]
fn take_profit_at_exactly_plus_5_percent() {
    let h = Duration::hours(1);
    assert_eq!(exit("105", 50.0, h), Some(ExitReason::TakeProfit));
    assert_eq!(exit("104.9999", 50.0, h), None);
}

#[test]
fn rsi_exit_is_strictly_above_70() {
    let h = Duration::hours(1);
    assert_eq!(exit("100", 70.0, h), None);
    assert_eq!(exit("100", 70.000_01, h), Some(ExitReason::Rsi));
}

#[test]
fn time_exit_at_48_hours_not_before() {
    assert_eq!(
        exit("100", 50.0, Duration::hours(48) - Duration::minutes(1)),
        None
    );
    assert_eq!(
        exit("100", 50.0, Duration::hours(48)),
        Some(ExitReason::Time)
    );
}

#[test]
fn exit_reason_priority_is_stop_take_rsi_time() {
    let late = Duration::hours(50);
    assert_eq!(exit("96", 80.0, late), Some(ExitReason::StopLoss));
    assert_eq!(exit("106", 80.0, late), Some(ExitReason::TakeProfit));
    assert_eq!(exit("100", 80.0, late), Some(ExitReason::Rsi));
    assert_eq!(exit("100", 50.0, late), Some(ExitReason::Time));
}

#[test]
fn regime_needs_200_closed_hours() {
    let mut r = RegimeIndicators::default();
    for i in 0..199 {
        r.update(100.0 + i as f64);
        assert_eq!(r.distance(), None);
    }
    r.update(300.0);
    assert!(r.distance().is_some());
}
