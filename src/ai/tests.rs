//! Unit tests of the reviewer layer that need no server: the rules reviewer's labelling and
//! note, the error → job-error table, the HTTP status table, and the reply parsers under
//! arbitrary input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{Duration, TimeZone, Utc};
use proptest::prelude::*;
use reqwest::header::{HeaderMap, HeaderValue};
use rust_decimal::Decimal;

use super::http::{classify, retry_after};
use super::parse::validate_verdict;
use super::*;
use crate::config::{AiConfig, AiProvider, Secrets};
use crate::domain::review::{ReviewConfig, Verdict};
use crate::domain::strategy::{Regime, Snapshot};

fn hourly(closes: &[i64]) -> Vec<Candle> {
    let start = Utc.with_ymd_and_hms(2025, 9, 8, 0, 0, 0).unwrap();
    let mut open = closes.first().copied().unwrap_or(1000);
    closes
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let candle = Candle {
                open_time: start + Duration::hours(i as i64),
                open: open.into(),
                high: open.max(c).into(),
                low: open.min(c).into(),
                close: c.into(),
                volume: 1.into(),
            };
            open = c;
            candle
        })
        .collect()
}

fn request(closes: &[i64]) -> ReviewRequest {
    let hourly = hourly(closes);
    ReviewRequest {
        market: "KRW-BTC".into(),
        decided_at: hourly.last().unwrap().open_time + Duration::hours(1),
        close: hourly.last().unwrap().close,
        snapshot: Snapshot::default(),
        regime: Some(Regime::Bull),
        regime_distance: Some(0.021),
        hourly,
    }
}

fn flat_then(tail: &[i64]) -> Vec<i64> {
    let mut closes = vec![1000; 24 - tail.len()];
    closes.extend_from_slice(tail);
    closes
}

#[tokio::test]
async fn rules_decisions_are_labelled_as_the_offline_reviewer() {
    let reviewer = RulesReviewer::new(ReviewConfig::default());
    let calm = reviewer.review(&request(&flat_then(&[]))).await.unwrap();
    assert_eq!(
        (calm.provider.as_str(), calm.model.as_str()),
        ("rules", "rules-v1")
    );
    assert_eq!(
        (calm.verdict, calm.confidence, calm.confirmed),
        (Verdict::Confirm, 70, true)
    );
    assert!(
        calm.reasoning.starts_with(rules::LABEL),
        "{}",
        calm.reasoning
    );
    assert_eq!((calm.input_tokens, calm.error.as_deref()), (None, None));

    let falling = reviewer
        .review(&request(&flat_then(&[999, 998, 997, 996])))
        .await
        .unwrap();
    assert_eq!(
        (falling.verdict, falling.confirmed),
        (Verdict::Reject, false)
    );
    assert!(
        falling.reasoning.starts_with(rules::LABEL) && falling.reasoning.contains("falling knife"),
        "{}",
        falling.reasoning
    );
    assert_eq!(reviewer.provider(), "rules");
}

#[test]
fn the_prompt_carries_only_the_last_24_hourly_candles() {
    let mut req = request(&(1000..1030).collect::<Vec<_>>());
    let prompt = prompt::review_prompt(&req);
    let rows: Vec<&str> = prompt
        .lines()
        .filter(|l| l.starts_with("2025-09-"))
        .collect();
    assert_eq!(rows.len(), 24, "{prompt}");
    assert!(
        rows[0].starts_with("2025-09-08T06:00Z,1005,"),
        "{}",
        rows[0]
    );
    assert!(rows[23].ends_with(",1029,1"), "{}", rows[23]);
    req.hourly.truncate(3);
    let prompt = prompt::review_prompt(&req);
    assert!(prompt.contains("Last 3 closed hourly candles"), "{prompt}");
}

#[tokio::test]
async fn rules_min_confidence_decides_confirmed() {
    let cfg = ReviewConfig {
        min_confidence: 71,
        ..ReviewConfig::default()
    };
    let d = RulesReviewer::new(cfg)
        .review(&request(&flat_then(&[])))
        .await
        .unwrap();
    assert_eq!((d.verdict, d.confirmed), (Verdict::Confirm, false));
}

