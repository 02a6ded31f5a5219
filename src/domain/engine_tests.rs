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
