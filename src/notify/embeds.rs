//! How each [`Message`] looks on Discord: one embed with a colour per kind (buy green, sell
//! red, critical red, warning amber, …). Pure; the payload still goes through
//! [`limits::enforce`](super::limits::enforce) before it is sent.

use chrono::SecondsFormat;
use rust_decimal::Decimal;

use super::limits::{Embed, Field, Footer, Image, WebhookPayload};
use super::{
    AiDecisionNote, AlertNote, DailyReport, ExpiredNote, FillNote, MarketNoteMsg, Message,
    RiskEvent, RiskNote, Severity,
};

pub const GREEN: u32 = 0x2E_CC_71;
pub const RED: u32 = 0xE7_4C_3C;
pub const AMBER: u32 = 0xFF_BF_00;
pub const BLUE: u32 = 0x34_98_DB;
pub const GREY: u32 = 0x95_A5_A6;
pub const ORANGE: u32 = 0xE6_7E_22;

/// The file name of the daily report chart, in `files[0]` and the embed's image URL.
pub const REPORT_PNG: &str = "report.png";

const USERNAME: &str = "CoinPilot";

/// The webhook payload for `m`; a daily report's embed shows `attachment://report.png`.
pub fn payload(m: &Message) -> WebhookPayload {
    let embed = match m {
        Message::Fill(n) => fill(n),
        Message::OrderExpired(n) => expired(n),
        Message::AiDecision(n) => ai_decision(n),
        Message::MarketNote(n) => market_note(n),
        Message::Risk(n) => risk(n),
        Message::Alert(n) => alert(n),
        Message::DailyReport(r) => daily_report(r),
    };
    WebhookPayload {
        content: None,
        username: Some(USERNAME.into()),
        embeds: vec![embed],
        attachments: Vec::new(),
    }
}

fn field(name: &str, value: impl Into<String>) -> Field {
    Field {
        name: name.into(),
        value: value.into(),
        inline: true,
    }
}

fn wide(name: &str, value: impl Into<String>) -> Field {
    Field {
        inline: false,
        ..field(name, value)
    }
}

