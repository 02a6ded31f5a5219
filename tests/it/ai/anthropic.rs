//! The Anthropic reviewer against the recorded Messages API payloads (VCR cassettes copied
//! into `tests/data/anthropic/`, see its PROVENANCE.md) and hand-written error answers.

use std::time::Duration;

use coinpilot::ai::{AiError, AnthropicReviewer, Reviewer};
use coinpilot::domain::review::Verdict;
use rust_decimal::Decimal;
use serde_json::{json, Value};

use super::*;

/// One recorded response of a cassette: status, headers (minus the framing ones, which
/// the local server sets itself) and the body, JSON or raw.
fn recorded(cassette: &str, interaction: usize) -> Canned {
    let path = format!(
        "{}/tests/data/anthropic/{cassette}.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let response = &doc["interactions"][interaction]["response"];
    let status = response["status"]["code"].as_u64().unwrap() as u16;
    let mut headers = Vec::new();
    for (name, values) in response["headers"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        if matches!(name, "content-length" | "transfer-encoding" | "connection") {
            continue;
        }
        headers.push((name.to_string(), values[0].as_str().unwrap().to_string()));
    }
    let body = match response.get("parsed_body") {
        Some(parsed) => serde_json::to_vec(&serde_json::to_value(parsed).unwrap()).unwrap(),
        None => response["body"]["string"]
            .as_str()
            .unwrap()
            .as_bytes()
            .to_vec(),
    };
    Canned {
        status,
        headers,
        body,
    }
}

/// The recorded `tool_use` reply (claude-sonnet-4-5-20250929, 497 in / 56 out) with its
/// tool call re-targeted at our tool: every other byte is the real payload.
fn recorded_tool_reply(input: Value) -> Canned {
    let mut canned = recorded("test_anthropic_tool_output", 1);
    let mut body: Value = serde_json::from_slice(&canned.body).unwrap();
    assert_eq!(body["content"][0]["type"], "tool_use");
    body["content"][0]["name"] = json!("record_review");
    body["content"][0]["input"] = input;
    canned.body = body.to_string().into_bytes();
    canned
}

fn verdict(decision: &str, confidence: i64) -> Value {
    json!({"decision": decision, "confidence": confidence, "reasoning": "oversold bounce inside an uptrend"})
}

fn error_body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_test"})
}

async fn scripted(answers: Vec<Canned>) -> (AnthropicReviewer, Server) {
    let server = serve(answers).await;
    let reviewer = AnthropicReviewer::new(settings(&server.base_url, "claude-sonnet-4-5")).unwrap();
    (reviewer, server)
}

#[tokio::test]
async fn a_recorded_tool_reply_becomes_the_decision_with_tokens_and_cost() {
    let (reviewer, server) = scripted(vec![recorded_tool_reply(verdict("CONFIRM", 82))]).await;
    let req = review_request();
    let d = reviewer.review(&req).await.unwrap();
    assert_eq!(
        (d.provider.as_str(), d.model.as_str()),
        ("anthropic", "claude-sonnet-4-5-20250929")
    );
    assert_eq!(
        (d.verdict, d.confidence, d.confirmed),
        (Verdict::Confirm, 82, true)
    );
    assert_eq!(d.reasoning, "oversold bounce inside an uptrend");
    assert_eq!((d.input_tokens, d.output_tokens), (Some(497), Some(56)));
    // $3 / $15 per million tokens.
    assert_eq!(d.cost_usd, Some(Decimal::new(497 * 3 + 56 * 15, 6)));
    assert_eq!(d.error, None);

    let sent = server.received();
    assert_eq!(sent.len(), 1);
    let r = &sent[0];
    assert_eq!(r.path, "/v1/messages");
    assert_eq!(header(r, "x-api-key"), KEY);
    assert_eq!(header(r, "anthropic-version"), "2023-06-01");
    assert_eq!(header(r, "content-type"), "application/json");
    assert_eq!(r.body["model"], "claude-sonnet-4-5");
    assert_eq!(
        r.body["tool_choice"],
        json!({"type": "tool", "name": "record_review"})
    );
    let tool = &r.body["tools"][0];
    assert_eq!(tool["name"], "record_review");
    let schema = &tool["input_schema"];
    assert_eq!(
        schema["properties"]["decision"]["enum"],
        json!(["CONFIRM", "REJECT"])
    );
    assert_eq!(schema["properties"]["confidence"]["type"], "integer");
    assert_eq!(
        schema["required"],
        json!(["decision", "confidence", "reasoning"])
    );
    let prompt = r.body["messages"][0]["content"].as_str().unwrap();
    assert_prompt_has_the_24_candles(prompt, &req);
}

