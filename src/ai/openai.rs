//! The OpenAI-compatible chat completions reviewer: `POST {base_url}/chat/completions`
//! with `Authorization: Bearer <key>`. The review's JSON shape is enforced by a strict
//! `response_format` `json_schema`; the market note is the plain message text. Works with
//! any server speaking that API (OpenAI, vLLM, Ollama, llama.cpp, LiteLLM, …).

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde_json::{json, Value};

use super::http::Endpoint;
use super::parse::{parse_openai_note, parse_openai_review};
use super::prompt::{self, TOOL_NAME};
use super::{ask_twice, AiDecision, AiError, HttpSettings, MarketNote, MarketNoteRequest};
use super::{ReviewRequest, Reviewer};

pub const PROVIDER: &str = "openai";
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";

#[derive(Debug)]
pub struct OpenAiReviewer {
    endpoint: Endpoint,
    model: String,
    min_confidence: u8,
}

impl OpenAiReviewer {
    pub fn new(settings: HttpSettings) -> Result<Self, AiError> {
        let headers: Vec<_> = settings
            .api_key
            .map(|key| ("authorization", format!("Bearer {key}"), true))
            .into_iter()
            .collect();
        Ok(OpenAiReviewer {
            endpoint: Endpoint::new(
                &settings.base_url,
                "/chat/completions",
                &headers,
                settings.timeout,
            )?,
            model: settings.model,
            min_confidence: settings.min_confidence,
        })
    }

    /// The request body of a review. No token cap: OpenAI's newer models refuse
    /// `max_tokens` and other servers do not know `max_completion_tokens`; the schema keeps
    /// the answer short anyway.
    pub fn review_body(&self, req: &ReviewRequest) -> Value {
        json!({
            "model": self.model,
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

    fn note_body(&self, req: &MarketNoteRequest) -> Value {
        json!({
            "model": self.model,
            "messages": [
                {"role": "system", "content": prompt::NOTE_SYSTEM},
                {"role": "user", "content": prompt::note_prompt(req)},
            ],
        })
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

impl Reviewer for OpenAiReviewer {
    fn provider(&self) -> &'static str {
        PROVIDER
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn review<'a>(&'a self, req: &'a ReviewRequest) -> BoxFuture<'a, Result<AiDecision, AiError>> {
        async move {
            let body = self.review_body(req);
            let attempts = ask_twice(&self.endpoint, &body, parse_openai_review).await?;
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
            let attempts = ask_twice(&self.endpoint, &body, parse_openai_note).await?;
            Ok(attempts.into_note(PROVIDER, &self.model))
        }
        .boxed()
    }
}
