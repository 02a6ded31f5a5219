//! What the HTTP reviewers say to a model: the review and market-note prompts (the
//! signal, indicators, regime, the 24 hourly candles, open positions) and the JSON schema
//! of the answer. Shared by every provider so they are asked exactly the same thing.

use rust_decimal::Decimal;
use serde_json::{json, Value};

use super::{MarketNoteRequest, PositionSummary, ReviewRequest};
use crate::domain::candle::Candle;
use crate::domain::review::WINDOW_HOURS;
use crate::domain::strategy::Regime;

/// The tool (Anthropic) / schema (OpenAI) name the answer must come through.
pub const TOOL_NAME: &str = "record_review";

pub const REVIEW_SYSTEM: &str = "You review entry signals of an automated long-only crypto \
trading bot (Upbit, KRW markets). The bot buys when RSI is oversold, the close is at or \
below the lower Bollinger band and volume is elevated. Your job is to catch bad entries, \
such as a falling knife or a breakdown, from the last 24 hourly candles and the regime. \
Answer only through the record_review tool: decision CONFIRM or REJECT, confidence 0-100 \
in your decision, and a short reasoning (at most three sentences).";

pub const NOTE_SYSTEM: &str = "You write the hourly market note of an automated crypto \
trading bot (Upbit, KRW markets) for its operator. In at most four short sentences of plain \
text: the regime, the last 24 hours' move and each open position's state. You never \
recommend or place trades.";

/// The answer's JSON schema: both providers enforce it (tool input / json_schema).
pub fn verdict_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "decision": {
                "type": "string",
                "enum": ["CONFIRM", "REJECT"],
                "description": "CONFIRM to let the bot buy, REJECT to skip this entry"
            },
            "confidence": {
                "type": "integer",
                "minimum": 0,
                "maximum": 100,
                "description": "confidence in the decision, 0-100"
            },
            "reasoning": {
                "type": "string",
                "description": "why, in at most three sentences"
            }
        },
        "required": ["decision", "confidence", "reasoning"],
        "additionalProperties": false
    })
}

/// The review prompt: the signal, every indicator, the regime and the hourly candles.
pub fn review_prompt(req: &ReviewRequest) -> String {
    let s = &req.snapshot;
    let bands = s.bands.map_or_else(
        || "n/a".to_string(),
        |b| {
            format!(
                "lower {:.2}, middle {:.2}, upper {:.2}",
                b.lower, b.middle, b.upper
            )
        },
    );
    format!(
        "Entry signal (long) on {market} at {at} (close of the 1-minute candle).\n\
         Close: {close}\n\
         RSI(14): {rsi14}\nRSI(7): {rsi7}\nMA200 (hourly): {ma200}\n\
         Bollinger bands (20, 2): {bands}\nVolume ratio (vs. 20-candle mean): {vr}\n\
         Regime: {regime}\n\n\
         {candles}\n\
         Should the bot take this entry? Call {TOOL_NAME}.",
        market = req.market,
        at = req.decided_at.to_rfc3339(),
        close = req.close,
        rsi14 = opt(s.rsi14),
        rsi7 = opt(s.rsi7),
        ma200 = opt(s.ma200),
        vr = opt(s.volume_ratio),
        regime = regime_line(req.regime, req.regime_distance),
        candles = candle_table(&req.hourly),
    )
}

/// The market-note prompt: regime, hourly candles and every open position.
pub fn note_prompt(req: &MarketNoteRequest) -> String {
    let positions = if req.positions.is_empty() {
        "Open positions: none\n".to_string()
    } else {
        let lines: Vec<String> = req.positions.iter().map(position_line).collect();
        format!("Open positions:\n{}\n", lines.join("\n"))
    };
    format!(
        "Hourly market review of {market} at {at}.\nRegime: {regime}\n\n{candles}\n{positions}\
         Write the market note.",
        market = req.market,
        at = req.at.to_rfc3339(),
        regime = regime_line(req.regime, req.regime_distance),
        candles = candle_table(&req.hourly),
    )
}

/// `BULL (close is +2.10 % from MA200)` or `unknown (fewer than 200 closed hours)`.
pub fn regime_line(regime: Option<Regime>, distance: Option<f64>) -> String {
    match (regime, distance) {
        (Some(r), Some(d)) => format!("{} (close is {:+.2} % from MA200)", r.as_str(), d * 100.0),
        (Some(r), None) => r.as_str().to_string(),
        (None, _) => "unknown (fewer than 200 closed hours)".to_string(),
    }
}

/// One position with its unrealised PnL, as both the prompt and the rules note show it.
pub fn position_line(p: &PositionSummary) -> String {
    let pnl = pnl_percent(p.entry_price, p.last_price)
        .map_or_else(|| "n/a".to_string(), |pct| format!("{pct:+.2} %"));
    format!(
        "- {} qty {} bought at {} on {}, last {}: unrealised {pnl}",
        p.market,
        p.quantity,
        p.entry_price,
        p.entry_time.to_rfc3339(),
        p.last_price
    )
}

/// (last / entry − 1) × 100, `None` for a zero entry price.
pub fn pnl_percent(entry: Decimal, last: Decimal) -> Option<Decimal> {
    if entry.is_zero() {
        return None;
    }
    Some(((last / entry - Decimal::ONE) * Decimal::ONE_HUNDRED).round_dp(2))
}

/// The last [`WINDOW_HOURS`] candles only, like the rules reviewer reads.
fn candle_table(hourly: &[Candle]) -> String {
    let hourly = &hourly[hourly.len().saturating_sub(WINDOW_HOURS)..];
    let mut out = format!(
        "Last {} closed hourly candles, oldest first \
         (open time UTC, open, high, low, close, volume):\n",
        hourly.len()
    );
    for c in hourly {
        out.push_str(&format!(
            "{},{},{},{},{},{}\n",
            c.open_time.format("%Y-%m-%dT%H:%MZ"),
            c.open,
            c.high,
            c.low,
            c.close,
            c.volume
        ));
    }
    out
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.2}"))
}
