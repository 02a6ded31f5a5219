//! Strategy v3.3, regime-adaptive mean reversion (SPEC B3): the regime from hourly closes,
//! the entry rule and the exit rules on 1-minute closes. Pure: callers pass the indicator
//! snapshot, the position and "now". Thresholds come from [`StrategyConfig`]
//! (`strategy.toml`, see [`super::config`]); indicator periods are part of the strategy's
//! definition, not tuning, so they are constants here.
//!
//! Options (`[regime]`, `[entry]`, `[exit]` in `strategy.toml`; defaults in brackets):
//! - `regime.bull_above` [0.02], `regime.bear_below` [-0.02]: d = (SMA50 − SMA200)/SMA200.
//! - `entry.rsi14_below` [42], `entry.rsi7_below_{bear,sideways,bull}` [30, 35, 42],
//!   `entry.volume_ratio_above` [1.5].
//! - `exit.stop_loss` [0.03], `exit.take_profit` [0.05], `exit.rsi14_above` [70],
//!   `exit.max_hold_hours` [48].

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::indicators::{regime_distance, Bands, Bollinger, Rsi, Sma};

/// Indicator periods of v3.3 (SPEC B2/B3).
pub const RSI_SLOW: usize = 14;
pub const RSI_FAST: usize = 7;
pub const MA_TREND: usize = 200;
pub const BB_PERIOD: usize = 20;
pub const BB_K: f64 = 2.0;
pub const VOLUME_PERIOD: usize = 20;
pub const REGIME_FAST: usize = 50;
pub const REGIME_SLOW: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegimeConfig {
    pub bull_above: f64,
    pub bear_below: f64,
}

impl Default for RegimeConfig {
    fn default() -> Self {
        RegimeConfig {
            bull_above: 0.02,
            bear_below: -0.02,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EntryConfig {
    pub rsi14_below: f64,
    pub rsi7_below_bear: f64,
    pub rsi7_below_sideways: f64,
    pub rsi7_below_bull: f64,
    pub volume_ratio_above: f64,
}

impl Default for EntryConfig {
    fn default() -> Self {
        EntryConfig {
            rsi14_below: 42.0,
            rsi7_below_bear: 30.0,
            rsi7_below_sideways: 35.0,
            rsi7_below_bull: 42.0,
            volume_ratio_above: 1.5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExitConfig {
    /// Fraction below the entry fill that stops out (0.03 = −3 %).
    pub stop_loss: Decimal,
    /// Fraction above the entry fill that takes profit (0.05 = +5 %).
    pub take_profit: Decimal,
    pub rsi14_above: f64,
    pub max_hold_hours: i64,
}

impl Default for ExitConfig {
    fn default() -> Self {
        ExitConfig {
            stop_loss: Decimal::new(3, 2),
            take_profit: Decimal::new(5, 2),
            rsi14_above: 70.0,
            max_hold_hours: 48,
        }
    }
}

/// The market regime from hourly closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Regime {
    Bull,
    Sideways,
    Bear,
}

impl Regime {
    pub fn as_str(self) -> &'static str {
        match self {
            Regime::Bull => "BULL",
            Regime::Sideways => "SIDEWAYS",
            Regime::Bear => "BEAR",
        }
    }
}

/// BULL if d > bull_above, BEAR if d < bear_below, else SIDEWAYS (strict both ways).
pub fn classify_regime(d: f64, cfg: &RegimeConfig) -> Regime {
    if d > cfg.bull_above {
        Regime::Bull
    } else if d < cfg.bear_below {
        Regime::Bear
    } else {
        Regime::Sideways
    }
}

/// What the entry rule sees at a 1-minute close; `None` while an indicator warms up.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Snapshot {
    pub close: f64,
    pub rsi14: Option<f64>,
    pub rsi7: Option<f64>,
    pub ma200: Option<f64>,
    pub bands: Option<Bands>,
    pub volume_ratio: Option<f64>,
}

/// The entry rule's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntrySignal {
    /// An input is not defined yet (warm-up, or fewer than 200 closed hours).
    Undefined,
    No,
    Entry,
}

/// SPEC B3 entry: every comparison strict except the band (`close ≤ lower`).
pub fn evaluate_entry(s: &Snapshot, regime: Option<Regime>, cfg: &EntryConfig) -> EntrySignal {
    let (Some(rsi14), Some(rsi7), Some(ma), Some(bands), Some(vr), Some(regime)) =
        (s.rsi14, s.rsi7, s.ma200, s.bands, s.volume_ratio, regime)
    else {
        return EntrySignal::Undefined;
    };
    let rsi7_limit = match regime {
        Regime::Bear => cfg.rsi7_below_bear,
        Regime::Sideways => cfg.rsi7_below_sideways,
        Regime::Bull => cfg.rsi7_below_bull,
    };
    let all = rsi14 < cfg.rsi14_below
        && rsi7 < rsi7_limit
        && s.close > ma
        && s.close <= bands.lower
        && vr > cfg.volume_ratio_above;
    if all {
        EntrySignal::Entry
    } else {
        EntrySignal::No
    }
}

/// Why a position is closed, in the priority order SPEC B3 records them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    StopLoss,
    TakeProfit,
    Rsi,
    Time,
}

impl ExitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::StopLoss => "stop_loss",
            ExitReason::TakeProfit => "take_profit",
            ExitReason::Rsi => "rsi",
            ExitReason::Time => "time",
        }
    }
}

