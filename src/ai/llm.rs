//! The model-backed reviewer both HTTP providers share: [`HttpReviewer`] sends what a
//! [`Dialect`] (Anthropic Messages, OpenAI chat completions) builds, parses the reply with
//! the dialect's parser, applies the malformed-output-retried-once rule and turns the
//! result into an [`AiDecision`] / [`MarketNote`] with latency, tokens and cost. A dialect
//! is only data and pure functions; everything that talks to the network is here and in
//! `http`.

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde_json::Value;

use super::http::Endpoint;
use super::{price, AiDecision, AiError, MarketNote, MarketNoteRequest, ModelVerdict, Reply};
use super::{ReviewRequest, Reviewer};
use crate::domain::review::Verdict;

/// One provider's wire format.
pub trait Dialect: Send + Sync + std::fmt::Debug + 'static {
    /// "anthropic" | "openai": what `ai_decisions.provider` records.
    const PROVIDER: &'static str;
    /// Appended to the base URL.
    const PATH: &'static str;
    /// The fixed headers for `key`: (name, value, sensitive).
    fn headers(key: Option<String>) -> Result<Vec<(&'static str, String, bool)>, AiError>;
    fn review_body(model: &str, req: &ReviewRequest) -> Value;
    fn note_body(model: &str, req: &MarketNoteRequest) -> Value;
    fn parse_review(body: &[u8]) -> Reply<ModelVerdict>;
    fn parse_note(body: &[u8]) -> Reply<String>;
}

/// A reviewer that asks a model over HTTP in dialect `D`.
#[derive(Debug)]
pub struct HttpReviewer<D: Dialect> {
    endpoint: Endpoint,
    model: String,
    min_confidence: u8,
    /// Bounds the whole review, the malformed-output retry included (SPEC B4: 40 s).
    timeout: Duration,
    dialect: PhantomData<D>,
}

impl<D: Dialect> HttpReviewer<D> {
    pub fn new(settings: HttpSettings) -> Result<Self, AiError> {
        let headers = D::headers(settings.api_key)?;
        Ok(HttpReviewer {
            endpoint: Endpoint::new(&settings.base_url, D::PATH, &headers, settings.timeout)?,
            model: settings.model,
            min_confidence: settings.min_confidence,
            timeout: settings.timeout,
            dialect: PhantomData,
        })
    }

    /// [`ask_twice`] within the timeout: each request has it too, and a retry after a
    /// malformed reply gets only what is left of it.
    async fn ask<T>(
        &self,
        body: &Value,
        parse: fn(&[u8]) -> Reply<T>,
    ) -> Result<Attempts<T>, AiError> {
        tokio::time::timeout(self.timeout, ask_twice(&self.endpoint, body, parse))
            .await
            .map_err(|_| AiError::Timeout)?
    }

    /// The body a review request sends (for docs and tests).
    pub fn review_body(&self, req: &ReviewRequest) -> Value {
        D::review_body(&self.model, req)
    }
}

impl<D: Dialect> Reviewer for HttpReviewer<D> {
    fn provider(&self) -> &'static str {
        D::PROVIDER
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn review<'a>(&'a self, req: &'a ReviewRequest) -> BoxFuture<'a, Result<AiDecision, AiError>> {
        async move {
            let body = D::review_body(&self.model, req);
            let attempts = self.ask(&body, D::parse_review).await?;
            Ok(attempts.into_decision(D::PROVIDER, &self.model, self.min_confidence))
        }
        .boxed()
    }

    fn market_note<'a>(
        &'a self,
        req: &'a MarketNoteRequest,
    ) -> BoxFuture<'a, Result<MarketNote, AiError>> {
        async move {
            let body = D::note_body(&self.model, req);
            let attempts = self.ask(&body, D::parse_note).await?;
            Ok(attempts.into_note(D::PROVIDER, &self.model))
        }
        .boxed()
    }
}

