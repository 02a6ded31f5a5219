//! The Discord webhook client: posts one payload (JSON, or multipart with `payload_json`
//! and `files[0]` when a PNG goes with it) and maps the answer to a job outcome, per
//! opcodes-and-status-codes.mdx and rate-limits.mdx: 2xx done; 429 waits `retry_after`
//! (body, else the `Retry-After` header); 5xx and network errors retry with backoff;
//! any other 4xx (400 bad payload, 401, 403, 404 unknown webhook) is permanent.
//!
//! The webhook URL is a secret: it never appears in an error or a log line (reqwest's
//! errors are stripped of it with `without_url`).

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::multipart::{Form, Part};
use reqwest::StatusCode;

use super::embeds::REPORT_PNG;
use super::limits::{self, Attachment, WebhookPayload};
use crate::queue::JobError;

/// Discord answers in well under a second; a hung connection must not hold the job.
const TIMEOUT: Duration = Duration::from_secs(30);
/// When a 429 says neither in its body nor in its header how long to wait.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);
/// How much of an error body goes into the job's error (Discord's JSON errors are short).
const ERROR_BODY_MAX: usize = 500;

#[derive(Clone)]
pub struct DiscordWebhook {
    url: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for DiscordWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscordWebhook")
            .field("url", &crate::config::secrets::MASK)
            .finish()
    }
}

impl DiscordWebhook {
    /// Checks the URL's scheme only: anything else about it would leak in an error.
    pub fn new(url: &str) -> Result<DiscordWebhook, super::NotifyError> {
        let url = url.trim();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(super::NotifyError::Config {
                key: "COINPILOT_DISCORD_WEBHOOK_URL",
                message: "must be an http(s) URL".into(),
            });
        }
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| super::NotifyError::Config {
                key: "COINPILOT_DISCORD_WEBHOOK_URL",
                message: format!("HTTP client: {}", e.without_url()),
            })?;
        Ok(DiscordWebhook {
            url: url.to_string(),
            http,
        })
    }

    /// Posts `payload` (cut to Discord's limits first), with `png` as `files[0]`.
    pub async fn send(
        &self,
        payload: WebhookPayload,
        png: Option<Vec<u8>>,
    ) -> Result<(), JobError> {
        let mut payload = limits::enforce(payload);
        let request = match png {
            None => self.http.post(&self.url).json(&payload),
            Some(bytes) => {
                payload.attachments = vec![Attachment {
                    id: 0,
                    filename: REPORT_PNG.into(),
                }];
                let json = serde_json::to_string(&payload)?;
                let file = Part::bytes(bytes)
                    .file_name(REPORT_PNG)
                    .mime_str("image/png")
                    .map_err(|e| JobError::permanent(e.without_url().to_string()))?;
                let json = Part::text(json)
                    .mime_str("application/json")
                    .map_err(|e| JobError::permanent(e.without_url().to_string()))?;
                let form = Form::new()
                    .part("payload_json", json)
                    .part("files[0]", file);
                self.http.post(&self.url).multipart(form)
            }
        };
        let response = request
            .send()
            .await
            .map_err(|e| JobError::retry(format!("Discord webhook: {}", e.without_url())))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let headers = response.headers().clone();
        let body = response.text().await.unwrap_or_default();
        Err(classify(status, &headers, &body))
    }
}

/// The job error for a non-2xx answer.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &str) -> JobError {
    let detail = limits::truncate(body.trim(), ERROR_BODY_MAX);
    if status == StatusCode::TOO_MANY_REQUESTS {
        let wait = retry_after(headers, body).unwrap_or(DEFAULT_RETRY_AFTER);
        return JobError::retry_after(
            format!(
                "Discord rate limit (429), retry after {:.3} s: {detail}",
                wait.as_secs_f64()
            ),
            wait,
        );
    }
    let message = format!("Discord webhook answered {status}: {detail}");
    if status.is_server_error() {
        JobError::retry(message)
    } else {
        JobError::permanent(message)
    }
}

/// A 429's wait: the body's `retry_after` (float seconds), else the `Retry-After` header.
pub fn retry_after(headers: &HeaderMap, body: &str) -> Option<Duration> {
    let from_body = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("retry_after").and_then(serde_json::Value::as_f64));
    let from_header = || {
        headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    from_body
        .or_else(from_header)
        .filter(|s| s.is_finite() && *s >= 0.0)
        // An absurd value (a bug, or a day-long ban) still retries within the hour.
        .map(|s| Duration::from_secs_f64(s.min(3600.0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn a_429_waits_for_the_body_retry_after_then_the_header() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        let body =
            r#"{"message":"You are being rate limited.","retry_after":64.57,"global":false}"#;
        let e = classify(StatusCode::TOO_MANY_REQUESTS, &h, body);
        assert!(!e.permanent);
        assert_eq!(e.retry_after, Some(Duration::from_secs_f64(64.57)));
        let e = classify(StatusCode::TOO_MANY_REQUESTS, &h, "not json");
        assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
    }

    #[test]
    fn server_errors_retry_and_client_errors_are_permanent() {
        let h = HeaderMap::new();
        let e = classify(StatusCode::BAD_GATEWAY, &h, "");
        assert!(!e.permanent && e.retry_after.is_none());
        for s in [
            StatusCode::BAD_REQUEST,
            StatusCode::UNAUTHORIZED,
            StatusCode::NOT_FOUND,
        ] {
            let e = classify(s, &h, r#"{"message": "Unknown Webhook", "code": 10015}"#);
            assert!(e.permanent, "{s}");
            assert!(e.message.contains("Unknown Webhook"), "{}", e.message);
        }
    }

    #[test]
    fn the_url_never_shows_in_debug() {
        let d = DiscordWebhook::new("https://discord.com/api/webhooks/1/secret-token").unwrap();
        assert!(!format!("{d:?}").contains("secret-token"));
        assert!(DiscordWebhook::new("ftp://x").is_err());
    }
}
