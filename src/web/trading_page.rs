//! `/trading` and `/api/trading`: the trading state of `web::trading` as a page (readable
//! on a phone: cards that wrap, tables that scroll sideways, secondary columns hidden on
//! small screens) and as JSON. Read-only: viewer and admin see the same page; the bot's
//! kill switch stays a CLI action (`coinpilot trading halt|resume|flatten`).

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::Extension;
use maud::{html, Markup};

use super::auth::Session;
use super::dashboard::DashState;
use super::equity;
use super::error::WebError;
use super::layout::{decimal, krw, opt_time, page, signed_krw, time};
use super::trading::{
    self, AccountView, AiDecisionView, PositionView, RiskView, TradePage, Trading, TradingQuery,
};

pub async fn trading_json(
    State(st): State<DashState>,
    Query(q): Query<TradingQuery>,
) -> Result<Response, WebError> {
    let t = trading::load(&st.pool, &q, st.clock.now()).await?;
    let body = serde_json::to_string(&t).map_err(|e| WebError::Internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

pub async fn trading_page(
    State(st): State<DashState>,
    Extension(s): Extension<Session>,
    Query(q): Query<TradingQuery>,
) -> Result<Html<String>, WebError> {
    let t = trading::load(&st.pool, &q, st.clock.now()).await?;
    let body = html! {
        h1 { "Trading" }
        @match &t.account {
            Some(a) => { (summary(a, &t)) }
            None => { div.card { p.muted { "No paper account named " code { (q.account_name()) }
                " yet: the bot opens it at its first decision (or run " code { "coinpilot paper reset" } ")." } } }
        }
        (risk_card(t.risk.as_ref()))
        h2 { "Equity" }
        div.card {
            @if t.equity_curve.points.len() >= 2 { (equity::render(&t.equity_curve.points)) }
            @else { p.muted { "No fill yet: the curve starts at the first fill." } }
            p.muted { small { "Curve: " (t.equity_curve.method) "." } }
        }
        h2 { "Open positions" }
        (positions_table(&t.positions))
        h2 { "Closed trades" }
        (trades_table(&t.trades, &q))
        h2 { "AI decisions" }
        (decisions(&t.ai_decisions))
        p.muted { small { "Times are UTC; days marked Seoul are Asia/Seoul dates (the risk manager's days). As of "
            (time(t.at)) " UTC." } }
    };
    Ok(Html(
        page("Trading", "trading", &s, None, body).into_string(),
    ))
}

fn summary(a: &AccountView, t: &Trading) -> Markup {
    let totals = &t.trades.totals;
    html! {
        div.grid {
            div.card.stat.sm { b { (krw(a.equity)) } span { "equity (" (a.name) ")" } }
            div.card.stat.sm { b { (krw(a.balance)) } span { "KRW balance" } }
            div.card.stat.sm { b { (krw(a.positions_value)) } span { "in positions, at the last close" } }
            div.card.stat.sm { b { (signed_krw(a.unrealized_pnl)) } span { "unrealised PnL" } }
            div.card.stat.sm { b { (signed_krw(totals.realized_pnl)) }
                span { "realised PnL, " (totals.count) " trades (" (totals.wins) " won, " (totals.losses) " lost)" } }
        }
    }
}

fn risk_card(r: Option<&RiskView>) -> Markup {
    html! {
        h2 { "Risk" }
        @match r {
            None => { div.card { p.muted { "No risk state yet: it starts with the bot's first decision." } } }
            Some(r) => {
                div.grid {
                    div.card.stat.sm {
                        b { @if r.halted { span.b.s-failed { "halted" } } @else { span.b.s-active { "trading" } } }
                        span { "kill switch " @if r.halted { "on" @if let Some(why) = &r.halted_reason { ": " (why) } }
                            @else { "off" } }
                    }
                    div.card.stat.sm {
                        b { @if r.cooldown_active { span.b.s-paused { "cooldown" } } @else { "no cooldown" } }
                        span { @if let Some(u) = r.cooldown_until {
                            @if r.cooldown_active { "no entries until " } @else { "the last one ended " } (time(u)) " UTC"
                        } @else { "loss-streak cooldown" } }
                    }
                    div.card.stat.sm { b { (r.loss_streak) } span { "losing trades in a row" } }
                    div.card.stat.sm {
                        b { (r.realized_pnl_today.map(signed_krw).unwrap_or_else(|| "—".into())) }
                        span { "realised today, Seoul " (r.day_seoul) }
                    }
                    div.card.stat.sm {
                        b { (r.entries_today.map(|e| e.to_string()).unwrap_or_else(|| "—".into())) }
                        span { "entries today (Seoul)" }
                    }
                    div.card.stat.sm {
                        b { (r.day_start_equity.map(krw).unwrap_or_else(|| "—".into())) }
                        span { "equity at the start of the Seoul day"
                            @if r.day_start_equity.is_none() { " (no decision today yet)" } }
                    }
                }
            }
        }
    }
}

fn positions_table(ps: &[PositionView]) -> Markup {
    html! {
        div.tbl { table {
            thead { tr { th { "market" } th.num { "quantity" } th.num { "entry price" } th.hide-sm { "entry time" }
                th.num { "last close" } th.num { "unrealised PnL" } } }
            tbody {
                @for p in ps { tr {
                    td { (p.market) @if p.dust { " " span.b.s-paused { "dust" } } }
                    td.num { (decimal(p.quantity)) }
                    td.num { (krw(p.entry_price)) }
                    td.hide-sm { (time(p.entry_time)) }
                    td.num { @match p.last_close { Some(c) => { (krw(c)) br; span.muted { small { (opt_time(p.last_close_at)) } } }
                        None => { span.muted { "no candle" } } } }
                    td.num { (p.unrealized_pnl.map(signed_krw).unwrap_or_else(|| "—".into())) }
                } }
                @if ps.is_empty() { tr { td colspan="6" .muted { "No open position." } } }
            }
        } }
    }
}

fn trades_table(tp: &TradePage, q: &TradingQuery) -> Markup {
    // The account name is the person's input: encoded, not pasted, into the links.
    let account = form_urlencoded::Serializer::new(String::new())
        .append_pair("account", q.account_name())
        .finish();
    html! {
        div.tbl { table {
            thead { tr { th { "market" } th { "entry" } th { "exit" } th.num { "quantity" }
                th.num { "PnL" } th { "exit reason" } } }
            tbody {
                @for t in &tp.trades { tr {
                    td { (t.market) }
                    td { (time(t.entry_time)) br; span.muted { (krw(t.entry_price)) } }
                    td { (time(t.exit_time)) " " span.muted.hide-sm { "(Seoul " (t.exit_day_seoul) ")" }
                        br; span.muted { (krw(t.exit_price)) } }
                    td.num { (decimal(t.quantity)) }
                    td.num { (signed_krw(t.pnl)) }
                    td { span class={ "b " (reason_class(&t.exit_reason)) } { (t.exit_reason) } }
                } }
                @if tp.trades.is_empty() { tr { td colspan="6" .muted { "No closed trade." } } }
            }
        } }
        p {
            @if !q.trades_before.trim().is_empty() { a.btn href={ "/trading?" (account) } { "Newest" } " " }
            @if let Some(n) = &tp.next { a.btn href={ "/trading?" (account) "&trades_before=" (n) } { "Older trades →" } }
        }
    }
}

fn reason_class(reason: &str) -> &'static str {
    match reason {
        "take_profit" => "s-completed",
        "stop_loss" => "s-failed",
        _ => "s-cancelled",
    }
}

fn decisions(ds: &[AiDecisionView]) -> Markup {
    html! {
        @if ds.is_empty() { div.card { p.muted { "No AI decision yet." } } }
        @for d in ds {
            div.card {
                b { (time(d.decided_at)) } " " span.muted { (d.market) " · " (d.kind.replace('_', " ")) } " "
                @if let Some(v) = &d.verdict {
                    span class={ "b " (if v == "CONFIRM" { "s-completed" } else { "s-failed" }) } { (v) } " "
                }
                @if let Some(c) = d.confidence { "confidence " b { (c) } " " }
                @if d.kind == "entry_review" {
                    span.muted { @if d.confirmed { "→ buy" } @else { "→ no buy" } } " "
                }
                span.b title={ (d.provider) " / " (d.model) } { (d.reviewer) } " "
                span.muted.hide-sm { small { (d.latency_ms) " ms" } }
                p { (d.reasoning) }
                @if let Some(e) = &d.error { div.notice role="note" { "Error: " (e) } }
            }
        }
    }
}