#[tokio::test]
async fn confirm_below_60_is_not_confirmed() {
    let (reviewer, _server) = scripted(vec![
        recorded_tool_reply(verdict("CONFIRM", 59)),
        recorded_tool_reply(verdict("CONFIRM", 60)),
        recorded_tool_reply(verdict("REJECT", 95)),
    ])
    .await;
    let req = review_request();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let d = reviewer.review(&req).await.unwrap();
        seen.push((d.verdict, d.confidence, d.confirmed));
    }
    assert_eq!(
        seen,
        [
            (Verdict::Confirm, 59, false),
            (Verdict::Confirm, 60, true),
            (Verdict::Reject, 95, false)
        ]
    );
}

#[tokio::test]
async fn malformed_then_good_uses_the_second_answer_and_counts_both_calls() {
    let (reviewer, server) = scripted(vec![
        recorded_tool_reply(verdict("CONFIRM", 150)),
        recorded_tool_reply(verdict("CONFIRM", 75)),
    ])
    .await;
    let d = reviewer.review(&review_request()).await.unwrap();
    assert_eq!(
        (d.verdict, d.confidence, d.confirmed, d.error),
        (Verdict::Confirm, 75, true, None)
    );
    assert_eq!(
        (d.input_tokens, d.output_tokens),
        (Some(2 * 497), Some(2 * 56))
    );
    let sent = server.received();
    assert_eq!(sent.len(), 2, "asked exactly once more");
    assert_eq!(sent[0].body, sent[1].body);
}

#[tokio::test]
async fn malformed_twice_is_recorded_as_reject_with_the_error() {
    // The recorded replies themselves are malformed for us: a call of another tool, then
    // a plain text answer with no tool call at all.
    let (reviewer, server) = scripted(vec![
        recorded("test_anthropic_tool_output", 0),
        recorded("test_anthropic_model_instructions", 0),
    ])
    .await;
    let d = reviewer.review(&review_request()).await.unwrap();
    assert_eq!(
        (d.verdict, d.confidence, d.confirmed),
        (Verdict::Reject, 0, false)
    );
    let error = d.error.unwrap();
    assert!(
        error.contains("get_user_country") && error.contains("no `record_review` tool call"),
        "{error}"
    );
    assert_eq!(
        (d.input_tokens, d.output_tokens),
        (Some(445 + 20), Some(23 + 10))
    );
    assert_eq!(
        d.model, "claude-3-opus-20240229",
        "the model of the last reply"
    );
    assert_eq!(server.received().len(), 2);

    let (reviewer, _server) = reviewer_pair_bad_enum().await;
    let d = reviewer.review(&review_request()).await.unwrap();
    assert_eq!((d.verdict, d.confidence), (Verdict::Reject, 0));
    assert!(d
        .error
        .unwrap()
        .contains("`decision` must be CONFIRM or REJECT"));
}

async fn reviewer_pair_bad_enum() -> (AnthropicReviewer, Server) {
    scripted(vec![
        recorded_tool_reply(verdict("MAYBE", 70)),
        recorded_tool_reply(verdict("confirm", 70)),
    ])
    .await
}

#[tokio::test]
async fn a_recorded_event_stream_body_is_malformed_and_asked_again() {
    let (reviewer, server) = scripted(vec![
        recorded("test_request_stream_fallback_for_high_max_tokens", 0),
        recorded_tool_reply(verdict("REJECT", 66)),
    ])
    .await;
    let d = reviewer.review(&review_request()).await.unwrap();
    assert_eq!(
        (d.verdict, d.confidence, d.error),
        (Verdict::Reject, 66, None)
    );
    assert_eq!(server.received().len(), 2);
}

#[tokio::test]
async fn rate_limit_returns_retry_after_without_calling_again() {
    let answer = Canned::json(
        429,
        &error_body(
            "rate_limit_error",
            "Number of requests has exceeded your rate limit",
        ),
    )
    .with_header("retry-after", "7");
    let (reviewer, server) = scripted(vec![answer]).await;
    let err = reviewer.review(&review_request()).await.unwrap_err();
    assert!(
        matches!(err, AiError::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(7)),
        "{err:?}"
    );
    let job = err.into_job_error();
    assert_eq!(
        (job.permanent, job.retry_after),
        (false, Some(Duration::from_secs(7)))
    );
    assert_eq!(
        server.received().len(),
        1,
        "the queue retries, not the reviewer"
    );
}

