//! The offline `rules` reviewer (SPEC B4) as a pure function, the default AI stand-in in
//! backtests and demos and reusable by the `ai_review` job. Deterministic: REJECT
//! ("falling knife", confidence 70) if the 24-hour return is below −5 % or each of the last
//! 4 hourly closes is lower than the one before; otherwise CONFIRM with confidence 70.
//!
//! Options (`[review]` in `strategy.toml`): `falling_return_below` [-0.05],
//! `falling_closes` [4], `confidence` [70], `min_confidence` [60] (`confirmed` needs
//! CONFIRM and confidence ≥ this).

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::candle::Candle;

/// The reviewer label reports must show.
pub const PROVIDER: &str = "rules";

/// Hours of context the reviewer gets (SPEC B4: the last 24 hourly candles).
pub const WINDOW_HOURS: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReviewConfig {
    pub falling_return_below: Decimal,
    pub falling_closes: usize,
    pub confidence: u8,
    pub min_confidence: u8,
}

impl Default for ReviewConfig {
    fn default() -> Self {
        ReviewConfig {
            falling_return_below: Decimal::new(-5, 2),
            falling_closes: 4,
            confidence: 70,
            min_confidence: 60,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    Confirm,
    Reject,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Review {
    pub verdict: Verdict,
    pub confidence: u8,
    pub reasoning: String,
    /// CONFIRM and confidence ≥ `min_confidence`: what the workflow's buy step tests.
    pub confirmed: bool,
}

/// Reviews an entry given the closed hourly candles up to the decision (ascending; only
/// the last [`WINDOW_HOURS`] are looked at).
pub fn review_entry(hourly: &[Candle], cfg: &ReviewConfig) -> Review {
    let window = &hourly[hourly.len().saturating_sub(WINDOW_HOURS)..];
    let reject = |reasoning: String| Review {
        verdict: Verdict::Reject,
        confidence: cfg.confidence,
        reasoning,
        confirmed: false,
    };
    if let (Some(first), Some(last)) = (window.first(), window.last()) {
        // The window spans first open → last close: that is the 24-hour return.
        let ret = last.close / first.open - Decimal::ONE;
        if ret < cfg.falling_return_below {
            return reject(format!(
                "falling knife: {}-hour return {:.2} % is below {:.2} %",
                window.len(),
                ret * Decimal::ONE_HUNDRED,
                cfg.falling_return_below * Decimal::ONE_HUNDRED
            ));
        }
    }
    // "each of the last N closes is lower than the one before" needs N + 1 closes.
    let n = cfg.falling_closes;
    if n > 0 && window.len() > n {
        let tail = &window[window.len() - n - 1..];
        if tail.windows(2).all(|w| w[1].close < w[0].close) {
            return reject(format!(
                "falling knife: each of the last {n} hourly closes is lower than the one before"
            ));
        }
    }
    Review {
        verdict: Verdict::Confirm,
        confidence: cfg.confidence,
        reasoning: "no falling-knife pattern in the last 24 hours".into(),
        confirmed: cfg.confidence >= cfg.min_confidence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::candle::tests::candle;

    fn hours(closes: &[i64]) -> Vec<Candle> {
        closes
            .iter()
            .enumerate()
            .map(|(i, &c)| candle(60 * i as i64, 1000, 2000, 1, c))
            .collect()
    }

    fn flat_then(tail: &[i64]) -> Vec<Candle> {
        let mut closes = vec![1000; 24 - tail.len()];
        closes.extend_from_slice(tail);
        hours(&closes)
    }

    #[test]
    fn confirms_a_calm_market() {
        let r = review_entry(&flat_then(&[]), &ReviewConfig::default());
        assert_eq!(
            (r.verdict, r.confidence, r.confirmed),
            (Verdict::Confirm, 70, true)
        );
    }

    #[test]
    fn rejects_a_24h_drop_below_5_percent_but_not_at_5() {
        // open of the window is 1000: a close of 950 is exactly −5 %, not below.
        let r = review_entry(&flat_then(&[950]), &ReviewConfig::default());
        assert_eq!(r.verdict, Verdict::Confirm);
        let r = review_entry(&flat_then(&[949]), &ReviewConfig::default());
        assert_eq!(
            (r.verdict, r.confidence, r.confirmed),
            (Verdict::Reject, 70, false)
        );
    }

    #[test]
    fn rejects_four_lower_closes_in_a_row_but_not_three() {
        let r = review_entry(&flat_then(&[999, 998, 997, 996]), &ReviewConfig::default());
        assert_eq!(r.verdict, Verdict::Reject);
        let r = review_entry(&flat_then(&[999, 998, 997]), &ReviewConfig::default());
        assert_eq!(r.verdict, Verdict::Confirm);
        let r = review_entry(&flat_then(&[999, 998, 998, 997]), &ReviewConfig::default());
        assert_eq!(
            r.verdict,
            Verdict::Confirm,
            "an equal close breaks the streak"
        );
    }

    #[test]
    fn confirmed_needs_the_minimum_confidence() {
        let cfg = ReviewConfig {
            confidence: 59,
            ..ReviewConfig::default()
        };
        let r = review_entry(&flat_then(&[]), &cfg);
        assert_eq!((r.verdict, r.confirmed), (Verdict::Confirm, false));
    }
}
