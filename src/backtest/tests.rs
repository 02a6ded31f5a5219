//! The backtest over the shipped sample: it trades, and it never looks ahead.

use super::*;
use crate::domain::candle_csv::parse_candles;
use crate::domain::engine::Decision;
use rust_decimal::Decimal;

const MINUTES: &str = include_str!("../../data/upbit_KRW-BTC_1m_2025-09-20_2025-09-23.csv");
const HOURS: &str = include_str!("../../data/upbit_KRW-BTC_1h_2025-09-08_2025-09-19.csv");

fn sample(review: ReviewMode) -> BacktestInput {
    BacktestInput {
        minutes: parse_candles("1m", MINUTES, Interval::M1).unwrap(),
        hourly: parse_candles("1h", HOURS, Interval::H1).unwrap(),
        config: StrategyConfig::default(),
        balance: Krw::new(1_000_000.into()),
        review,
    }
}

fn decisions(input: BacktestInput) -> Vec<(Decision, Krw)> {
    let mut out = Vec::new();
    run_with(input, |_, s| out.push((s.decision.clone(), s.equity))).unwrap();
    out
}

#[test]
fn the_sample_trades_and_balances_add_up() {
    let o = run(sample(ReviewMode::Off)).unwrap();
    assert!(!o.trades.is_empty(), "the sample should produce trades");
    let pnl = o.trades.iter().fold(Krw::ZERO, |a, t| a + t.trade.pnl);
    let open_cost = o
        .open_position
        .as_ref()
        .map(|p| p.cost)
        .unwrap_or(Krw::ZERO);
    assert_eq!(
        o.final_balance,
        Krw::new(1_000_000.into()) + pnl - open_cost
    );
    for t in &o.trades {
        // Fills at the next open ± 5 bps: never at the decision candle's close.
        assert!(t.trade.exit_time > t.trade.entry_time);
        assert_eq!(
            t.trade.qty.value().scale().min(8),
            t.trade.qty.value().scale()
        );
    }
}

#[test]
fn changing_candle_t_plus_1_leaves_the_decision_at_t_unchanged() {
    let base = decisions(sample(ReviewMode::Rules));
    let mut probes: Vec<usize> = base
        .iter()
        .enumerate()
        .filter(|(_, (d, _))| *d != Decision::None)
        .map(|(i, _)| i)
        .take(6)
        .collect();
    probes.extend([300, 2_000, 5_000]);
    assert!(probes.len() > 3, "the sample should decide something");
    for t in probes {
        let mut input = sample(ReviewMode::Rules);
        let next = &mut input.minutes[t + 1];
        // A crash candle with huge volume: would flip RSI, bands and volume ratio at t.
        next.close *= Decimal::new(5, 1);
        next.low = next.close;
        next.open = next.high;
        next.volume *= Decimal::from(1_000);
        let changed = decisions(input);
        assert_eq!(changed[..=t], base[..=t], "decisions up to {t} changed");
        assert_ne!(
            changed[t + 1..],
            base[t + 1..],
            "the change at {} had no effect at all",
            t + 1
        );
    }
}