/// What an HTTP reviewer needs. `Debug` masks the key.
#[derive(Clone)]
pub struct HttpSettings {
    /// Without a trailing path: `https://api.anthropic.com`, `https://api.openai.com/v1`.
    pub base_url: String,
    /// Required by Anthropic; an OpenAI-compatible server may need none.
    pub api_key: Option<String>,
    pub model: String,
    /// Bounds each request and the whole review ([`super::DEFAULT_TIMEOUT`]; tests make it short).
    pub timeout: Duration,
    /// `confirmed` needs CONFIRM and at least this confidence.
    pub min_confidence: u8,
}

impl std::fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSettings")
            .field("base_url", &self.base_url)
            .field(
                "api_key",
                &self.api_key.as_ref().map(|_| crate::config::secrets::MASK),
            )
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .field("min_confidence", &self.min_confidence)
            .finish()
    }
}

/// The outcome of up to two attempts (the second only when the first was malformed).
struct Attempts<T> {
    content: Result<T, String>,
    model: Option<String>,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    latency_ms: i64,
}

/// SPEC B4's "malformed output is retried once": POSTs `body` and, if `parse` finds the
/// reply unusable, once more. HTTP failures are returned at once (the queue retries those).
async fn ask_twice<T>(
    endpoint: &Endpoint,
    body: &Value,
    parse: fn(&[u8]) -> Reply<T>,
) -> Result<Attempts<T>, AiError> {
    let started = Instant::now();
    let first = parse(&endpoint.post(body).await?);
    let mut out = Attempts {
        content: first.content,
        model: first.model,
        input_tokens: first.input_tokens,
        output_tokens: first.output_tokens,
        latency_ms: 0,
    };
    if let Err(first_error) = &out.content {
        tracing::warn!(error = %first_error, "malformed AI output; asking once more");
        let second = parse(&endpoint.post(body).await?);
        out.content = second
            .content
            .map_err(|e| format!("malformed output twice: first: {first_error}; then: {e}"));
        out.model = second.model.or(out.model);
        out.input_tokens = add_tokens(out.input_tokens, second.input_tokens);
        out.output_tokens = add_tokens(out.output_tokens, second.output_tokens);
    }
    out.latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    Ok(out)
}

fn add_tokens(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
    }
}

impl Attempts<ModelVerdict> {
    /// The decision to record: the model's verdict, or REJECT/0 with the error.
    fn into_decision(
        self,
        provider: &'static str,
        configured_model: &str,
        min_confidence: u8,
    ) -> AiDecision {
        let model = self.model.unwrap_or_else(|| configured_model.to_string());
        let cost_usd = price::cost_usd(&model, self.input_tokens, self.output_tokens);
        let (verdict, error) = match self.content {
            Ok(v) => (v, None),
            Err(e) => (
                ModelVerdict {
                    verdict: Verdict::Reject,
                    confidence: 0,
                    reasoning: format!("rejected: the model's answer was unusable ({e})"),
                },
                Some(e),
            ),
        };
        AiDecision {
            provider: provider.to_string(),
            confirmed: verdict.verdict == Verdict::Confirm && verdict.confidence >= min_confidence,
            verdict: verdict.verdict,
            confidence: verdict.confidence,
            reasoning: verdict.reasoning,
            model,
            latency_ms: self.latency_ms,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cost_usd,
            error,
        }
    }
}

impl Attempts<String> {
    /// The note to post: the model's text, or a line saying it was unusable.
    fn into_note(self, provider: &'static str, configured_model: &str) -> MarketNote {
        let model = self.model.unwrap_or_else(|| configured_model.to_string());
        let cost_usd = price::cost_usd(&model, self.input_tokens, self.output_tokens);
        let (note, error) = match self.content {
            Ok(note) => (note, None),
            Err(e) => (format!("AI market note unavailable: {e}"), Some(e)),
        };
        MarketNote {
            provider: provider.to_string(),
            model,
            note,
            latency_ms: self.latency_ms,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cost_usd,
            error,
        }
    }
}