/// SPEC B3/B8 exits, checked at a close against that close (no intrabar triggers):
/// stop loss if close ≤ fill × (1 − sl), take profit if close ≥ fill × (1 + tp),
/// RSI14 > limit, or `now − entry fill time ≥ max hold`. Money compared in `Decimal`.
pub fn evaluate_exit(
    entry_fill: Decimal,
    entry_time: DateTime<Utc>,
    close: Decimal,
    rsi14: Option<f64>,
    now: DateTime<Utc>,
    cfg: &ExitConfig,
) -> Option<ExitReason> {
    if close <= entry_fill * (Decimal::ONE - cfg.stop_loss) {
        Some(ExitReason::StopLoss)
    } else if close >= entry_fill * (Decimal::ONE + cfg.take_profit) {
        Some(ExitReason::TakeProfit)
    } else if rsi14.is_some_and(|r| r > cfg.rsi14_above) {
        Some(ExitReason::Rsi)
    } else if now - entry_time >= Duration::hours(cfg.max_hold_hours) {
        Some(ExitReason::Time)
    } else {
        None
    }
}

/// The 1-minute indicators of v3.3, updated in O(1) per closed candle.
#[derive(Debug, Clone)]
pub struct SignalIndicators {
    rsi14: Rsi,
    rsi7: Rsi,
    ma: Sma,
    bb: Bollinger,
    vol: Sma,
}

impl Default for SignalIndicators {
    fn default() -> Self {
        SignalIndicators {
            rsi14: Rsi::new(RSI_SLOW),
            rsi7: Rsi::new(RSI_FAST),
            ma: Sma::new(MA_TREND),
            bb: Bollinger::new(BB_PERIOD, BB_K),
            vol: Sma::new(VOLUME_PERIOD),
        }
    }
}

impl SignalIndicators {
    pub fn update(&mut self, close: f64, volume: f64) -> Snapshot {
        let vol_sma = self.vol.update(volume);
        Snapshot {
            close,
            rsi14: self.rsi14.update(close),
            rsi7: self.rsi7.update(close),
            ma200: self.ma.update(close),
            bands: self.bb.update(close),
            volume_ratio: vol_sma.and_then(|s| super::indicators::volume_ratio(volume, s)),
        }
    }
}

/// Hourly SMA50/SMA200 for the regime; `distance` is `None` before 200 closed hours.
#[derive(Debug, Clone)]
pub struct RegimeIndicators {
    fast: Sma,
    slow: Sma,
    distance: Option<f64>,
}

impl Default for RegimeIndicators {
    fn default() -> Self {
        RegimeIndicators {
            fast: Sma::new(REGIME_FAST),
            slow: Sma::new(REGIME_SLOW),
            distance: None,
        }
    }
}

impl RegimeIndicators {
    /// Feeds one closed hour.
    pub fn update(&mut self, close: f64) {
        let fast = self.fast.update(close);
        let slow = self.slow.update(close);
        self.distance = fast.zip(slow).and_then(|(f, s)| regime_distance(f, s));
    }

    pub fn distance(&self) -> Option<f64> {
        self.distance
    }
}

#[cfg(test)]
#[path = "strategy_tests.rs"]
mod tests;
