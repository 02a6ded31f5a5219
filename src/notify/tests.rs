//! Unit and property tests of the pure parts: the Discord limits, embeds, rendering.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;

use super::limits::*;
use super::*;

fn assert_within_limits(p: &WebhookPayload) {
    let v = violations(p);
    assert!(v.is_empty(), "{v:?}");
}

#[test]
fn truncation_cuts_on_char_boundaries_with_an_ellipsis() {
    assert_eq!(truncate("hello", 5), "hello");
    assert_eq!(truncate("hello world", 5), "hell…");
    assert_eq!(truncate("hello", 0), "");
    // Hangul is 3 bytes in UTF-8 and 1 unit in UTF-16: cut after 3 syllables + ellipsis.
    let korean = "비트코인매수신호";
    assert_eq!(truncate(korean, 4), "비트코…");
    // An emoji is 2 UTF-16 units: it is never split, only dropped whole.
    assert_eq!(truncate("ab😀cd", 4), "ab…");
    assert_eq!(truncate("ab😀cd", 5), "ab😀…");
    assert_eq!(truncate("😀😀", 1), "…");
    assert_eq!(discord_len("ab😀"), 4);
}

#[test]
fn an_oversized_payload_is_cut_to_every_limit_keeping_what_fits() {
    let long = "가".repeat(5000);
    let fields = (0..40)
        .map(|i| Field {
            name: format!("{i}{}", "n".repeat(300)),
            value: "v".repeat(2000),
            inline: true,
        })
        .collect::<Vec<_>>();
    let embed = Embed {
        title: Some(long.clone()),
        description: Some(long.clone()),
        fields,
        footer: Some(Footer { text: long.clone() }),
        ..Embed::default()
    };
    let p = WebhookPayload {
        content: Some(long.clone()),
        embeds: vec![embed; 14],
        ..WebhookPayload::default()
    };
    // The checker sees each broken limit, so the asserts below can fail.
    let broken = violations(&p);
    for what in [
        "content",
        "embeds",
        "all embeds",
        "embed 0 title",
        "embed 0 fields",
    ] {
        assert!(
            broken.iter().any(|v| v.starts_with(&format!("{what}:"))),
            "{what}: {broken:?}"
        );
    }
    let cut = enforce(p);
    assert_within_limits(&cut);
    assert_eq!(discord_len(cut.content.as_deref().unwrap()), CONTENT_MAX);
    let first = &cut.embeds[0];
    assert_eq!(discord_len(first.title.as_deref().unwrap()), TITLE_MAX);
    assert!(first.title.as_deref().unwrap().ends_with('…'));
    assert_eq!(
        discord_len(first.description.as_deref().unwrap()),
        DESCRIPTION_MAX
    );
    // The shared 6,000 budget is spent in order, down to the last unit.
    let total: usize = cut.embeds.iter().map(embed_len).sum();
    assert_eq!(total, EMBEDS_TOTAL_MAX);
}

#[test]
fn a_payload_within_limits_is_unchanged() {
    let p = embeds::payload(&Message::Alert(AlertNote {
        severity: Severity::Warning,
        title: "no new candle for 5 minutes".into(),
        detail: "KRW-BTC".into(),
        at: t0(),
    }));
    assert_eq!(enforce(p.clone()), p);
}

fn text(max: usize) -> impl Strategy<Value = String> {
    // Mixed ASCII, Hangul, emoji and combining marks, up to well past every limit.
    prop::collection::vec(
        prop_oneof![
            Just('a'),
            Just('가'),
            Just('😀'),
            Just('\u{301}'),
            any::<char>()
        ],
        0..max,
    )
    .prop_map(|cs| cs.into_iter().collect())
}

