//! What a model call cost, from a fixed per-model price table (USD per million input /
//! output tokens, list prices of the providers as of 2025-11; prompt caching and batch
//! discounts are not used by the reviewer and not modelled). A model not in the table —
//! or a newer snapshot of one — has no cost (`None`) rather than a guessed one: update
//! the table when you switch models.

use rust_decimal::Decimal;

/// (model, USD per 1M input tokens, USD per 1M output tokens), prices in cents.
const PRICES_CENTS: &[(&str, i64, i64)] = &[
    ("claude-opus-4-5", 500, 2500),
    ("claude-opus-4-1", 1500, 7500),
    ("claude-opus-4", 1500, 7500),
    ("claude-sonnet-4-5", 300, 1500),
    ("claude-sonnet-4", 300, 1500),
    ("claude-3-7-sonnet", 300, 1500),
    ("claude-haiku-4-5", 100, 500),
    ("claude-3-5-haiku", 80, 400),
    ("claude-3-haiku", 25, 125),
    ("claude-3-opus", 1500, 7500),
    ("gpt-5", 125, 1000),
    ("gpt-5-mini", 25, 200),
    ("gpt-5-nano", 5, 40),
    ("gpt-4.1", 200, 800),
    ("gpt-4.1-mini", 40, 160),
    ("gpt-4.1-nano", 10, 40),
    ("gpt-4o", 250, 1000),
    ("gpt-4o-mini", 15, 60),
];

/// The (input, output) USD price per million tokens of `model`: a table name exactly, or
/// one of its dated snapshots (`claude-sonnet-4-5-20250929`, `gpt-4o-2024-08-06`) or
/// `-latest`. `claude-opus-4-6` is *not* `claude-opus-4`: a new version has its own price.
pub fn price_per_million(model: &str) -> Option<(Decimal, Decimal)> {
    PRICES_CENTS.iter().find_map(|(name, input, output)| {
        let suffix = model.strip_prefix(name)?;
        let snapshot = suffix.is_empty()
            || suffix == "-latest"
            || (suffix.starts_with("-20") && suffix.len() >= 9);
        snapshot.then(|| (Decimal::new(*input, 2), Decimal::new(*output, 2)))
    })
}

/// The cost of a call, `None` for an unknown model or when no token count was reported.
pub fn cost_usd(
    model: &str,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
) -> Option<Decimal> {
    if input_tokens.is_none() && output_tokens.is_none() {
        return None;
    }
    let (input, output) = price_per_million(model)?;
    let million = Decimal::from(1_000_000);
    let tokens = |t: Option<i64>| Decimal::from(t.unwrap_or(0).max(0));
    Some((tokens(input_tokens) * input + tokens(output_tokens) * output) / million)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dated_snapshot_costs_what_its_model_costs() {
        // The recorded reply's model: 497 in, 56 out at $3 / $15 per million.
        let cost = cost_usd("claude-sonnet-4-5-20250929", Some(497), Some(56));
        assert_eq!(cost, Some(Decimal::new(2331, 6)));
        assert_eq!(
            price_per_million("gpt-4o-mini-2024-07-18"),
            price_per_million("gpt-4o-mini")
        );
        assert_ne!(
            price_per_million("gpt-4o-mini"),
            price_per_million("gpt-4o")
        );
    }

    #[test]
    fn unknown_models_and_new_versions_have_no_cost() {
        assert_eq!(cost_usd("llama3.1:8b", Some(100), Some(10)), None);
        assert_eq!(price_per_million("claude-opus-4-6"), None);
        assert_eq!(cost_usd("claude-sonnet-4-5", None, None), None);
    }
}
