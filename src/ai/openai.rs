//! The OpenAI-compatible chat completions dialect: `POST {base_url}/chat/completions`
//! with `Authorization: Bearer <key>` (no header when no key is configured, for a local
//! server). The review's JSON shape is enforced by a strict `response_format`
//! `json_schema`; the market note is the plain message text. Works with any server
//! speaking that API (OpenAI, vLLM, Ollama, llama.cpp, LiteLLM, …).
//!
//! No token cap is sent: OpenAI's newer models refuse `max_tokens` and other servers do
//! not know `max_completion_tokens`; the schema keeps the answer short anyway.

use serde_json::{json, Value};

use super::llm::{Dialect, HttpReviewer};
use super::parse::{parse_openai_note, parse_openai_review};
use super::prompt::{self, TOOL_NAME};
use super::{AiError, MarketNoteRequest, ModelVerdict, Reply, ReviewRequest};

pub const PROVIDER: &str = "openai";
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";

/// The OpenAI-compatible reviewer: `OpenAiReviewer::new(HttpSettings { .. })`.
pub type OpenAiReviewer = HttpReviewer<OpenAi>;

#[derive(Debug)]
pub struct OpenAi;

impl Dialect for OpenAi {
    const PROVIDER: &'static str = PROVIDER;
    const PATH: &'static str = "/chat/completions";

    fn headers(key: Option<String>) -> Result<Vec<(&'static str, String, bool)>, AiError> {
        Ok(key
            .map(|key| ("authorization", format!("Bearer {key}"), true))
            .into_iter()
            .collect())
    }

    fn review_body(model: &str, req: &ReviewRequest) -> Value {
        json!({
            "model": model,
            "messages": [
                {"role": "system", "content": prompt::REVIEW_SYSTEM},
                {"role": "user", "content": prompt::review_prompt(req)},
            ],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": TOOL_NAME, "strict": true, "schema": strict_schema()},
            },
        })
    }

    fn note_body(model: &str, req: &MarketNoteRequest) -> Value {
        json!({
            "model": model,
            "messages": [
                {"role": "system", "content": prompt::NOTE_SYSTEM},
                {"role": "user", "content": prompt::note_prompt(req)},
            ],
        })
    }

    fn parse_review(body: &[u8]) -> Reply<ModelVerdict> {
        parse_openai_review(body)
    }

    fn parse_note(body: &[u8]) -> Reply<String> {
        parse_openai_note(body)
    }
}

/// The answer schema without `minimum`/`maximum`, which strict mode on some models and
/// servers rejects; the range is checked on the answer instead.
fn strict_schema() -> Value {
    let mut schema = prompt::verdict_schema();
    if let Some(confidence) = schema
        .pointer_mut("/properties/confidence")
        .and_then(Value::as_object_mut)
    {
        confidence.remove("minimum");
        confidence.remove("maximum");
    }
    schema
}
