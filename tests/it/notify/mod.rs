//! Notifications through the real queue (SPEC B7): a local Discord webhook sink, a local
//! SMTP server and the file sink receive what `notify` jobs deliver.

mod sinks;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::StatusCode;
use chrono::{DateTime, Duration as Span, NaiveDate, Utc};
use coinpilot::clock::{Clock, ManualClock, SharedClock};
use coinpilot::config::{Config, Secrets};
use coinpilot::notify::embeds::{AMBER, GREEN, RED};
use coinpilot::notify::files::FileSink;
use coinpilot::notify::limits::violations;
use coinpilot::notify::report::{HEIGHT, WIDTH};
use coinpilot::notify::*;
use coinpilot::queue::runtime::WorkerEvent;
use coinpilot::queue::{HandlerRegistry, JobId, Worker};
use rust_decimal::Decimal;
use serde_json::Value;

use crate::support::{manual_clock, registry, test_config, RunningWorker, TestDb};
use sinks::{png_attachment, png_size, SmtpSink, WebhookSink};

struct Setup {
    db: TestDb,
    clock: ManualClock,
    worker: RunningWorker,
    reports: PathBuf,
}

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

fn reports_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "coinpilot-notify-{}-{}",
        std::process::id(),
        NEXT_DIR.fetch_add(1, Ordering::SeqCst)
    ));
    let _fresh = std::fs::remove_dir_all(&dir);
    dir
}

/// Everything but the worker: a test may enqueue before any job can run.
struct Parts {
    db: TestDb,
    clock: ManualClock,
    shared: SharedClock,
    registry: HandlerRegistry,
    reports: PathBuf,
}

/// A `Notify` built from config like `coinpilot up` builds it.
async fn parts(webhook: Option<&str>, smtp: Option<&str>) -> Parts {
    let db = TestDb::new().await;
    let (clock, shared) = manual_clock();
    let reports = reports_dir();
    let mut cfg = Config::default();
    cfg.notify.reports_dir = Some(reports.clone());
    cfg.notify.email_recipients = vec!["ops@example.com".into()];
    let (webhook, smtp) = (webhook.map(String::from), smtp.map(String::from));
    let secrets = Secrets::from_env(&|k: &str| match k {
        "COINPILOT_DISCORD_WEBHOOK_URL" => webhook.clone(),
        "COINPILOT_SMTP_URL" => smtp.clone(),
        _ => None,
    });
    let notify = Notify::from_config(&cfg, &secrets).expect("notify from config");
    let mut registry = registry();
    registry.register(notify);
    Parts {
        db,
        clock,
        shared,
        registry,
        reports,
    }
}

impl Parts {
    /// Starts a worker serving queue `notify`.
    fn start(self) -> Setup {
        let mut wcfg = test_config("notify-worker");
        wcfg.queues = vec![(QUEUE.to_string(), None)];
        let worker = Worker::new(self.db.pool.clone(), self.shared, self.registry, wcfg);
        Setup {
            db: self.db,
            clock: self.clock,
            worker: RunningWorker::start(worker),
            reports: self.reports,
        }
    }
}

async fn setup(webhook: Option<&str>, smtp: Option<&str>) -> Setup {
    parts(webhook, smtp).await.start()
}

async fn enqueue_on(db: &TestDb, now: DateTime<Utc>, m: &Message) -> JobId {
    let mut tx = db.pool.begin().await.unwrap();
    let e = enqueue(&mut tx, now, m, None).await.unwrap();
    tx.commit().await.unwrap();
    e.id
}

impl Setup {
    async fn enqueue(&self, m: &Message) -> JobId {
        enqueue_on(&self.db, self.clock.now(), m).await
    }

    async fn completed(&mut self, id: JobId) {
        self.worker
            .wait_for(30, |e| *e == WorkerEvent::Completed(id))
            .await;
    }

