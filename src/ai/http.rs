//! The HTTP half both model providers share: one POST of a JSON body under a whole-request
//! timeout, and the mapping of a failed response to an [`AiError`] (429 → rate limited
//! with the server's `retry-after`, 529/5xx → overloaded, a spend/credit limit, 401/403
//! and any other 4xx → permanent). Anthropic and OpenAI-compatible servers both answer
//! errors as `{"error": {"type"|"code": …, "message": …}}`, so one mapping serves both.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use serde_json::Value;

use super::parse::cut;
use super::AiError;

/// One provider endpoint (`{base_url}{path}`) with its fixed headers (the key among them,
/// marked sensitive so it never shows in reqwest's debug output).
#[derive(Debug)]
pub(crate) struct Endpoint {
    client: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
}

impl Endpoint {
    pub fn new(
        base_url: &str,
        path: &str,
        headers: &[(&'static str, String, bool)],
        timeout: Duration,
    ) -> Result<Self, AiError> {
        let joined = format!("{}{path}", base_url.trim_end_matches('/'));
        let url = reqwest::Url::parse(&joined)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                AiError::Config(format!("ai.base_url `{base_url}` is not an http(s) URL"))
            })?;
        let mut map = HeaderMap::new();
        map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value, sensitive) in headers {
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                // Never echo the value: it may be the key.
                AiError::Config(format!(
                    "the value for header `{name}` is not a valid header"
                ))
            })?;
            value.set_sensitive(*sensitive);
            map.insert(HeaderName::from_static(name), value);
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| AiError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Endpoint {
            client,
            url,
            headers: map,
        })
    }

    /// POSTs `body`; a 2xx answer's body, or the classified failure.
    pub async fn post(&self, body: &Value) -> Result<Vec<u8>, AiError> {
        let response = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .json(body)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(transport)?;
        if (200..300).contains(&status) {
            Ok(bytes.to_vec())
        } else {
            Err(classify(status, &headers, &bytes))
        }
    }
}

fn transport(e: reqwest::Error) -> AiError {
    if e.is_timeout() {
        AiError::Timeout
    } else {
        // Our URL is the configured base URL, which holds no secret; keep it for diagnosis.
        AiError::Transport(e.to_string())
    }
}

/// The error a non-2xx response means.
pub(crate) fn classify(status: u16, headers: &HeaderMap, body: &[u8]) -> AiError {
    let (kind, message) = error_body(body);
    let text = format!("HTTP {status} {kind}: {message}");
    if is_spend_limit(&kind, &message) {
        // A 429 `insufficient_quota` (OpenAI) is a billing limit, not a rate limit:
        // waiting does not lift it.
        return AiError::Permanent(format!("spend limit reached ({text})"));
    }
    match status {
        429 => AiError::RateLimited {
            retry_after: retry_after(headers),
        },
        401 | 403 => AiError::Permanent(format!("the API key was refused ({text})")),
        // 408 request timeout: the server gave up waiting, another attempt may pass.
        408 => AiError::Timeout,
        // 529 is Anthropic's `overloaded_error`.
        500..=599 => AiError::Overloaded { status },
        _ => AiError::Permanent(text),
    }
}

/// `(type or code, message)` of an error body, whatever shape it has.
fn error_body(body: &[u8]) -> (String, String) {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return ("error".into(), cut(&String::from_utf8_lossy(body), 200));
    };
    let error = v.get("error").unwrap_or(&v);
    let pick = |key: &str| error.get(key).and_then(Value::as_str).map(str::to_string);
    let kind = pick("type")
        .or_else(|| pick("code"))
        .unwrap_or_else(|| "error".into());
    let message = pick("message").unwrap_or_else(|| cut(&v.to_string(), 200));
    (kind, cut(&message, 300))
}

fn is_spend_limit(kind: &str, message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    matches!(kind, "insufficient_quota" | "billing_error")
        || [
            "credit balance",
            "spend limit",
            "spending limit",
            "usage limit",
            "exceeded your current quota",
        ]
        .iter()
        .any(|w| message.contains(w))
}

/// A longer `retry-after` is not believed (and would overflow a `Duration`): a day.
const MAX_RETRY_AFTER_SECS: f64 = 86_400.0;

/// `retry-after` in seconds (integer or decimal), or `retry-after-ms`. An HTTP date is not
/// used by these providers and is ignored (the queue's backoff applies then).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| (0.0..MAX_RETRY_AFTER_SECS).contains(v))
    };
    number("retry-after-ms")
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .or_else(|| number("retry-after").map(Duration::from_secs_f64))
}
