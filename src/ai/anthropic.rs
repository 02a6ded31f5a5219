//! The Anthropic Messages API reviewer: `POST {base_url}/v1/messages` with `x-api-key` and
//! `anthropic-version: 2023-06-01`. The review's JSON shape is enforced by a tool whose
//! `input_schema` is the answer schema, with `tool_choice` forcing that tool; the market
//! note is a plain text reply.

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde_json::{json, Value};

use super::http::Endpoint;
use super::parse::{parse_anthropic_note, parse_anthropic_review};
use super::prompt::{self, TOOL_NAME};
use super::{ask_twice, AiDecision, AiError, HttpSettings, MarketNote, MarketNoteRequest};
use super::{ReviewRequest, Reviewer};

pub const PROVIDER: &str = "anthropic";
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
pub const DEFAULT_MODEL: &str = "claude-sonnet-4-5";
/// The API version this client speaks (sent on every request).
pub const API_VERSION: &str = "2023-06-01";

/// A review answer is three short fields; a note four sentences. Small caps keep a
/// rambling model cheap.
const REVIEW_MAX_TOKENS: u32 = 512;
const NOTE_MAX_TOKENS: u32 = 400;

#[derive(Debug)]
pub struct AnthropicReviewer {
    endpoint: Endpoint,
    model: String,
    min_confidence: u8,
}

impl AnthropicReviewer {
    pub fn new(settings: HttpSettings) -> Result<Self, AiError> {
        let key = settings
            .api_key
            .ok_or_else(|| AiError::Config("the anthropic provider needs an API key".into()))?;
        let headers = [
            ("x-api-key", key, true),
            ("anthropic-version", API_VERSION.to_string(), false),
        ];
        Ok(AnthropicReviewer {
            endpoint: Endpoint::new(
                &settings.base_url,
                "/v1/messages",
                &headers,
                settings.timeout,
            )?,
            model: settings.model,
            min_confidence: settings.min_confidence,
        })
    }

    /// The request body of a review (public so tests and docs can show it).
    pub fn review_body(&self, req: &ReviewRequest) -> Value {
        json!({
            "model": self.model,
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

    fn note_body(&self, req: &MarketNoteRequest) -> Value {
        json!({
            "model": self.model,
            "max_tokens": NOTE_MAX_TOKENS,
            "system": prompt::NOTE_SYSTEM,
            "messages": [{"role": "user", "content": prompt::note_prompt(req)}],
        })
    }
}

impl Reviewer for AnthropicReviewer {
    fn provider(&self) -> &'static str {
        PROVIDER
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn review<'a>(&'a self, req: &'a ReviewRequest) -> BoxFuture<'a, Result<AiDecision, AiError>> {
        async move {
            let body = self.review_body(req);
            let attempts = ask_twice(&self.endpoint, &body, parse_anthropic_review).await?;
            Ok(attempts.into_decision(PROVIDER, &self.model, self.min_confidence))
        }
        .boxed()
    }

    fn market_note<'a>(
        &'a self,
        req: &'a MarketNoteRequest,
    ) -> BoxFuture<'a, Result<MarketNote, AiError>> {
        async move {
            let body = self.note_body(req);
            let attempts = ask_twice(&self.endpoint, &body, parse_anthropic_note).await?;
            Ok(attempts.into_note(PROVIDER, &self.model))
        }
        .boxed()
    }
}
