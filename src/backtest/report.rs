//! Rendering of a backtest: the human summary, the one-line `--json`, and `--trades-csv`.
//! Money is printed from its `Decimal`, exactly (the JSON numbers are the decimal text,
//! not an `f64` round trip).

use std::fmt::Write as _;

use rust_decimal::Decimal;

use super::BacktestOutcome;
use crate::domain::engine::ReviewMode;
use crate::domain::money::Krw;

/// Wins, losses and the summed PnL of the closed trades.
pub fn tally(o: &BacktestOutcome) -> (usize, usize, Krw) {
    let wins = o.trades.iter().filter(|t| t.trade.pnl > Krw::ZERO).count();
    let losses = o
        .trades
        .iter()
        .filter(|t| t.trade.pnl.is_negative())
        .count();
    let pnl = o.trades.iter().fold(Krw::ZERO, |a, t| a + t.trade.pnl);
    (wins, losses, pnl)
}

fn money(k: Krw) -> Decimal {
    k.value().round_dp(8).normalize()
}

fn reviewer(r: ReviewMode) -> &'static str {
    match r {
        ReviewMode::Rules => crate::domain::review::PROVIDER,
        ReviewMode::Off => "none",
    }
}

/// The `--json` line.
pub fn json_line(o: &BacktestOutcome, review: ReviewMode) -> String {
    let (wins, losses, pnl) = tally(o);
    let m = &o.metrics;
    let num = |v: f64| {
        if v.is_finite() {
            format!("{v}")
        } else {
            "null".into()
        }
    };
    let sharpe = m.sharpe.map(num).unwrap_or_else(|| "null".into());
    let counts = serde_json::to_string(&o.counts).unwrap_or_else(|_| "null".into());
    format!(
        "{{\"trades\":{},\"wins\":{wins},\"losses\":{losses},\"pnl_krw\":{},\"final_balance_krw\":{},\
         \"final_equity_krw\":{},\"max_drawdown_pct\":{},\"sharpe\":{sharpe},\"exposure_pct\":{},\
         \"open_position\":{},\"candles\":{},\"days\":{},\"reviewer\":\"{}\",\"decisions\":{counts}}}",
        o.trades.len(),
        money(pnl),
        money(o.final_balance),
        money(o.final_equity),
        num(m.max_drawdown_pct),
        num(m.exposure_pct),
        o.open_position.is_some(),
        o.candles,
        m.days,
        reviewer(review),
    )
}

/// The human summary.
pub fn summary(o: &BacktestOutcome, review: ReviewMode, start: Krw) -> String {
    let (wins, losses, pnl) = tally(o);
    let m = &o.metrics;
    let mut s = String::new();
    let span = match (o.first, o.last) {
        (Some(a), Some(b)) => format!(
            "{} → {} UTC",
            a.format("%Y-%m-%d %H:%M"),
            b.format("%Y-%m-%d %H:%M")
        ),
        _ => String::new(),
    };
    let win_rate = if o.trades.is_empty() {
        0.0
    } else {
        100.0 * wins as f64 / o.trades.len() as f64
    };
    let _ = writeln!(
        s,
        "backtest  {} candles, {span}, reviewer: {}",
        o.candles,
        reviewer(review)
    );
    let _ = writeln!(
        s,
        "trades    {} ({wins} wins / {losses} losses, win rate {win_rate:.1} %)",
        o.trades.len()
    );
    let _ = writeln!(
        s,
        "pnl       {} KRW (closed trades; start {} KRW)",
        money(pnl),
        money(start)
    );
    let _ = writeln!(
        s,
        "balance   {} KRW, equity {} KRW",
        money(o.final_balance),
        money(o.final_equity)
    );
    if let Some(p) = &o.open_position {
        let _ = writeln!(
            s,
            "open      {} since {} at {} KRW (valued at the last close)",
            p.qty,
            p.entry_time.format("%Y-%m-%d %H:%M"),
            p.entry_price
        );
    }
    let sharpe = m
        .sharpe
        .map(|v| format!("{v:.3}"))
        .unwrap_or_else(|| "n/a".into());
    let _ = writeln!(
        s,
        "max dd    {:.3} %   sharpe {sharpe} ({} Seoul days)   exposure {:.2} %",
        m.max_drawdown_pct, m.days, m.exposure_pct
    );
    let c = &o.counts;
    let _ = writeln!(
        s,
        "signals   {} entry signals: {} entered, {} rejected by review, {} refused by risk, {} buys under the minimum",
        c.entry_signals, c.entries, c.review_rejected, c.risk_refused, c.buys_refused
    );
    let mut reasons: Vec<(&str, usize)> = Vec::new();
    for t in &o.trades {
        match reasons.iter_mut().find(|(r, _)| *r == t.reason.as_str()) {
            Some((_, n)) => *n += 1,
            None => reasons.push((t.reason.as_str(), 1)),
        }
    }
    let reasons: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} × {r}")).collect();
    let _ = writeln!(
        s,
        "exits     {}",
        if reasons.is_empty() {
            "none".into()
        } else {
            reasons.join(", ")
        }
    );
    s
}

/// `--trades-csv`: one row per closed trade.
pub fn trades_csv(o: &BacktestOutcome) -> String {
    let mut s = String::from(
        "entry_time,entry_price,exit_time,exit_price,quantity,entry_fee,exit_fee,cost,proceeds,pnl_krw,exit_reason\n",
    );
    for t in &o.trades {
        let tr = &t.trade;
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{},{}",
            tr.entry_time.to_rfc3339(),
            tr.entry_price,
            tr.exit_time.to_rfc3339(),
            tr.exit_price,
            tr.qty,
            tr.entry_fee,
            tr.exit_fee,
            tr.cost,
            tr.proceeds,
            tr.pnl,
            t.reason.as_str()
        );
    }
    s
}
