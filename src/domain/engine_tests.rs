//! Engine timing (SPEC B8): fills at the next open, the 48 h exit, the daily reset first.

use super::*;
use crate::domain::money::Qty;
use chrono::{Duration, TimeZone};

fn t0() -> DateTime<Utc> {
    // 14:00 UTC = 23:00 Asia/Seoul: a Seoul midnight falls one hour in.
    Utc.with_ymd_and_hms(2025, 9, 1, 14, 0, 0).unwrap()
}

fn flat(i: i64, price: i64) -> Candle {
    Candle {
        open_time: t0() + Duration::minutes(i),
        open: price.into(),
        high: price.into(),
        low: price.into(),
        close: price.into(),
        volume: 1.into(),
    }
}

fn engine_holding(price: i64) -> Engine {
    let mut e = Engine::new(
        StrategyConfig::default(),
        ReviewMode::Off,
        Krw::new(1_000_000.into()),
    );
    e.resume_with_position(Position {
        qty: Qty::new(Decimal::ONE).unwrap(),
        entry_price: Price::new(price.into()).unwrap(),
        entry_time: t0(),
        entry_fee: Krw::ZERO,
        cost: Krw::new(price.into()),
    });
    e
}

use rust_decimal::Decimal;

const CTX: MarketContext<'static> = MarketContext {
    regime_distance: None,
    closed_hours: &[],
};

#[test]
fn time_exit_is_decided_at_the_close_48h_after_the_fill_and_sold_at_the_next_open() {
    let mut e = engine_holding(1_000);
    // Candle i closes at t0 + i + 1 minutes: 48 h after the fill is candle 2879's close.
    for i in 0..2879 {
        let s = e.on_candle(&flat(i, 1_000), &CTX).unwrap();
        assert_eq!(s.decision, Decision::None, "candle {i}");
    }
    let s = e.on_candle(&flat(2879, 1_000), &CTX).unwrap();
    assert_eq!(
        s.decision,
        Decision::Exit {
            reason: ExitReason::Time
        }
    );
    assert!(
        s.sold.is_none(),
        "the decision does not fill on its own candle"
    );
    let s = e.on_candle(&flat(2880, 2_000), &CTX).unwrap();
    let sold = s.sold.expect("sold at the next open");
    assert_eq!(sold.reason, ExitReason::Time);
    assert_eq!(sold.trade.exit_time, t0() + Duration::minutes(2880));
    // 2000 × (1 − 5 bps) = 1999, fee 0.05 % of that.
    assert_eq!(sold.trade.exit_price.value(), Decimal::from(1999));
    assert_eq!(sold.trade.exit_fee.value(), Decimal::new(9995, 4));
    assert!(!s.in_position);
}

#[test]
fn daily_reset_runs_first_at_the_seoul_midnight_candle() {
    let mut e = engine_holding(1_000);
    for i in 0..60 {
        let s = e.on_candle(&flat(i, 1_000 + i % 2), &CTX).unwrap();
        assert!(
            !s.day_reset,
            "candle {i} is still the Seoul day of 2025-09-01"
        );
    }
    // Candle 60 opens at 15:00 UTC = 00:00 KST: reset with the position at the last close.
    let s = e.on_candle(&flat(60, 5_000), &CTX).unwrap();
    assert!(s.day_reset);
    let r = e.risk().unwrap();
    assert_eq!(r.day, chrono::NaiveDate::from_ymd_opt(2025, 9, 2).unwrap());
    assert_eq!(r.day_start_equity.value(), Decimal::from(1_000_000 + 1_001));
}

#[test]
fn a_stop_loss_sells_and_records_the_loss_on_the_exit_fill_day() {
    let mut e = engine_holding(1_000);
    let s = e.on_candle(&flat(0, 970), &CTX).unwrap();
    assert_eq!(
        s.decision,
        Decision::Exit {
            reason: ExitReason::StopLoss
        }
    );
    let s = e.on_candle(&flat(1, 970), &CTX).unwrap();
    let pnl = s.sold.unwrap().trade.pnl;
    assert!(pnl.is_negative());
    let r = e.risk().unwrap();
    assert_eq!((r.realized_pnl_today, r.loss_streak), (pnl, 1));
}

/// 200 rising minutes then a sharp dip that stays above MA200 but falls through the lower
/// band: an entry signal at candle 200 once RSI and volume limits are opened up.
fn dip_series(start: DateTime<Utc>) -> Vec<Candle> {
    let mut v: Vec<Candle> = (0..200)
        .map(|i| Candle {
            open_time: start + Duration::minutes(i),
            ..flat(0, 1_000 + i)
        })
        .collect();
    v.push(Candle {
        open_time: start + Duration::minutes(200),
        low: 1_150.into(),
        close: 1_150.into(),
        ..flat(0, 1_199)
    });
    v.push(Candle {
        open_time: start + Duration::minutes(201),
        ..flat(0, 1_150)
    });
    v
}

fn eager() -> StrategyConfig {
    let mut cfg = StrategyConfig::default();
    cfg.entry.rsi14_below = 101.0;
    cfg.entry.rsi7_below_sideways = 101.0;
    cfg.entry.volume_ratio_above = -1.0;
    cfg
}

const SIDEWAYS: MarketContext<'static> = MarketContext {
    regime_distance: Some(0.0),
    closed_hours: &[],
};

#[test]
fn an_entry_decided_at_2359_kst_counts_on_the_next_day_when_it_fills() {
    // Candle 200 opens at 14:59 UTC (23:59 KST); its buy fills at 15:00 UTC, a new day.
    let start = Utc.with_ymd_and_hms(2025, 9, 1, 11, 39, 0).unwrap();
    let mut e = Engine::new(eager(), ReviewMode::Off, Krw::new(1_000_000.into()));
    let series = dip_series(start);
    for c in &series[..200] {
        assert_eq!(e.on_candle(c, &SIDEWAYS).unwrap().decision, Decision::None);
    }
    let s = e.on_candle(&series[200], &SIDEWAYS).unwrap();
    assert_eq!(s.decision, Decision::Entry { review: None });
    assert_eq!(
        e.risk().unwrap().entries_today,
        0,
        "counted at the fill, not the decision"
    );
    let s = e.on_candle(&series[201], &SIDEWAYS).unwrap();
    assert!(s.day_reset, "the reset ran first");
    let b = s.bought.expect("filled at the next open");
    // 20 % of 1,000,000 at 1150 × 1.0005, rounded down to 8 decimals.
    assert_eq!(b.price.value(), Decimal::new(1_150_575, 3));
    assert_eq!(b.qty.value(), Decimal::new(17_382_613_041, 8));
    let r = e.risk().unwrap();
    assert_eq!(
        (r.day.to_string().as_str(), r.entries_today),
        ("2025-09-02", 1)
    );
}

#[test]
fn a_halted_account_refuses_the_entry_at_the_decision() {
    let start = Utc.with_ymd_and_hms(2025, 9, 1, 0, 0, 0).unwrap();
    let mut e = Engine::new(eager(), ReviewMode::Off, Krw::new(1_000_000.into()));
    let series = dip_series(start);
    for c in &series[..200] {
        e.on_candle(c, &SIDEWAYS).unwrap();
    }
    e.set_halted(true);
    let s = e.on_candle(&series[200], &SIDEWAYS).unwrap();
    assert!(
        matches!(s.decision, Decision::RiskRefused { .. }),
        "{:?}",
        s.decision
    );
    assert!(e
        .on_candle(&series[201], &SIDEWAYS)
        .unwrap()
        .bought
        .is_none());
}
