//! `strategy.toml`: every threshold of the strategy, the `rules` reviewer, the risk manager
//! and the order arithmetic, with the defaults of SPEC B3–B8. Unknown keys are errors
//! (`deny_unknown_fields`) and every value is range-checked; an error names the file, the
//! line and the field. Parsing is pure (the caller reads the file).

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::portfolio::OrderConfig;
use super::review::ReviewConfig;
use super::risk::RiskConfig;
use super::strategy::{EntryConfig, ExitConfig, RegimeConfig};

/// All tunables of one trading setup.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StrategyConfig {
    pub regime: RegimeConfig,
    pub entry: EntryConfig,
    pub exit: ExitConfig,
    pub review: ReviewConfig,
    pub risk: RiskConfig,
    pub orders: OrderConfig,
}

/// A `strategy.toml` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: field `{field}`: {reason}")]
pub struct ConfigError {
    pub file: String,
    /// 1-based; 0 when the field is absent from the file (its default is out of range).
    pub line: usize,
    pub field: String,
    pub reason: String,
}

/// Parses and validates `text`; `file` only names it in errors.
pub fn parse_strategy(file: &str, text: &str) -> Result<StrategyConfig, ConfigError> {
    let cfg: StrategyConfig = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
            .unwrap_or(0);
        ConfigError {
            file: file.to_string(),
            line,
            field: field_of(text, line),
            reason: e.message().trim().to_string(),
        }
    })?;
    validate(&cfg).map_err(|(section, key, reason)| ConfigError {
        file: file.to_string(),
        line: line_of(text, section, key),
        field: format!("{section}.{key}"),
        reason,
    })?;
    Ok(cfg)
}

/// `section.key` of the key written on `line`, for parse errors.
fn field_of(text: &str, line: usize) -> String {
    let mut section = String::new();
    for (i, l) in text.lines().enumerate() {
        let l = l.trim();
        if let Some(s) = l.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.trim().to_string();
        }
        if i + 1 == line {
            let key = l.split('=').next().unwrap_or("").trim();
            return match (section.is_empty(), key.starts_with('[')) {
                (_, true) => section,
                (true, false) => key.to_string(),
                (false, false) => format!("{section}.{key}"),
            };
        }
    }
    String::new()
}

/// The line that sets `section.key`, 0 if the file does not set it.
fn line_of(text: &str, section: &str, key: &str) -> usize {
    let mut current = String::new();
    for (i, l) in text.lines().enumerate() {
        let l = l.trim();
        if let Some(s) = l.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            current = s.trim().to_string();
        } else if current == section && l.split('=').next().is_some_and(|k| k.trim() == key) {
            return i + 1;
        }
    }
    0
}

type Invalid = (&'static str, &'static str, String);

fn check(ok: bool, section: &'static str, key: &'static str, want: &str) -> Result<(), Invalid> {
    if ok {
        Ok(())
    } else {
        Err((section, key, format!("must be {want}")))
    }
}

fn validate(c: &StrategyConfig) -> Result<(), Invalid> {
    let frac = |d: Decimal| d > Decimal::ZERO && d < Decimal::ONE;
    let rsi = |v: f64| (0.0..=100.0).contains(&v);
    check(
        c.regime.bull_above >= c.regime.bear_below,
        "regime",
        "bull_above",
        "≥ regime.bear_below",
    )?;
    check(
        rsi(c.entry.rsi14_below),
        "entry",
        "rsi14_below",
        "within 0..=100",
    )?;
    check(
        rsi(c.entry.rsi7_below_bear),
        "entry",
        "rsi7_below_bear",
        "within 0..=100",
    )?;
    check(
        rsi(c.entry.rsi7_below_sideways),
        "entry",
        "rsi7_below_sideways",
        "within 0..=100",
    )?;
    check(
        rsi(c.entry.rsi7_below_bull),
        "entry",
        "rsi7_below_bull",
        "within 0..=100",
    )?;
    check(
        c.entry.volume_ratio_above >= 0.0,
        "entry",
        "volume_ratio_above",
        "≥ 0",
    )?;
    check(
        frac(c.exit.stop_loss),
        "exit",
        "stop_loss",
        "a fraction in (0, 1), e.g. 0.03",
    )?;
    check(
        c.exit.take_profit > Decimal::ZERO,
        "exit",
        "take_profit",
        "> 0, e.g. 0.05",
    )?;
    check(
        rsi(c.exit.rsi14_above),
        "exit",
        "rsi14_above",
        "within 0..=100",
    )?;
    check(c.exit.max_hold_hours > 0, "exit", "max_hold_hours", "> 0")?;
    check(
        c.review.confidence <= 100,
        "review",
        "confidence",
        "within 0..=100",
    )?;
    check(
        c.review.min_confidence <= 100,
        "review",
        "min_confidence",
        "within 0..=100",
    )?;
    check(
        c.risk.max_consecutive_losses > 0,
        "risk",
        "max_consecutive_losses",
        "> 0",
    )?;
    check(c.risk.cooldown_hours >= 0, "risk", "cooldown_hours", "≥ 0")?;
    check(
        frac(c.risk.daily_loss_limit),
        "risk",
        "daily_loss_limit",
        "a fraction in (0, 1), e.g. 0.05",
    )?;
    check(
        frac(c.orders.notional_fraction) || c.orders.notional_fraction == Decimal::ONE,
        "orders",
        "notional_fraction",
        "a fraction in (0, 1]",
    )?;
    check(
        c.orders.fee_rate >= Decimal::ZERO && c.orders.fee_rate < Decimal::ONE,
        "orders",
        "fee_rate",
        "a fraction in [0, 1)",
    )?;
    check(
        c.orders.slippage_bps >= Decimal::ZERO && c.orders.slippage_bps < Decimal::from(10_000),
        "orders",
        "slippage_bps",
        "within 0..10000",
    )?;
    check(
        c.orders.min_order_krw >= Decimal::ZERO,
        "orders",
        "min_order_krw",
        "≥ 0",
    )?;
    check(
        c.orders.qty_decimals <= 16,
        "orders",
        "qty_decimals",
        "≤ 16",
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_strategy_toml_holds_the_defaults() {
        let text = include_str!("../../strategy.toml");
        assert_eq!(
            parse_strategy("strategy.toml", text).unwrap(),
            StrategyConfig::default()
        );
    }

    #[test]
    fn an_unknown_key_names_file_line_and_field() {
        let text = "[entry]\nrsi14_below = 42\nrsi7_belw_bear = 30\n";
        let e = parse_strategy("s.toml", text).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (3, "entry.rsi7_belw_bear"));
        assert!(e.reason.contains("unknown field"), "{e}");
        assert!(
            e.to_string()
                .starts_with("s.toml:3: field `entry.rsi7_belw_bear`"),
            "{e}"
        );
    }

    #[test]
    fn an_out_of_range_value_names_its_line() {
        let text = "[exit]\ntake_profit = 0.05\nstop_loss = 1.5\n";
        let e = parse_strategy("s.toml", text).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (3, "exit.stop_loss"));
        let e = parse_strategy("s.toml", "[risk]\nmax_entries_per_day = \"ten\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (2, "risk.max_entries_per_day"));
    }
}