#[tokio::test]
async fn overloaded_and_server_errors_back_off() {
    for (status, body) in [
        (529, error_body("overloaded_error", "Overloaded")),
        (500, error_body("api_error", "Internal server error")),
    ] {
        let (reviewer, _server) = scripted(vec![Canned::json(status, &body)]).await;
        let err = reviewer.review(&review_request()).await.unwrap_err();
        assert!(
            matches!(err, AiError::Overloaded { status: s } if s == status),
            "{err:?}"
        );
        let job = err.into_job_error();
        assert_eq!((job.permanent, job.retry_after), (false, None));
    }
}

#[tokio::test]
async fn spend_limit_auth_and_invalid_requests_are_permanent() {
    let credit = "Your credit balance is too low to access the Anthropic API. \
                  Please go to Plans & Billing to upgrade or purchase credits.";
    let cases = [
        (
            Canned::json(400, &error_body("invalid_request_error", credit)),
            "spend limit",
        ),
        (
            Canned::json(
                401,
                &error_body("authentication_error", "invalid x-api-key"),
            ),
            "key was refused",
        ),
        (
            recorded("test_anthropic_count_tokens_error", 0),
            "not_found_error",
        ),
        (
            recorded(
                "test_anthropic_explicit_effort_xhigh_unsupported_model_errors",
                0,
            ),
            "does not support effort level",
        ),
    ];
    for (answer, expect) in cases {
        let (reviewer, server) = scripted(vec![answer]).await;
        let err = reviewer.review(&review_request()).await.unwrap_err();
        let shown = err.to_string();
        assert!(
            matches!(&err, AiError::Permanent(m) if m.contains(expect)),
            "{err:?}"
        );
        assert!(!shown.contains(KEY));
        assert!(err.into_job_error().permanent);
        assert_eq!(server.received().len(), 1);
    }
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let base = silent_server().await;
    let reviewer = AnthropicReviewer::new(HttpSettings {
        timeout: Duration::from_millis(300),
        ..settings(&base, "claude-sonnet-4-5")
    })
    .unwrap();
    let err = reviewer.review(&review_request()).await.unwrap_err();
    assert!(matches!(err, AiError::Timeout), "{err:?}");
    assert!(!err.into_job_error().permanent);
}

#[tokio::test]
async fn the_market_note_is_the_recorded_text_reply() {
    let (reviewer, server) = scripted(vec![recorded("test_anthropic_model_instructions", 0)]).await;
    let req = note_request();
    let note = reviewer.market_note(&req).await.unwrap();
    assert_eq!(note.note, "The capital of France is Paris.");
    assert_eq!(
        (note.provider.as_str(), note.model.as_str()),
        ("anthropic", "claude-3-opus-20240229")
    );
    assert_eq!(
        (note.input_tokens, note.output_tokens, note.error),
        (Some(20), Some(10), None)
    );
    // claude-3-opus: $15 / $75 per million.
    assert_eq!(note.cost_usd, Some(Decimal::new(20 * 15 + 10 * 75, 6)));
    let sent = server.received();
    let prompt = sent[0].body["messages"][0]["content"].as_str().unwrap();
    assert!(
        prompt.contains("qty 0.0012") && prompt.contains("Open positions:"),
        "{prompt}"
    );
    assert!(sent[0].body.get("tools").is_none(), "a note needs no tool");
}

#[tokio::test]
async fn no_answer_to_the_retry_of_a_malformed_reply_is_a_timeout_not_a_reject() {
    let server = serve(vec![
        recorded("test_anthropic_model_instructions", 0),
        Canned::never(),
    ])
    .await;
    let short = HttpSettings {
        timeout: Duration::from_millis(500),
        ..settings(&server.base_url, "claude-sonnet-4-5")
    };
    let err = AnthropicReviewer::new(short)
        .unwrap()
        .review(&review_request())
        .await
        .unwrap_err();
    assert!(matches!(err, AiError::Timeout), "{err:?}");
    assert_eq!(server.received().len(), 2);
}
