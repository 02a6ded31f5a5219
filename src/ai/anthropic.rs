//! The Anthropic Messages API dialect: `POST {base_url}/v1/messages` with `x-api-key` and
//! `anthropic-version: 2023-06-01`. The review's JSON shape is enforced by a tool whose
//! `input_schema` is the answer schema, with `tool_choice` forcing that tool; the market
//! note is a plain text reply.

use serde_json::{json, Value};

use super::llm::{Dialect, HttpReviewer};
use super::parse::{parse_anthropic_note, parse_anthropic_review};
use super::prompt::{self, TOOL_NAME};
use super::{AiError, MarketNoteRequest, ModelVerdict, Reply, ReviewRequest};

pub const PROVIDER: &str = "anthropic";
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
pub const DEFAULT_MODEL: &str = "claude-sonnet-4-5";
/// The API version this client speaks (sent on every request).
pub const API_VERSION: &str = "2023-06-01";

/// A review answer is three short fields, a note four sentences: small caps keep a
/// rambling model cheap.
const REVIEW_MAX_TOKENS: u32 = 512;
const NOTE_MAX_TOKENS: u32 = 400;

/// The Anthropic reviewer: `AnthropicReviewer::new(HttpSettings { .. })`.
pub type AnthropicReviewer = HttpReviewer<Anthropic>;

#[derive(Debug)]
pub struct Anthropic;

impl Dialect for Anthropic {
    const PROVIDER: &'static str = PROVIDER;
    const PATH: &'static str = "/v1/messages";

    fn headers(key: Option<String>) -> Result<Vec<(&'static str, String, bool)>, AiError> {
        let key =
            key.ok_or_else(|| AiError::Config("the anthropic provider needs an API key".into()))?;
        Ok(vec![
            ("x-api-key", key, true),
            ("anthropic-version", API_VERSION.to_string(), false),
        ])
    }

    fn review_body(model: &str, req: &ReviewRequest) -> Value {
        json!({
            "model": model,
            "max_tokens": REVIEW_MAX_TOKENS,
            "system": prompt::REVIEW_SYSTEM,
            "messages": [{"role": "user", "content": prompt::review_prompt(req)}],
            "tools": [{
                "name": TOOL_NAME,
                "description": "Records the review of the entry signal.",
                "input_schema": prompt::verdict_schema(),
            }],
            "tool_choice": {"type": "tool", "name": TOOL_NAME},
        })
    }

    fn note_body(model: &str, req: &MarketNoteRequest) -> Value {
        json!({
            "model": model,
            "max_tokens": NOTE_MAX_TOKENS,
            "system": prompt::NOTE_SYSTEM,
            "messages": [{"role": "user", "content": prompt::note_prompt(req)}],
        })
    }

    fn parse_review(body: &[u8]) -> Reply<ModelVerdict> {
        parse_anthropic_review(body)
    }

    fn parse_note(body: &[u8]) -> Reply<String> {
        parse_anthropic_note(body)
    }
}