    async fn failed(&mut self, id: JobId) -> bool {
        match self
            .worker
            .wait_for(
                30,
                |e| matches!(e, WorkerEvent::Failed { id: i, .. } if *i == id),
            )
            .await
        {
            WorkerEvent::Failed { discarded, .. } => discarded,
            _ => unreachable!(),
        }
    }

    async fn job(&self, id: JobId) -> (String, i32, DateTime<Utc>, Value) {
        sqlx::query_as("SELECT state::text, attempt, run_at, errors FROM jobs WHERE id = $1")
            .bind(id.0)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }
}

fn t0() -> DateTime<Utc> {
    "2025-09-09T03:00:00Z".parse().unwrap()
}

fn fill(side: &str) -> Message {
    Message::Fill(FillNote {
        mode: "paper".into(),
        market: "KRW-BTC".into(),
        side: side.into(),
        price: Decimal::from(152_300_000),
        quantity: Decimal::new(131_000, 8),
        fee: Decimal::new(9975, 2),
        client_order_id: format!("cp-{side}-1"),
        filled_at: t0(),
        reason: Some("ema cross".into()),
        pnl: (side == "sell").then(|| Decimal::from(-1200)),
        balance_after: Decimal::from(800_000),
    })
}

fn ai_decision(reasoning: String) -> Message {
    Message::AiDecision(AiDecisionNote {
        market: "KRW-BTC".into(),
        provider: "rules".into(),
        model: "rules (offline)".into(),
        verdict: "CONFIRM".into(),
        confidence: 72,
        confirmed: true,
        reasoning,
        decided_at: t0(),
        error: None,
    })
}

fn alert(severity: Severity, title: String) -> Message {
    Message::Alert(AlertNote {
        severity,
        title,
        detail: "last candle 2025-09-09T02:54Z".into(),
        at: t0(),
    })
}

/// A small day: an hour of closes with one round trip.
fn report() -> Message {
    let day = NaiveDate::from_ymd_opt(2025, 9, 9).unwrap();
    let prices: Vec<PricePoint> = (0..60)
        .map(|i| PricePoint {
            t: t0() + Span::minutes(i),
            v: Decimal::from(150_000_000 + (i % 7) * 90_000),
        })
        .collect();
    let marker = |i: usize, side: &str| Marker {
        t: prices[i].t,
        price: prices[i].v,
        side: side.into(),
    };
    Message::DailyReport(Box::new(DailyReport {
        day,
        market: "KRW-BTC".into(),
        mode: "paper".into(),
        reviewer: "rules (offline)".into(),
        equity_start: Decimal::from(1_000_000),
        equity_end: Decimal::from(1_004_000),
        realized_pnl: Decimal::from(4_000),
        unrealized_pnl: Decimal::ZERO,
        trades: vec![],
        wins: 1,
        losses: 0,
        max_drawdown_pct: 0.4,
        ai_confirms: 1,
        ai_rejects: 0,
        ai_avg_confidence: Some(72.0),
        regime: Some("uptrend".into()),
        open_positions: vec![],
        markers: vec![marker(10, "buy"), marker(40, "sell")],
        equity: prices
            .iter()
            .map(|p| PricePoint {
                t: p.t,
                v: p.v / Decimal::from(150),
            })
            .collect(),
        prices,
    }))
}

fn title(p: &sinks::Post) -> String {
    p.payload().embeds[0].title.clone().unwrap_or_default()
}

