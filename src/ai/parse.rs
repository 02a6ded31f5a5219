//! Pure parsers of the providers' successful (HTTP 200) reply bodies: bytes in, a
//! [`Reply`] out, whose `content` is either a validated answer or a message saying what was
//! wrong with it. They never panic and never fail as a whole: token usage is kept even when
//! the answer itself is malformed, because those tokens were paid for.

use serde_json::Value;

use super::prompt::TOOL_NAME;
use super::ModelVerdict;
use crate::domain::review::Verdict;

/// Reasoning longer than this is cut: it is stored and posted, not read by a program.
pub const MAX_REASONING_CHARS: usize = 2000;
/// A market note longer than this is cut (it must fit a Discord embed).
pub const MAX_NOTE_CHARS: usize = 1500;

/// One provider reply: the answer (or why it is unusable) and what the reply reported.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply<T> {
    pub content: Result<T, String>,
    pub model: Option<String>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
}

impl<T> Reply<T> {
    fn malformed(message: String) -> Self {
        Reply {
            content: Err(message),
            model: None,
            input_tokens: None,
            output_tokens: None,
        }
    }
}

/// Anthropic Messages reply to the review request: the forced `record_review` tool call.
pub fn parse_anthropic_review(body: &[u8]) -> Reply<ModelVerdict> {
    anthropic_reply(body, |message| {
        let blocks = content_blocks(message)?;
        let call = blocks
            .iter()
            .find(|b| field_str(b, "type") == Some("tool_use"))
            .ok_or_else(|| no_tool_call(message))?;
        match field_str(call, "name") {
            Some(TOOL_NAME) => {}
            other => {
                return Err(format!(
                    "the tool called was {}, not `{TOOL_NAME}`",
                    shown(&other.map_or(Value::Null, |s| Value::String(s.into())))
                ))
            }
        }
        let input = call
            .get("input")
            .ok_or_else(|| "the tool call has no `input`".to_string())?;
        validate_verdict(input)
    })
}

/// Anthropic Messages reply to the market-note request: its text blocks, joined.
pub fn parse_anthropic_note(body: &[u8]) -> Reply<String> {
    anthropic_reply(body, |message| {
        let text: Vec<&str> = content_blocks(message)?
            .iter()
            .filter(|b| field_str(b, "type") == Some("text"))
            .filter_map(|b| field_str(b, "text"))
            .collect();
        validate_note(&text.join("\n"))
    })
}

/// OpenAI chat completion reply to the review request: a JSON object in the message.
pub fn parse_openai_review(body: &[u8]) -> Reply<ModelVerdict> {
    openai_reply(body, |text| {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| format!("the message is not a JSON object: {e}"))?;
        validate_verdict(&value)
    })
}

/// OpenAI chat completion reply to the market-note request: the message text.
pub fn parse_openai_note(body: &[u8]) -> Reply<String> {
    openai_reply(body, validate_note)
}

fn anthropic_reply<T>(body: &[u8], answer: impl FnOnce(&Value) -> Result<T, String>) -> Reply<T> {
    match json_object(body) {
        Ok(message) => {
            let content = answer(&message);
            reply(&message, content, ["input_tokens", "output_tokens"])
        }
        Err(e) => Reply::malformed(e),
    }
}

fn openai_reply<T>(body: &[u8], answer: impl FnOnce(&str) -> Result<T, String>) -> Reply<T> {
    let completion = match json_object(body) {
        Ok(c) => c,
        Err(e) => return Reply::malformed(e),
    };
    let content = completion
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .and_then(|c| c.get("message"))
        .ok_or_else(|| "the reply has no `choices[0].message`".to_string())
        .and_then(|message| {
            if let Some(refusal) = field_str(message, "refusal") {
                return Err(format!("the model refused: {}", cut(refusal, 200)));
            }
            field_str(message, "content")
                .ok_or_else(|| "the message has no text `content`".to_string())
        })
        .and_then(answer);
    reply(&completion, content, ["prompt_tokens", "completion_tokens"])
}

/// The reply's `model` and its `usage` counts under the provider's `[input, output]` keys.
fn reply<T>(body: &Value, content: Result<T, String>, keys: [&str; 2]) -> Reply<T> {
    let count = |key: &str| body.get("usage")?.get(key)?.as_i64();
    Reply {
        content,
        model: field_str(body, "model").map(str::to_string),
        input_tokens: count(keys[0]),
        output_tokens: count(keys[1]),
    }
}

/// `{"decision": "CONFIRM"|"REJECT", "confidence": 0..=100, "reasoning": "…"}`.
pub(crate) fn validate_verdict(v: &Value) -> Result<ModelVerdict, String> {
    if !v.is_object() {
        return Err(format!("the answer is not an object: {}", shown(v)));
    }
    let decision = v.get("decision").unwrap_or(&Value::Null);
    let verdict = match decision.as_str() {
        Some("CONFIRM") => Verdict::Confirm,
        Some("REJECT") => Verdict::Reject,
        _ => {
            return Err(format!(
                "`decision` must be CONFIRM or REJECT, got {}",
                shown(decision)
            ))
        }
    };
    let confidence = v.get("confidence").unwrap_or(&Value::Null);
    let confidence = confidence
        .as_u64()
        .filter(|c| *c <= 100)
        .and_then(|c| u8::try_from(c).ok())
        .ok_or_else(|| {
            format!(
                "`confidence` must be an integer 0–100, got {}",
                shown(confidence)
            )
        })?;
    let reasoning = v.get("reasoning").unwrap_or(&Value::Null);
    let reasoning = reasoning
        .as_str()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            format!(
                "`reasoning` must be a non-empty string, got {}",
                shown(reasoning)
            )
        })?;
    Ok(ModelVerdict {
        verdict,
        confidence,
        reasoning: cut(reasoning, MAX_REASONING_CHARS),
    })
}

fn validate_note(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("the reply has no text".into());
    }
    Ok(cut(text, MAX_NOTE_CHARS))
}

fn json_object(body: &[u8]) -> Result<Value, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "the reply body is not JSON ({e}): {:?}",
            cut(&String::from_utf8_lossy(body), 80)
        )
    })?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(format!(
            "the reply body is not a JSON object: {}",
            shown(&value)
        ))
    }
}

fn content_blocks(message: &Value) -> Result<&Vec<Value>, String> {
    message
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| "the reply has no `content` array".to_string())
}

fn no_tool_call(message: &Value) -> String {
    let stop = field_str(message, "stop_reason").unwrap_or("none");
    format!("the reply has no `{TOOL_NAME}` tool call (stop_reason {stop})")
}

fn field_str<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

/// A value for an error message: short, whatever the model sent.
fn shown(v: &Value) -> String {
    cut(&v.to_string(), 80)
}

/// The first `max` characters of `s` (never splits a character), with "…" when cut.
pub(crate) fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}