fn embed() -> impl Strategy<Value = Embed> {
    (
        prop::option::of(text(400)),
        prop::option::of(text(5000)),
        prop::collection::vec((text(300), text(1200)), 0..30),
        prop::option::of(text(2200)),
    )
        .prop_map(|(title, description, fields, footer)| Embed {
            title,
            description,
            fields: fields
                .into_iter()
                .map(|(name, value)| Field {
                    name,
                    value,
                    inline: false,
                })
                .collect(),
            footer: footer.map(|text| Footer { text }),
            ..Embed::default()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn enforce_never_panics_and_always_fits(
        content in prop::option::of(text(2500)),
        embeds in prop::collection::vec(embed(), 0..13),
    ) {
        let cut = enforce(WebhookPayload { content, embeds, ..WebhookPayload::default() });
        assert_within_limits(&cut);
    }

    #[test]
    fn truncate_is_a_prefix_within_max(s in text(3000), max in 0usize..3000) {
        let out = truncate(&s, max);
        prop_assert!(discord_len(&out) <= max);
        let kept = out.strip_suffix('…').filter(|_| out != s).unwrap_or(&out);
        prop_assert!(s.starts_with(kept));
    }
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-09-09T00:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

/// A day of prices with one round trip and an open position.
fn sample_report() -> DailyReport {
    let price = |i: i64| Decimal::from(150_000_000 + (i % 120) * 20_000 - i * 3_000);
    let prices: Vec<PricePoint> = (0..1440)
        .map(|i| PricePoint {
            t: t0() + Duration::minutes(i),
            v: price(i),
        })
        .collect();
    let equity = prices
        .iter()
        .map(|p| PricePoint {
            t: p.t,
            v: Decimal::from(1_000_000) + (p.v - Decimal::from(150_000_000)) / Decimal::from(1000),
        })
        .collect();
    DailyReport {
        day: NaiveDate::from_ymd_opt(2025, 9, 9).unwrap_or_default(),
        market: "KRW-BTC".into(),
        mode: "paper".into(),
        reviewer: "rules (offline)".into(),
        equity_start: Decimal::from(1_000_000),
        equity_end: Decimal::new(101_234_567, 2),
        realized_pnl: Decimal::from(9_000),
        unrealized_pnl: Decimal::from(3_345),
        trades: vec![ReportTrade {
            entry_time: t0() + Duration::minutes(100),
            entry_price: price(100),
            exit_time: t0() + Duration::minutes(400),
            exit_price: price(400),
            quantity: Decimal::new(133, 5),
            pnl: Decimal::from(9_000),
            exit_reason: "take_profit".into(),
        }],
        wins: 1,
        losses: 0,
        max_drawdown_pct: 1.25,
        ai_confirms: 2,
        ai_rejects: 1,
        ai_avg_confidence: Some(66.7),
        regime: Some("uptrend".into()),
        open_positions: vec![ReportPosition {
            market: "KRW-BTC".into(),
            quantity: Decimal::new(13, 4),
            entry_price: price(900),
            entry_time: t0() + Duration::minutes(900),
            last_price: price(1439),
            unrealized_pnl: Decimal::from(3_345),
        }],
        markers: [(100, "buy"), (400, "sell"), (900, "buy")]
            .into_iter()
            .map(|(i, side)| Marker {
                t: t0() + Duration::minutes(i),
                price: price(i),
                side: side.into(),
            })
            .collect(),
        prices,
        equity,
    }
}

#[test]
fn the_markdown_report_shows_every_figure_and_the_reviewer() {
    let md = report::render_markdown(&sample_report());
    for want in [
        "# Daily report 2025-09-09 — KRW-BTC (paper)",
        "Reviewer: rules (offline)",
        "| Equity | 1000000 KRW → 1012346 KRW |",
        "| Win rate | 100.0% |",
        "| Max drawdown | 1.25% |",
        "| AI reviews | 2 confirmed, 1 rejected |",
        "| Regime | uptrend |",
        "take_profit",
        "## Open positions",
    ] {
        assert!(md.contains(want), "missing {want:?} in\n{md}");
    }
}

#[test]
fn the_chart_is_a_png_of_the_documented_size_even_for_an_empty_day() {
    for r in [
        sample_report(),
        DailyReport {
            prices: vec![],
            equity: vec![],
            markers: vec![],
            ..sample_report()
        },
    ] {
        let png = report::render_png(&r).unwrap();
        let img = image::load_from_memory(&png).unwrap();
        assert_eq!((img.width(), img.height()), (report::WIDTH, report::HEIGHT));
    }
}

#[test]
fn messages_round_trip_through_the_job_args_with_their_tags() {
    let m = Message::Risk(RiskNote {
        event: RiskEvent::CooldownStarted { until: t0() },
        at: t0(),
        detail: "third loss in a row".into(),
    });
    let job = new_job(&m, Some("k".into())).unwrap();
    assert_eq!((job.kind.as_str(), job.queue.as_str()), (KIND, QUEUE));
    assert_eq!(job.args["message"]["type"], "risk");
    assert_eq!(job.args["message"]["event"]["kind"], "cooldown_started");
    let back: NotifyArgs = serde_json::from_value(job.args).unwrap();
    assert_eq!((back.message, back.channel), (m, Channel::Primary));
}