fn at(t: chrono::DateTime<chrono::Utc>) -> Option<String> {
    Some(t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

fn footer(text: impl Into<String>) -> Option<Footer> {
    Some(Footer { text: text.into() })
}

/// KRW amounts: whole won, with the sign.
pub fn krw(d: Decimal) -> String {
    format!("{} KRW", d.round_dp(0))
}

fn fill(n: &FillNote) -> Embed {
    let buy = n.side.eq_ignore_ascii_case("buy");
    let mut fields = vec![
        field("Price", krw(n.price)),
        field("Quantity", n.quantity.normalize().to_string()),
        field("Fee", format!("{} KRW", n.fee.round_dp(2))),
        field("Balance after", krw(n.balance_after)),
    ];
    if let Some(pnl) = n.pnl {
        fields.push(field("PnL", krw(pnl)));
    }
    if let Some(r) = &n.reason {
        fields.push(wide("Reason", r.clone()));
    }
    Embed {
        title: Some(format!(
            "{} {} ({})",
            n.side.to_uppercase(),
            n.market,
            n.mode
        )),
        color: Some(if buy { GREEN } else { RED }),
        timestamp: at(n.filled_at),
        fields,
        footer: footer(format!("order {}", n.client_order_id)),
        ..Embed::default()
    }
}

fn expired(n: &ExpiredNote) -> Embed {
    Embed {
        title: Some(format!("Buy order expired: {}", n.market)),
        description: Some(format!(
            "Decided at {}, not filled before it went stale.",
            n.decided_at.format("%Y-%m-%d %H:%M UTC")
        )),
        color: Some(GREY),
        timestamp: at(n.expired_at),
        footer: footer(format!("order {}", n.client_order_id)),
        ..Embed::default()
    }
}

fn ai_decision(n: &AiDecisionNote) -> Embed {
    let color = match (n.confirmed, &n.error) {
        (_, Some(_)) => AMBER,
        (true, None) => GREEN,
        (false, None) => GREY,
    };
    let mut fields = vec![
        field("Decision", n.verdict.clone()),
        field("Confidence", format!("{}/100", n.confidence)),
        field("Entry", if n.confirmed { "goes ahead" } else { "skipped" }),
    ];
    if let Some(e) = &n.error {
        fields.push(wide("Reviewer error", e.clone()));
    }
    Embed {
        title: Some(format!("AI review {}: {}", n.market, n.verdict)),
        description: Some(n.reasoning.clone()),
        color: Some(color),
        timestamp: at(n.decided_at),
        fields,
        footer: footer(format!("{} · {}", n.provider, n.model)),
        ..Embed::default()
    }
}

fn market_note(n: &MarketNoteMsg) -> Embed {
    let fields = n
        .regime
        .iter()
        .map(|r| field("Regime", r.clone()))
        .collect();
    Embed {
        title: Some(format!("Market review {}", n.market)),
        description: Some(n.note.clone()),
        color: Some(BLUE),
        timestamp: at(n.at),
        fields,
        footer: footer(format!("{} · {}", n.provider, n.model)),
        ..Embed::default()
    }
}

/// Title, colour and fields of a risk event.
fn risk_parts(e: &RiskEvent) -> (String, u32, Vec<Field>) {
    match e {
        RiskEvent::CooldownStarted { until } => (
            "Cooldown started".into(),
            ORANGE,
            vec![field(
                "Until",
                until.format("%Y-%m-%d %H:%M UTC").to_string(),
            )],
        ),
        RiskEvent::CooldownEnded => ("Cooldown ended".into(), GREEN, vec![]),
        RiskEvent::DailyLossLimit { pnl, limit } => (
            "Daily loss limit reached".into(),
            RED,
            vec![field("Day PnL", krw(*pnl)), field("Limit", krw(*limit))],
        ),
        RiskEvent::DayStarted { day, equity } => (
            format!("Trading day {day} started"),
            BLUE,
            vec![field("Starting equity", krw(*equity))],
        ),
        RiskEvent::Halted => ("Trading halted".into(), RED, vec![]),
        RiskEvent::Resumed => ("Trading resumed".into(), GREEN, vec![]),
        RiskEvent::Flattened { positions } => (
            "Positions flattened".into(),
            ORANGE,
            vec![field("Positions closed", positions.to_string())],
        ),
    }
}

fn risk(n: &RiskNote) -> Embed {
    let (title, color, fields) = risk_parts(&n.event);
    Embed {
        title: Some(title),
        description: Some(n.detail.clone()).filter(|d| !d.is_empty()),
        color: Some(color),
        timestamp: at(n.at),
        fields,
        footer: footer("risk"),
        ..Embed::default()
    }
}

fn alert(n: &AlertNote) -> Embed {
    let (label, color) = match n.severity {
        Severity::Critical => ("CRITICAL", RED),
        Severity::Warning => ("Warning", AMBER),
    };
    Embed {
        title: Some(format!("{label}: {}", n.title)),
        description: Some(n.detail.clone()).filter(|d| !d.is_empty()),
        color: Some(color),
        timestamp: at(n.at),
        footer: footer("alert"),
        ..Embed::default()
    }
}

/// The report's summary as (name, value) pairs: the embed's fields and the markdown's table.
pub fn report_summary(r: &DailyReport) -> Vec<(&'static str, String)> {
    let pct = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.1}%"));
    vec![
        (
            "Equity",
            format!("{} → {}", krw(r.equity_start), krw(r.equity_end)),
        ),
        ("Realised PnL", krw(r.realized_pnl)),
        ("Unrealised PnL", krw(r.unrealized_pnl)),
        (
            "Trades",
            format!("{} ({} won, {} lost)", r.trades.len(), r.wins, r.losses),
        ),
        ("Win rate", pct(r.win_rate_pct())),
        ("Max drawdown", format!("{:.2}%", r.max_drawdown_pct)),
        (
            "AI reviews",
            format!("{} confirmed, {} rejected", r.ai_confirms, r.ai_rejects),
        ),
        (
            "AI avg confidence",
            r.ai_avg_confidence
                .map_or("n/a".to_string(), |c| format!("{c:.0}")),
        ),
        ("Regime", r.regime.clone().unwrap_or_else(|| "n/a".into())),
        ("Open positions", r.open_positions.len().to_string()),
        ("Reviewer", r.reviewer.clone()),
    ]
}

fn daily_report(r: &DailyReport) -> Embed {
    let color = if r.equity_end >= r.equity_start {
        GREEN
    } else {
        RED
    };
    Embed {
        title: Some(format!(
            "Daily report {} · {} ({})",
            r.day, r.market, r.mode
        )),
        color: Some(color),
        fields: report_summary(r)
            .into_iter()
            .map(|(n, v)| field(n, v))
            .collect(),
        footer: footer(format!(
            "Asia/Seoul day {} · reviewer: {}",
            r.day, r.reviewer
        )),
        image: Some(Image {
            url: format!("attachment://{REPORT_PNG}"),
        }),
        ..Embed::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn krw_rounds_to_whole_won() {
        assert_eq!(krw(Decimal::new(-123456, 2)), "-1235 KRW");
        assert_eq!(krw(Decimal::from(5000)), "5000 KRW");
    }
}
