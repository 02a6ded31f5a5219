//! Local stand-ins for Discord and an SMTP server: they record what they receive and answer
//! what the test scripts, and signal every arrival so tests wait on them, never sleep.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use coinpilot::notify::limits::WebhookPayload;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Notify as Signal;

/// One request the webhook sink received.
#[derive(Debug, Clone)]
pub struct Post {
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Post {
    /// The payload: the JSON body, or the `payload_json` part of a multipart one.
    pub fn payload(&self) -> WebhookPayload {
        let json = match self.multipart_part("payload_json") {
            Some(p) => p,
            None => self.body.clone(),
        };
        serde_json::from_slice(&json).expect("webhook payload is JSON")
    }

    /// The raw JSON, for shapes the typed payload does not keep.
    pub fn json(&self) -> serde_json::Value {
        let json = self
            .multipart_part("payload_json")
            .unwrap_or_else(|| self.body.clone());
        serde_json::from_slice(&json).expect("JSON")
    }

    /// The body of the form part named `name` (`multipart/form-data` only).
    pub fn multipart_part(&self, name: &str) -> Option<Vec<u8>> {
        let boundary = self
            .content_type
            .strip_prefix("multipart/form-data; boundary=")?;
        let delimiter = format!("--{boundary}");
        split(&self.body, delimiter.as_bytes())
            .into_iter()
            .find_map(|part| {
                let head_end = find(part, b"\r\n\r\n")?;
                let head = String::from_utf8_lossy(&part[..head_end]);
                let wanted = format!("name=\"{name}\"");
                head.contains(&wanted).then(|| {
                    let body = &part[head_end + 4..];
                    body.strip_suffix(b"\r\n").unwrap_or(body).to_vec()
                })
            })
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn split<'a>(mut hay: &'a [u8], delimiter: &[u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    while let Some(i) = find(hay, delimiter) {
        parts.push(&hay[..i]);
        hay = &hay[i + delimiter.len()..];
    }
    parts.push(hay);
    parts
}

/// A scripted answer: status, extra headers, body.
pub type Answer = (StatusCode, Vec<(&'static str, String)>, String);

#[derive(Default)]
struct SinkState {
    posts: Mutex<Vec<Post>>,
    script: Mutex<VecDeque<Answer>>,
    arrived: Signal,
}

/// The Discord webhook stand-in: answers `204 No Content` unless scripted otherwise.
#[derive(Clone)]
pub struct WebhookSink {
    state: Arc<SinkState>,
    pub url: String,
}

async fn receive(State(s): State<Arc<SinkState>>, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let answer = s.script.lock().unwrap().pop_front();
    s.posts.lock().unwrap().push(Post {
        content_type,
        body: body.to_vec(),
    });
    s.arrived.notify_waiters();
    match answer {
        None => StatusCode::NO_CONTENT.into_response(),
        Some((status, extra, body)) => {
            let mut r = (status, body).into_response();
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            for (k, v) in extra {
                r.headers_mut().insert(k, v.parse().unwrap());
            }
            r
        }
    }
}

impl WebhookSink {
    pub async fn start() -> WebhookSink {
        let state = Arc::new(SinkState::default());
        let app = Router::new()
            .route("/api/webhooks/1/secret-token", post(receive))
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        WebhookSink {
            state,
            url: format!("http://{addr}/api/webhooks/1/secret-token"),
        }
    }

    /// The next requests get these answers, in order.
    pub fn script(&self, answers: Vec<Answer>) {
        self.state.script.lock().unwrap().extend(answers);
    }

    pub fn posts(&self) -> Vec<Post> {
        self.state.posts.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived (panics after 30 s).
    pub async fn wait_for(&self, n: usize) -> Vec<Post> {
        wait_until(&self.state.arrived, || {
            let posts = self.posts();
            (posts.len() >= n).then_some(posts)
        })
        .await
    }
}

/// Runs `check` each time `signal` fires until it yields (30 s at most).
async fn wait_until<T>(signal: &Signal, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let notified = signal.notified();
        if let Some(v) = check() {
            return v;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            panic!("timed out waiting for the local server");
        }
    }
}

#[derive(Default)]
struct SmtpState {
    mails: Mutex<Vec<String>>,
    /// Refuse this many MAIL commands with a 451 before accepting.
    refuse: Mutex<usize>,
    refused: Mutex<usize>,
    arrived: Signal,
}

/// Just enough SMTP: greeting, EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT.
#[derive(Clone)]
pub struct SmtpSink {
    state: Arc<SmtpState>,
    pub url: String,
}

impl SmtpSink {
    pub async fn start(refuse_first: usize) -> SmtpSink {
        let state = Arc::new(SmtpState {
            refuse: Mutex::new(refuse_first),
            ..SmtpState::default()
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let s = state.clone();
        tokio::spawn(async move {
            loop {
                let (sock, _) = listener.accept().await.unwrap();
                tokio::spawn(session(sock, s.clone()));
            }
        });
        SmtpSink {
            state,
            url: format!("smtp://{addr}"),
        }
    }

    pub fn mails(&self) -> Vec<String> {
        self.state.mails.lock().unwrap().clone()
    }

    pub fn refused(&self) -> usize {
        *self.state.refused.lock().unwrap()
    }

    pub async fn wait_for_mail(&self) -> String {
        wait_until(&self.state.arrived, || self.mails().first().cloned()).await
    }

    pub async fn wait_for_refusal(&self) {
        wait_until(&self.state.arrived, || (self.refused() > 0).then_some(())).await
    }
}

async fn reply(w: &mut tokio::net::tcp::OwnedWriteHalf, text: &str) -> bool {
    w.write_all(format!("{text}\r\n").as_bytes()).await.is_ok()
}

async fn session(sock: tokio::net::TcpStream, s: Arc<SmtpState>) {
    let (read, mut write) = sock.into_split();
    let mut lines = BufReader::new(read).lines();
    if !reply(&mut write, "220 localhost ESMTP test").await {
        return;
    }
    while let Ok(Some(line)) = lines.next_line().await {
        let verb = line
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let answer = match verb.as_str() {
            "EHLO" | "HELO" => "250-localhost\r\n250 8BITMIME".to_string(),
            "MAIL" => {
                let mut refuse = s.refuse.lock().unwrap();
                if *refuse > 0 {
                    *refuse -= 1;
                    *s.refused.lock().unwrap() += 1;
                    s.arrived.notify_waiters();
                    "451 4.3.0 try again later".to_string()
                } else {
                    "250 OK".to_string()
                }
            }
            "RCPT" | "RSET" | "NOOP" => "250 OK".to_string(),
            "DATA" => {
                if !reply(&mut write, "354 end with <CRLF>.<CRLF>").await {
                    return;
                }
                let mut mail = String::new();
                while let Ok(Some(l)) = lines.next_line().await {
                    if l == "." {
                        break;
                    }
                    // Dot-stuffing (RFC 5321 4.5.2).
                    mail.push_str(
                        l.strip_prefix('.')
                            .filter(|_| l.starts_with(".."))
                            .unwrap_or(&l),
                    );
                    mail.push_str("\r\n");
                }
                s.mails.lock().unwrap().push(mail);
                s.arrived.notify_waiters();
                "250 OK queued".to_string()
            }
            "QUIT" => {
                let _closing = reply(&mut write, "221 bye").await;
                return;
            }
            _ => "502 command not implemented".to_string(),
        };
        if !reply(&mut write, &answer).await {
            return;
        }
    }
}

/// The base64 body of the mail's `image/png` part, decoded.
pub fn png_attachment(mail: &str) -> Vec<u8> {
    let start = mail
        .find("Content-Type: image/png")
        .expect("an image/png part");
    let part = &mail[start..];
    let body_start = part.find("\r\n\r\n").expect("part headers end") + 4;
    let body: String = part[body_start..]
        .lines()
        .take_while(|l| !l.starts_with("--"))
        .collect::<Vec<_>>()
        .concat();
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .expect("base64 PNG")
}

/// Width and height from a PNG's signature and IHDR chunk (panics when it is not a PNG).
pub fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.len() > 24, "too short for a PNG: {} bytes", png.len());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&png[12..16], b"IHDR", "IHDR first");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&png[16..20]), be(&png[20..24]))
}
