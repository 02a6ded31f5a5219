//! The OpenAI-compatible reviewer against a local chat-completions server. No recorded
//! OpenAI payloads exist in `../shared`; the bodies follow the documented
//! `chat.completion` object (id, choices[].message.content/refusal, usage).

use std::time::Duration;

use coinpilot::ai::{AiError, OpenAiReviewer, Reviewer};
use coinpilot::domain::review::Verdict;
use rust_decimal::Decimal;
use serde_json::{json, Value};

use super::*;

fn completion(content: Value, refusal: Value) -> Canned {
    Canned::json(
        200,
        &json!({
            "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
            "object": "chat.completion",
            "created": 1741570283,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal, "annotations": []},
                "logprobs": null,
                "finish_reason": "stop"
            }],
            "usage": {"prompt_tokens": 1117, "completion_tokens": 46, "total_tokens": 1163},
            "service_tier": "default",
            "system_fingerprint": "fp_06737a9306"
        }),
    )
}

fn answer(decision: &str, confidence: Value) -> Canned {
    let text = json!({"decision": decision, "confidence": confidence, "reasoning": "volume spike at the lower band"});
    completion(json!(text.to_string()), Value::Null)
}

fn error_body(kind: &str, code: &str, message: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

async fn scripted(answers: Vec<Canned>) -> (OpenAiReviewer, Server) {
    let server = serve(answers).await;
    let base = format!("{}/v1", server.base_url);
    (
        OpenAiReviewer::new(settings(&base, "gpt-4o-mini")).unwrap(),
        server,
    )
}

#[tokio::test]
async fn a_schema_answer_becomes_the_decision_and_the_request_is_right() {
    let (reviewer, server) = scripted(vec![answer("CONFIRM", json!(64))]).await;
    let req = review_request();
    let d = reviewer.review(&req).await.unwrap();
    assert_eq!(
        (d.provider.as_str(), d.model.as_str()),
        ("openai", "gpt-4o-mini-2024-07-18")
    );
    assert_eq!(
        (d.verdict, d.confidence, d.confirmed, d.error),
        (Verdict::Confirm, 64, true, None)
    );
    assert_eq!((d.input_tokens, d.output_tokens), (Some(1117), Some(46)));
    // $0.15 / $0.60 per million tokens.
    assert_eq!(d.cost_usd, Some(Decimal::new(1117 * 15 + 46 * 60, 8)));

    let sent = server.received();
    assert_eq!(sent.len(), 1);
    let r = &sent[0];
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(header(r, "authorization"), format!("Bearer {KEY}"));
    assert_eq!(r.body["model"], "gpt-4o-mini");
    let format = &r.body["response_format"];
    assert_eq!(format["type"], "json_schema");
    assert_eq!(
        (
            &format["json_schema"]["name"],
            &format["json_schema"]["strict"]
        ),
        (&json!("record_review"), &json!(true))
    );
    let schema = &format["json_schema"]["schema"];
    assert_eq!(
        schema["properties"]["decision"]["enum"],
        json!(["CONFIRM", "REJECT"])
    );
    assert_eq!(schema["additionalProperties"], json!(false));
    assert_eq!(r.body["messages"][0]["role"], "system");
    assert_prompt_has_the_24_candles(r.body["messages"][1]["content"].as_str().unwrap(), &req);
}

#[tokio::test]
async fn malformed_then_good_and_malformed_twice() {
    let (reviewer, server) = scripted(vec![
        answer("CONFIRM", json!("high")),
        answer("REJECT", json!(80)),
    ])
    .await;
    let d = reviewer.review(&review_request()).await.unwrap();
    assert_eq!(
        (d.verdict, d.confidence, d.error),
        (Verdict::Reject, 80, None)
    );
    assert_eq!(d.input_tokens, Some(2 * 1117));
    assert_eq!(server.received().len(), 2);

    let (reviewer, server) = scripted(vec![
        completion(Value::Null, json!("I can't help with trading decisions.")),
        completion(json!("CONFIRM, 70"), Value::Null),
    ])
    .await;
    let d = reviewer.review(&review_request()).await.unwrap();
    assert_eq!(
        (d.verdict, d.confidence, d.confirmed),
        (Verdict::Reject, 0, false)
    );
    let error = d.error.unwrap();
    assert!(
        error.contains("refused") && error.contains("not a JSON object"),
        "{error}"
    );
    assert_eq!(server.received().len(), 2);
}

#[tokio::test]
async fn rate_limits_back_off_but_an_exhausted_quota_is_permanent() {
    let limited = Canned::json(
        429,
        &error_body(
            "requests",
            "rate_limit_exceeded",
            "Rate limit reached for gpt-4o-mini",
        ),
    )
    .with_header("retry-after", "3");
    let (reviewer, _server) = scripted(vec![limited]).await;
    let err = reviewer.review(&review_request()).await.unwrap_err();
    assert!(
        matches!(err, AiError::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(3)),
        "{err:?}"
    );

    let quota = error_body(
        "insufficient_quota",
        "insufficient_quota",
        "You exceeded your current quota, please check your plan and billing details.",
    );
    let (reviewer, _server) = scripted(vec![Canned::json(429, &quota)]).await;
    let err = reviewer.review(&review_request()).await.unwrap_err();
    assert!(
        matches!(&err, AiError::Permanent(m) if m.contains("spend limit")),
        "{err:?}"
    );
    assert!(err.into_job_error().permanent);
}

#[tokio::test]
async fn server_errors_back_off_and_a_bad_key_is_permanent() {
    let (reviewer, _server) = scripted(vec![Canned::json(
        503,
        &error_body("server_error", "", "The server is overloaded"),
    )])
    .await;
    let err = reviewer.review(&review_request()).await.unwrap_err();
    assert!(
        matches!(err, AiError::Overloaded { status: 503 }),
        "{err:?}"
    );
    assert!(!err.into_job_error().permanent);

    let bad_key = error_body(
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided: sk-test-****6789.",
    );
    let (reviewer, _server) = scripted(vec![Canned::json(401, &bad_key)]).await;
    let err = reviewer.review(&review_request()).await.unwrap_err();
    assert!(
        matches!(&err, AiError::Permanent(m) if m.contains("key was refused")),
        "{err:?}"
    );
    assert!(!err.to_string().contains(KEY));
}

#[tokio::test]
async fn a_silent_server_times_out_and_a_closed_port_is_a_transport_error() {
    let base = silent_server().await;
    let short = HttpSettings {
        timeout: Duration::from_millis(300),
        ..settings(&base, "gpt-4o-mini")
    };
    let err = OpenAiReviewer::new(short)
        .unwrap()
        .review(&review_request())
        .await
        .unwrap_err();
    assert!(matches!(err, AiError::Timeout), "{err:?}");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let closed = settings(&format!("http://127.0.0.1:{port}/v1"), "gpt-4o-mini");
    let err = OpenAiReviewer::new(closed)
        .unwrap()
        .review(&review_request())
        .await
        .unwrap_err();
    assert!(matches!(err, AiError::Transport(_)), "{err:?}");
    assert!(!err.into_job_error().permanent);
}

#[tokio::test]
async fn a_keyless_local_server_gets_no_authorization_and_writes_the_note() {
    let server = serve(vec![completion(
        json!("BULL regime; BTC flat over 24 h; one position slightly up."),
        Value::Null,
    )])
    .await;
    let local = HttpSettings {
        api_key: None,
        ..settings(&format!("{}/v1", server.base_url), "llama3.1:8b")
    };
    let note = OpenAiReviewer::new(local)
        .unwrap()
        .market_note(&note_request())
        .await
        .unwrap();
    assert_eq!(
        note.note,
        "BULL regime; BTC flat over 24 h; one position slightly up."
    );
    assert_eq!((note.provider.as_str(), note.error), ("openai", None));
    let sent = server.received();
    assert!(sent[0].headers.get("authorization").is_none());
    assert!(
        sent[0].body.get("response_format").is_none(),
        "a note is free text"
    );
    let prompt = sent[0].body["messages"][1]["content"].as_str().unwrap();
    assert!(
        prompt.contains("Open positions:\n- KRW-BTC qty 0.0012"),
        "{prompt}"
    );
}