#[tokio::test]
async fn each_message_kind_is_posted_with_its_embed_shape_and_colour() {
    let sink = WebhookSink::start().await;
    let mut s = setup(Some(&sink.url), None).await;
    let messages = [
        fill("buy"),
        fill("sell"),
        ai_decision("RSI 48 and rising, above the 200h EMA".into()),
        alert(Severity::Critical, "Upbit answered 418".into()),
        alert(Severity::Warning, "no new candle for 5 minutes".into()),
        Message::Risk(RiskNote {
            event: RiskEvent::CooldownStarted {
                until: t0() + Span::hours(24),
            },
            at: t0(),
            detail: "third consecutive loss".into(),
        }),
    ];
    for m in &messages {
        let id = s.enqueue(m).await;
        s.completed(id).await;
    }
    let posts = sink.wait_for(messages.len()).await;
    let by_title = |prefix: &str| {
        posts
            .iter()
            .find(|p| title(p).starts_with(prefix))
            .unwrap_or_else(|| panic!("no post titled {prefix}…"))
            .payload()
    };
    assert_eq!(by_title("BUY KRW-BTC").embeds[0].color, Some(GREEN));
    let sell = by_title("SELL KRW-BTC");
    assert_eq!(sell.embeds[0].color, Some(RED));
    let pnl = sell.embeds[0]
        .fields
        .iter()
        .find(|f| f.name == "PnL")
        .unwrap();
    assert_eq!(pnl.value, "-1200 KRW");
    let ai = by_title("AI review KRW-BTC");
    let e = &ai.embeds[0];
    assert!(e.description.as_deref().unwrap().contains("RSI 48"));
    let field = |n: &str| e.fields.iter().find(|f| f.name == n).unwrap().value.clone();
    assert_eq!(
        (field("Decision"), field("Confidence")),
        ("CONFIRM".into(), "72/100".into())
    );
    assert_eq!(by_title("CRITICAL").embeds[0].color, Some(RED));
    assert_eq!(by_title("Warning").embeds[0].color, Some(AMBER));
    let risk = by_title("Cooldown started");
    assert_eq!(risk.embeds[0].fields[0].value, "2025-09-10 03:00 UTC");
    for p in &posts {
        assert!(
            p.content_type.starts_with("application/json"),
            "{}",
            p.content_type
        );
        assert!(violations(&p.payload()).is_empty());
    }
    s.worker.shutdown().await;
}

#[tokio::test]
async fn oversized_texts_reach_discord_within_every_limit() {
    let sink = WebhookSink::start().await;
    let mut s = setup(Some(&sink.url), None).await;
    // Hangul and emoji at every cut: a byte-based cut would split them or panic.
    let huge = "비트코인😀".repeat(3000);
    for m in [
        ai_decision(huge.clone()),
        alert(Severity::Critical, huge.clone()),
    ] {
        let id = s.enqueue(&m).await;
        s.completed(id).await;
    }
    for p in sink.wait_for(2).await {
        let payload = p.payload();
        assert_eq!(violations(&payload), Vec::<String>::new());
        let e = &payload.embeds[0];
        // The AI decision's reasoning is its description; the alert's title is the text.
        let cut = [&e.title, &e.description]
            .into_iter()
            .flatten()
            .max_by_key(|t| t.len())
            .unwrap();
        assert!(cut.ends_with('…'), "a cut text ends in an ellipsis");
        assert!(huge.starts_with(cut.trim_end_matches('…').trim_start_matches("CRITICAL: ")));
    }
    s.worker.shutdown().await;
}

#[tokio::test]
async fn a_429_retries_the_job_no_earlier_than_its_retry_after() {
    let sink = WebhookSink::start().await;
    sink.script(vec![(
        StatusCode::TOO_MANY_REQUESTS,
        vec![("retry-after", "65".into())],
        r#"{"message": "You are being rate limited.", "retry_after": 64.57, "global": false}"#
            .into(),
    )]);
    let mut s = setup(Some(&sink.url), None).await;
    let failed_at = s.clock.now();
    let id = s.enqueue(&fill("buy")).await;
    assert!(!s.failed(id).await, "a 429 is not permanent");
    let (state, attempt, run_at, errors) = s.job(id).await;
    assert_eq!((state.as_str(), attempt), ("available", 1));
    assert!(
        run_at >= failed_at + Span::milliseconds(64_570),
        "retried at {run_at}, before the 64.57 s Discord asked for"
    );
    assert!(errors.to_string().contains("429"), "{errors}");
    s.clock.advance(Span::seconds(65));
    s.completed(id).await;
    assert_eq!(sink.posts().len(), 2, "one refused post and one delivered");
    s.worker.shutdown().await;
}