#[tokio::test]
async fn rules_market_note_shows_regime_day_return_and_each_position_pnl() {
    let mut closes = flat_then(&[]);
    closes[23] = 1100; // first open 1000 → last close 1100: +10 %
    let hourly = hourly(&closes);
    let at = hourly[23].open_time + Duration::hours(1);
    let req = MarketNoteRequest {
        market: "KRW-BTC".into(),
        at,
        regime: Some(Regime::Sideways),
        regime_distance: Some(-0.005),
        hourly,
        positions: vec![PositionSummary {
            market: "KRW-BTC".into(),
            quantity: Decimal::new(5, 3),
            entry_price: Decimal::from(1000),
            entry_time: at - Duration::hours(3),
            last_price: Decimal::from(1100),
        }],
    };
    let reviewer = RulesReviewer::new(ReviewConfig::default());
    let note = reviewer.market_note(&req).await.unwrap();
    assert_eq!(
        (note.provider.as_str(), note.model.as_str()),
        ("rules", "rules-v1")
    );
    for part in [
        rules::LABEL,
        "SIDEWAYS (close is -0.50 % from MA200)",
        "24 h return +10.00 %",
        "qty 0.005",
        "unrealised +10.00 %",
    ] {
        assert!(
            note.note.contains(part),
            "missing {part:?} in {}",
            note.note
        );
    }
    assert_eq!(
        note,
        reviewer.market_note(&req).await.unwrap(),
        "deterministic"
    );

    let empty = MarketNoteRequest {
        positions: vec![],
        hourly: vec![],
        regime: None,
        ..req
    };
    let note = reviewer.market_note(&empty).await.unwrap();
    assert!(
        note.note.contains("open positions: none") && note.note.contains("n/a"),
        "{}",
        note.note
    );
}

#[test]
fn ai_errors_map_to_retry_wait_or_permanent_failure() {
    let wait = Duration::seconds(17).to_std().unwrap();
    let e = AiError::RateLimited {
        retry_after: Some(wait),
    }
    .into_job_error();
    assert_eq!((e.permanent, e.retry_after), (false, Some(wait)));
    for retried in [
        AiError::RateLimited { retry_after: None },
        AiError::Overloaded { status: 529 },
        AiError::Timeout,
        AiError::Transport("connection reset".into()),
    ] {
        let e = retried.into_job_error();
        assert_eq!((e.permanent, e.retry_after), (false, None), "{}", e.message);
    }
    for permanent in [
        AiError::Permanent("spend limit".into()),
        AiError::Config("no key".into()),
    ] {
        assert!(permanent.into_job_error().permanent);
    }
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, HeaderValue::from_static(v));
    }
    h
}

#[test]
fn http_statuses_are_classified_like_the_spec_says() {
    let body = |kind: &str, msg: &str| {
        format!(r#"{{"type":"error","error":{{"type":"{kind}","message":"{msg}"}}}}"#).into_bytes()
    };
    let none = HeaderMap::new();
    let rl = classify(
        429,
        &headers(&[("retry-after", "12")]),
        &body("rate_limit_error", "slow down"),
    );
    assert!(
        matches!(rl, AiError::RateLimited { retry_after: Some(d) } if d.as_secs() == 12),
        "{rl:?}"
    );
    assert!(matches!(
        classify(529, &none, &body("overloaded_error", "Overloaded")),
        AiError::Overloaded { status: 529 }
    ));
    assert!(matches!(
        classify(503, &none, b"<html>bad gateway</html>"),
        AiError::Overloaded { status: 503 }
    ));
    let credit = "Your credit balance is too low to access the Anthropic API.";
    let spend = permanent(classify(400, &none, &body("invalid_request_error", credit)));
    assert!(spend.contains("spend limit"), "{spend}");
    let quota = br#"{"error":{"message":"You exceeded your current quota",
        "type":"insufficient_quota","code":"insufficient_quota"}}"#;
    let quota = permanent(classify(429, &none, quota));
    assert!(
        quota.contains("spend limit"),
        "quota is not a rate limit: {quota}"
    );
    let auth = permanent(classify(
        401,
        &none,
        &body("authentication_error", "bad key"),
    ));
    assert!(auth.contains("key was refused"), "{auth}");
    permanent(classify(403, &none, b""));
    let missing = permanent(classify(404, &none, &body("not_found_error", "model: x")));
    assert!(missing.contains("model: x"), "{missing}");
}

fn permanent(e: AiError) -> String {
    match e {
        AiError::Permanent(m) => m,
        other => panic!("not permanent: {other:?}"),
    }
}

