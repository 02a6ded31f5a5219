//! The dashboard's page shell: navigation, the inline stylesheet (readable on a phone and
//! a laptop, no JavaScript), and small shared pieces (state badges, times, POST buttons
//! that carry the CSRF token). maud escapes every interpolated value.

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};
use rust_decimal::{Decimal, RoundingStrategy};

use super::auth::Session;

const CSS: &str = "
*{box-sizing:border-box}body{margin:0;font:15px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;color:#1d2430;background:#f5f6f8}
header{background:#1d2430;color:#fff;padding:.6rem 1rem;display:flex;flex-wrap:wrap;gap:.4rem 1rem;align-items:center}
header a{color:#cfd6e4;text-decoration:none}header a.on{color:#fff;font-weight:600}header .brand{font-weight:700;color:#fff;margin-right:.5rem}
header form{margin-left:auto}main{max-width:1200px;margin:0 auto;padding:1rem}
h1{font-size:1.35rem;margin:.2rem 0 1rem}h2{font-size:1.1rem;margin:1.4rem 0 .6rem}
.card{background:#fff;border:1px solid #e1e4ea;border-radius:8px;padding:.8rem 1rem;margin-bottom:1rem}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:.8rem;margin-bottom:1rem}.grid>.card{margin-bottom:0}
.stat b{display:block;font-size:1.5rem}.stat.sm b{font-size:1.15rem}.stat span{color:#5b6475;font-size:.85rem}
.tbl{overflow-x:auto}table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:.4rem .55rem;border-bottom:1px solid #eceef2;vertical-align:top}
th{font-size:.8rem;text-transform:uppercase;color:#5b6475;letter-spacing:.03em}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f0f2f5;padding:.6rem;border-radius:6px;overflow-x:auto;white-space:pre-wrap;word-break:break-word;margin:.3rem 0}
.b{display:inline-block;padding:.05rem .45rem;border-radius:999px;font-size:.8rem;background:#e6e9ef}
.s-completed,.s-succeeded,.s-active{background:#d8f3e1;color:#17643a}.s-running{background:#dbe8ff;color:#1d4fb8}
.s-discarded,.s-failed{background:#fde0e0;color:#9b1c1c}.s-cancelled,.s-skipped,.s-paused,.s-disabled,.s-pruned{background:#eceef2;color:#5b6475}
.s-available,.s-pending{background:#fff4d6;color:#7a5600}.s-scheduled,.s-retrying{background:#fbe8d3;color:#8a4a00}
form.inline{display:inline}button,.btn{font:inherit;padding:.3rem .7rem;border-radius:6px;border:1px solid #c5cbd6;background:#fff;cursor:pointer;color:#1d2430;text-decoration:none}
button.primary{background:#1d4fb8;border-color:#1d4fb8;color:#fff}button.danger{border-color:#c73a3a;color:#9b1c1c}
.filters{display:flex;flex-wrap:wrap;gap:.5rem;align-items:end}.filters label{display:flex;flex-direction:column;font-size:.8rem;color:#5b6475}
input,select{font:inherit;padding:.3rem .45rem;border:1px solid #c5cbd6;border-radius:6px;min-width:0}
.notice{background:#e8f1ff;border:1px solid #b9d0fb;padding:.5rem .8rem;border-radius:6px;margin-bottom:1rem}
.muted{color:#5b6475}.login{max-width:340px;margin:12vh auto}.login input{width:100%;margin:.2rem 0 .7rem}
svg text{font:12px system-ui,sans-serif}
@media(max-width:640px){main{padding:.6rem}th,td{padding:.35rem}.hide-sm{display:none}}
";

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · CoinPilot" }
            style { (maud::PreEscaped(CSS)) }
        }
    }
}

const NAV: &[(&str, &str, &str)] = &[
    ("overview", "/", "Overview"),
    ("jobs", "/jobs", "Jobs"),
    ("schedules", "/schedules", "Schedules"),
    ("workflows", "/workflows", "Workflows"),
    ("trading", "/trading", "Trading"),
];

/// A full page for a logged-in person; `active` names the navigation entry.
pub fn page(title: &str, active: &str, s: &Session, notice: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header {
                    span.brand { "CoinPilot" }
                    @for (key, href, label) in NAV {
                        a href=(href) class=[(*key == active).then_some("on")] { (label) }
                    }
                    form.inline method="post" action="/logout" {
                        (csrf_field(s))
                        span.muted { (s.username) " (" (s.role.as_str()) ") " }
                        button type="submit" { "Log out" }
                    }
                }
                main {
                    @if let Some(n) = notice { div.notice role="status" { (n) } }
                    (body)
                }
            }
        }
    }
}

pub fn csrf_field(s: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.csrf); }
}

/// A one-button form that POSTs to `action`; shown only to accounts that may act.
pub fn post_button(s: &Session, action: &str, label: &str, class: &str) -> Markup {
    html! {
        @if s.can_act() {
            form.inline method="post" action=(action) {
                (csrf_field(s))
                button type="submit" class=(class) { (label) }
            }
        }
    }
}

pub fn badge(state: &str) -> Markup {
    html! { span class={ "b s-" (state) } { (state) } }
}

pub fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

pub fn opt_time(t: Option<DateTime<Utc>>) -> String {
    t.map(time).unwrap_or_else(|| "—".into())
}

/// Won with thousands separators, to 2 decimals at most ("1,234,567.51 KRW"): fees make
/// fractions of a won, and hiding them would make the page disagree with the ledger.
pub fn krw(d: Decimal) -> String {
    let rounded = d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    format!("{} KRW", group_thousands(rounded.normalize()))
}

/// [`krw`] with an explicit sign, for PnL ("+1,200 KRW"; losses keep their "-").
pub fn signed_krw(d: Decimal) -> String {
    let s = krw(d);
    if d > Decimal::ZERO {
        format!("+{s}")
    } else {
        s
    }
}

/// A quantity or price as stored, trailing zeros dropped, the integer part grouped.
pub fn decimal(d: Decimal) -> String {
    group_thousands(d.normalize())
}

fn group_thousands(d: Decimal) -> String {
    let text = d.to_string();
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.as_str()),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let mut grouped = String::with_capacity(int.len() + int.len() / 3);
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    }
}

/// "3m 20s": short ages for the overview.
pub fn age(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// The login form; `csrf` is the form's token (its twin is in the login cookie).
pub fn login_page(error: Option<&str>, csrf: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Log in"))
            body {
                main.login {
                    div.card {
                        h1 { "CoinPilot" }
                        @if let Some(e) = error { div.notice role="alert" { (e) } }
                        form method="post" action="/login" {
                            input type="hidden" name="csrf" value=(csrf);
                            label for="username" { "Username" }
                            input id="username" name="username" value="admin" autocomplete="username";
                            label for="password" { "Password" }
                            input id="password" name="password" type="password" autocomplete="current-password" autofocus;
                            button.primary type="submit" { "Log in" }
                        }
                    }
                }
            }
        }
    }
}

/// The generic error page: a status and a people-facing sentence, nothing internal.
pub fn error_page(status: StatusCode, message: &str) -> Markup {
    let title = status.canonical_reason().unwrap_or("Error");
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                main {
                    div.card {
                        h1 { (status.as_u16()) " " (title) }
                        p { (message) }
                        p { a href="/" { "Back to the overview" } }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{decimal, krw, signed_krw};
    use rust_decimal::Decimal;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn won_are_grouped_and_rounded_to_two_decimals() {
        assert_eq!(krw(d("1000000")), "1,000,000 KRW");
        assert_eq!(krw(d("1234567.505")), "1,234,567.51 KRW");
        assert_eq!(krw(d("-999.999")), "-1,000 KRW");
        assert_eq!(krw(d("0.00")), "0 KRW");
        assert_eq!(krw(d("123")), "123 KRW");
        assert_eq!(signed_krw(d("1200")), "+1,200 KRW");
        assert_eq!(signed_krw(d("-3.5")), "-3.5 KRW");
        assert_eq!(signed_krw(Decimal::ZERO), "0 KRW");
        assert_eq!(decimal(d("0.00312500")), "0.003125");
        assert_eq!(decimal(d("160123000.0")), "160,123,000");
    }
}