#[tokio::test]
async fn a_refused_webhook_discards_the_job_and_never_shows_the_url() {
    let sink = WebhookSink::start().await;
    sink.script(vec![(
        StatusCode::NOT_FOUND,
        vec![],
        r#"{"message": "Unknown Webhook", "code": 10015}"#.into(),
    )]);
    let mut s = setup(Some(&sink.url), None).await;
    let id = s.enqueue(&fill("sell")).await;
    assert!(s.failed(id).await, "a 404 is permanent");
    let (state, _, _, errors) = s.job(id).await;
    assert_eq!(state, "discarded");
    let shown = errors.to_string();
    assert!(shown.contains("Unknown Webhook"), "{shown}");
    assert!(
        !shown.contains("secret-token") && !shown.contains("127.0.0.1"),
        "{shown}"
    );
    s.worker.shutdown().await;
}

#[tokio::test]
async fn the_daily_report_is_posted_as_multipart_with_its_png() {
    let sink = WebhookSink::start().await;
    let mut s = setup(Some(&sink.url), None).await;
    let id = s.enqueue(&report()).await;
    s.completed(id).await;
    let post = &sink.wait_for(1).await[0];
    assert!(
        post.content_type.starts_with("multipart/form-data"),
        "{}",
        post.content_type
    );
    let json = post.json();
    let embed = &json["embeds"][0];
    assert_eq!(embed["image"]["url"], "attachment://report.png");
    assert_eq!(json["attachments"][0]["filename"], "report.png");
    let fields = embed["fields"].as_array().unwrap();
    let reviewer = fields.iter().find(|f| f["name"] == "Reviewer").unwrap();
    assert_eq!(reviewer["value"], "rules (offline)");
    let png = post.multipart_part("files[0]").expect("files[0] part");
    assert_eq!(png_size(&png), (WIDTH, HEIGHT));
    let img = image::load_from_memory(&png).expect("decodes as a PNG");
    assert_eq!(img.width(), WIDTH);
    s.worker.shutdown().await;
}

#[tokio::test]
async fn without_a_webhook_messages_are_written_to_files() {
    let mut s = setup(None, None).await;
    let fill_id = s.enqueue(&fill("buy")).await;
    let report_id = s.enqueue(&report()).await;
    s.completed(fill_id).await;
    s.completed(report_id).await;
    let md = s.reports.join(format!("2025-09-09-job{fill_id}-fill.md"));
    assert!(std::fs::read_to_string(&md)
        .unwrap()
        .contains("# BUY KRW-BTC (paper)"));
    let report_md = s
        .reports
        .join(format!("2025-09-09-job{report_id}-daily_report.md"));
    let text = std::fs::read_to_string(&report_md).unwrap();
    assert!(text.contains("Reviewer: rules (offline)"), "{text}");
    assert!(text.contains(&format!(
        "![chart](2025-09-09-job{report_id}-daily_report.png)"
    )));
    let png = s
        .reports
        .join(format!("2025-09-09-job{report_id}-daily_report.png"));
    assert_eq!(png_size(&std::fs::read(&png).unwrap()), (WIDTH, HEIGHT));
    assert_eq!(std::fs::read_dir(&s.reports).unwrap().count(), 3);
    s.worker.shutdown().await;
}

#[tokio::test]
async fn a_retried_file_job_overwrites_its_files_instead_of_adding_copies() {
    let p = parts(None, None).await;
    let id = enqueue_on(&p.db, p.clock.now(), &report()).await;
    // A directory where the markdown's temporary file goes: the first attempt writes the
    // PNG, then fails on the markdown.
    let stem = FileSink::stem(id, &report());
    let blocker = p.reports.join(format!("{stem}.md.tmp"));
    std::fs::create_dir_all(&blocker).unwrap();
    let mut s = p.start();
    assert!(!s.failed(id).await, "a write error is retried");
    let png = s.reports.join(format!("{stem}.png"));
    let first_png = std::fs::metadata(&png).unwrap().modified().unwrap();
    std::fs::remove_dir(&blocker).unwrap();
    s.clock.advance(Span::hours(1));
    s.completed(id).await;
    let mut names: Vec<String> = std::fs::read_dir(&s.reports)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec![format!("{stem}.md"), format!("{stem}.png")]);
    let second_png = std::fs::metadata(&png).unwrap().modified().unwrap();
    assert!(second_png >= first_png, "the PNG was rewritten in place");
    let (_, attempt, _, _) = s.job(id).await;
    assert_eq!(attempt, 2);
    s.worker.shutdown().await;
}