#[test]
fn retry_after_reads_seconds_and_milliseconds_and_ignores_nonsense() {
    let secs = |v| retry_after(&headers(&[("retry-after", v)]));
    assert_eq!(secs("30"), Some(std::time::Duration::from_secs(30)));
    assert_eq!(secs("1.5"), Some(std::time::Duration::from_millis(1500)));
    assert_eq!(secs("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    assert_eq!(secs("-1"), None);
    assert_eq!(secs("1e300"), None);
    let ms = retry_after(&headers(&[("retry-after-ms", "250"), ("retry-after", "9")]));
    assert_eq!(ms, Some(std::time::Duration::from_millis(250)));
}

#[test]
fn from_config_builds_each_provider_and_never_shows_the_key() {
    let review = ReviewConfig::default();
    let rules = from_config(&AiConfig::default(), &Secrets::default(), review).unwrap();
    assert_eq!((rules.provider(), rules.model()), ("rules", "rules-v1"));

    let anthropic = AiConfig {
        provider: AiProvider::Anthropic,
        ..AiConfig::default()
    };
    let err = from_config(&anthropic, &Secrets::default(), review).unwrap_err();
    assert!(
        matches!(&err, AiError::Config(m) if m.contains("ANTHROPIC_API_KEY")),
        "{err}"
    );

    let env = |k: &str| (k == "COINPILOT_AI_API_KEY").then(|| "sk-very-secret".to_string());
    let secrets = Secrets::from_env(&env);
    let built = from_config(&anthropic, &secrets, review).unwrap();
    assert_eq!(
        (built.provider(), built.model()),
        ("anthropic", anthropic::DEFAULT_MODEL)
    );
    assert!(!format!("{built:?}").contains("very-secret"), "{built:?}");

    let openai = AiConfig {
        provider: AiProvider::Openai,
        model: Some("llama3".into()),
        ..AiConfig::default()
    };
    assert!(matches!(
        from_config(&openai, &Secrets::default(), review),
        Err(AiError::Config(_))
    ));
    let local = AiConfig {
        base_url: Some("http://127.0.0.1:11434/v1".into()),
        ..openai
    };
    let built = from_config(&local, &Secrets::default(), review).unwrap();
    assert_eq!((built.provider(), built.model()), ("openai", "llama3"));
    let bad = AiConfig {
        base_url: Some("ftp://x".into()),
        ..local
    };
    assert!(matches!(from_config(&bad, &secrets, review),
            Err(AiError::Config(m)) if m.contains("ai.base_url")));
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        prop_oneof![
            Just("CONFIRM".to_string()),
            Just("REJECT".to_string()),
            Just(prompt::TOOL_NAME.to_string()),
            ".{0,12}"
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let keys = prop_oneof![
            Just("content".to_string()),
            Just("type".to_string()),
            Just("tool_use".to_string()),
            Just("name".to_string()),
            Just("input".to_string()),
            Just("decision".to_string()),
            Just("confidence".to_string()),
            Just("reasoning".to_string()),
            Just("choices".to_string()),
            Just("message".to_string()),
            Just("usage".to_string()),
            Just("text".to_string()),
            "[a-z_]{1,8}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(keys, inner, 0..5)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn all_parsers_give_a_clear_answer(body: &[u8]) -> Result<(), TestCaseError> {
    for content in [
        parse_anthropic_review(body).content.map(|_| ()),
        parse_openai_review(body).content.map(|_| ()),
        parse_anthropic_note(body).content.map(|_| ()),
        parse_openai_note(body).content.map(|_| ()),
    ] {
        if let Err(message) = content {
            prop_assert!(message.len() > 10, "unclear error {message:?}");
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn parsers_never_panic_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
        all_parsers_give_a_clear_answer(&body)?;
    }

    #[test]
    fn parsers_never_panic_on_arbitrary_json(v in json_value()) {
        all_parsers_give_a_clear_answer(v.to_string().as_bytes())?;
        // The same value as the tool input / message content of a well-formed reply.
        let call = serde_json::json!({"type": "tool_use", "name": prompt::TOOL_NAME, "input": v});
        let anthropic = serde_json::json!({"content": [call]});
        all_parsers_give_a_clear_answer(anthropic.to_string().as_bytes())?;
        let openai = serde_json::json!({"choices": [{"message": {"content": v.to_string()}}]});
        all_parsers_give_a_clear_answer(openai.to_string().as_bytes())?;
    }

    #[test]
    fn any_error_response_is_classified_without_panicking(
        status in 300u16..600,
        body in prop::collection::vec(any::<u8>(), 0..200),
        after in ".{0,12}",
    ) {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&after) {
            h.insert("retry-after", v);
        }
        let err = classify(status, &h, &body);
        prop_assert!(err.to_string().len() > 10);
        let retried = matches!(status, 408 | 429 | 500..=599);
        let permanent = err.into_job_error().permanent;
        // Random bytes never spell a spend-limit message, the one thing that makes a
        // retryable status permanent.
        prop_assert_eq!(permanent, !retried, "status {}", status);
    }

    #[test]
    fn confidence_is_accepted_exactly_in_0_to_100(c in -1000i64..1000, confirm in any::<bool>()) {
        let decision = if confirm { "CONFIRM" } else { "REJECT" };
        let v = serde_json::json!({"decision": decision, "confidence": c, "reasoning": "r"});
        match validate_verdict(&v) {
            Ok(m) => prop_assert!((0..=100).contains(&c) && i64::from(m.confidence) == c),
            Err(e) => prop_assert!(!(0..=100).contains(&c) && e.contains("`confidence`"), "{e}"),
        }
    }
}