#[tokio::test]
async fn the_daily_report_is_emailed_with_the_chart_attached() {
    let smtp = SmtpSink::start(0).await;
    let mut s = setup(None, Some(&smtp.url)).await;
    let id = s.enqueue(&report()).await;
    s.completed(id).await;
    let mail = smtp.wait_for_mail().await;
    assert!(
        mail.contains("Subject: CoinPilot daily report 2025-09-09"),
        "{mail}"
    );
    assert!(mail.contains("ops@example.com"));
    assert_eq!(png_size(&png_attachment(&mail)), (WIDTH, HEIGHT));
    s.worker.shutdown().await;
}

#[tokio::test]
async fn an_smtp_failure_retries_the_email_without_posting_to_discord_again() {
    let sink = WebhookSink::start().await;
    let smtp = SmtpSink::start(1).await;
    let mut s = setup(Some(&sink.url), Some(&smtp.url)).await;
    let id = s.enqueue(&report()).await;
    s.completed(id).await;
    smtp.wait_for_refusal().await;
    let email: i64 = sqlx::query_scalar(
        "SELECT id FROM jobs WHERE kind = 'notify' AND args->>'channel' = 'email'",
    )
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    let email = JobId(email);
    assert!(!s.failed(email).await, "an SMTP 451 is retried");
    // Well past the first backoff: the e-mail job runs again and goes through.
    s.clock.advance(Span::hours(1));
    s.completed(email).await;
    assert_eq!(
        png_size(&png_attachment(&smtp.wait_for_mail().await)),
        (WIDTH, HEIGHT)
    );
    assert_eq!(sink.posts().len(), 1, "Discord got the report exactly once");
    s.worker.shutdown().await;
}

/// A note keyed for once goes out once, even after its first job was posted and finished
/// (a plain unique key would let the next producer run enqueue it again), and a rolled-back
/// producer leaves the key unused.
#[tokio::test]
async fn a_note_enqueued_once_is_never_enqueued_again() {
    let db = TestDb::new().await;
    let msg = alert(
        Severity::Warning,
        "No new KRW-BTC candle for 7 minutes".into(),
    );
    let key = || "alert:stale-candles:KRW-BTC:1757383200".to_string();
    let mut tx = db.pool.begin().await.unwrap();
    assert!(enqueue_once(&mut tx, t0(), &msg, key())
        .await
        .unwrap()
        .is_some());
    tx.rollback().await.unwrap();
    let mut c = db.pool.acquire().await.unwrap();
    let first = enqueue_once(&mut c, t0(), &msg, key()).await.unwrap();
    assert!(first.is_some(), "a rolled-back use does not count");
    // The note was posted: its job is final, so its unique key no longer holds.
    sqlx::query("UPDATE jobs SET state = 'completed', finished_at = $1 WHERE kind = 'notify'")
        .bind(t0())
        .execute(&db.pool)
        .await
        .unwrap();
    let again = enqueue_once(&mut c, t0() + Span::minutes(1), &msg, key())
        .await
        .unwrap();
    assert!(again.is_none());
    assert_eq!(
        db.count("SELECT count(*) FROM jobs WHERE kind = 'notify'")
            .await,
        1
    );
    let other = enqueue_once(&mut c, t0(), &msg, format!("{}-next-hour", key()))
        .await
        .unwrap();
    assert!(other.is_some());
}
