//! `trading …` (the kill switch, SPEC B5) and `report daily` (SPEC B7). The switch is
//! persisted in `risk_state`: `halt` stops entries until `resume` (exits go on); `flatten`
//! enqueues one `execute_order` sell per open position, decided at the market's clock (the
//! newest stored candle's close, so the offline demo's accelerated clock sells too).

use std::path::PathBuf;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use clap::{Args, Subcommand};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use super::run::connect_and_migrate;
use super::{print_json, CliError};
use crate::bot::{risk_store, Bot};
use crate::clock::{Clock, SystemClock};
use crate::domain::candle::Market;
use crate::domain::risk::seoul_day;
use crate::notify::{self, Message, RiskEvent, RiskNote};
use crate::queue::NewJob;

#[derive(Debug, Subcommand)]
pub enum TradingCommand {
    /// Stop new entries (persisted) until `resume`; exits continue.
    Halt {
        #[arg(long, default_value = "halted by hand")]
        reason: String,
    },
    /// Allow entries again.
    Resume,
    /// Sell every open position now (one `execute_order` job each).
    Flatten,
    /// The kill switch, the cooldown, today's risk and the open positions.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Render the daily report of a Seoul day: markdown on stdout, the chart as a PNG.
    Daily(DailyArgs),
}

#[derive(Debug, Args)]
pub struct DailyArgs {
    /// The Asia/Seoul day [default: yesterday in Seoul by the market's clock].
    #[arg(long)]
    pub date: Option<NaiveDate>,
    #[arg(long, default_value = "KRW-BTC")]
    pub market: String,
    /// Where the PNG goes.
    #[arg(long, default_value = "reports")]
    pub output: PathBuf,
}

fn bad(e: impl std::fmt::Display) -> CliError {
    CliError::Other(e.to_string())
}

/// The market's clock: the newest stored candle's close, never after the host's clock.
async fn market_now(conn: &mut PgConnection, market: &Market) -> Result<DateTime<Utc>, CliError> {
    let newest = crate::bot::history::newest_minute(conn, market)
        .await
        .map_err(bad)?;
    let host = SystemClock.now();
    Ok(newest
        .map(|t| (t + Duration::minutes(1)).min(host))
        .unwrap_or(host))
}

pub async fn run_trading(
    cmd: TradingCommand,
    cfg: &crate::config::Loaded,
    json: bool,
) -> Result<(), CliError> {
    let pool = connect_and_migrate(2).await?;
    let bot = Bot {
        starting_balance: crate::domain::money::Krw::new(cfg.config.paper.starting_balance_krw),
        ..Bot::inert()
    };
    let market = crate::bot::market_of_config(cfg).map_err(bad)?;
    let mut tx = pool.begin().await?;
    let now = market_now(&mut tx, &market).await?;
    let account = bot.account(&mut tx, now).await.map_err(bad)?;
    let out = match cmd {
        TradingCommand::Halt { reason } => {
            switch(&mut tx, account, true, Some(&reason), now).await?
        }
        TradingCommand::Resume => switch(&mut tx, account, false, None, now).await?,
        TradingCommand::Flatten => flatten(&mut tx, account, now).await?,
        TradingCommand::Status => status(&mut tx, account, now).await?,
    };
    tx.commit().await?;
    pool.close().await;
    if json {
        print_json(&out)
    } else {
        println!("{}", out["text"].as_str().unwrap_or_default());
        Ok(())
    }
}

async fn switch(
    conn: &mut PgConnection,
    account: crate::paper::AccountId,
    halted: bool,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<serde_json::Value, CliError> {
    let changed = risk_store::set_halted(conn, account, halted, reason, now)
        .await
        .map_err(bad)?;
    if changed {
        let (event, detail) = if halted {
            (RiskEvent::Halted, format!("Trading halted: {}. Exits continue; no entries until `coinpilot trading resume`.", reason.unwrap_or("")))
        } else {
            (
                RiskEvent::Resumed,
                "Trading resumed: entries allowed again.".to_string(),
            )
        };
        let msg = Message::Risk(RiskNote {
            event,
            at: now,
            detail,
        });
        notify::enqueue(conn, now, &msg, None).await?;
    }
    let word = if halted { "halted" } else { "resumed" };
    let text = if changed {
        format!("trading {word}")
    } else {
        format!("trading was already {word}")
    };
    Ok(serde_json::json!({ "halted": halted, "changed": changed, "text": text }))
}

async fn flatten(
    conn: &mut PgConnection,
    account: crate::paper::AccountId,
    now: DateTime<Utc>,
) -> Result<serde_json::Value, CliError> {
    const OPEN: &str =
        "SELECT market, entry_filled_at FROM positions WHERE account_id = $1 ORDER BY market";
    let open: Vec<(String, DateTime<Utc>)> = sqlx::query_as(OPEN)
        .bind(account.0)
        .fetch_all(&mut *conn)
        .await?;
    let mut jobs = Vec::new();
    for (market, entry) in &open {
        let args = serde_json::json!({
            "market": market, "side": "sell", "reason": "flatten", "decided_at": now,
            "position_entry": entry,
        });
        let job = NewJob::new("execute_order", args)
            .with_queue("orders")
            .with_priority(-10)
            .with_unique_key(format!(
                "flatten:{}:{market}:{}",
                account.0,
                entry.timestamp_micros()
            ));
        jobs.push(crate::queue::enqueue(&mut *conn, now, &job).await?.id.0);
    }
    let positions = u32::try_from(open.len()).unwrap_or(u32::MAX);
    if positions > 0 {
        let msg = Message::Risk(RiskNote {
            event: RiskEvent::Flattened { positions },
            at: now,
            detail: format!("Flatten: selling {positions} open position(s) now."),
        });
        notify::enqueue(conn, now, &msg, None).await?;
    }
    let text = format!("flatten: {positions} sell order(s) enqueued (jobs {jobs:?})");
    Ok(serde_json::json!({ "positions": positions, "jobs": jobs, "text": text }))
}

async fn status(
    conn: &mut PgConnection,
    account: crate::paper::AccountId,
    now: DateTime<Utc>,
) -> Result<serde_json::Value, CliError> {
    // Status reads take no locks.
    const STATE: &str = "SELECT halted, halted_reason, loss_streak, cooldown_until FROM risk_state WHERE account_id = $1";
    const DAY: &str = "SELECT day_start_equity, realized_pnl, entries FROM risk_days WHERE account_id = $1 AND day = $2";
    const OPEN: &str = "SELECT market, quantity, avg_price, entry_filled_at FROM positions WHERE account_id = $1 ORDER BY market";
    type State = (bool, Option<String>, i32, Option<DateTime<Utc>>);
    let state: Option<State> = sqlx::query_as(STATE)
        .bind(account.0)
        .fetch_optional(&mut *conn)
        .await?;
    let (halted, reason, streak, cooldown) = state.unwrap_or((false, None, 0, None));
    let day = seoul_day(now);
    let today: Option<(Decimal, Decimal, i32)> = sqlx::query_as(DAY)
        .bind(account.0)
        .bind(day)
        .fetch_optional(&mut *conn)
        .await?;
    let open: Vec<(String, Decimal, Decimal, DateTime<Utc>)> = sqlx::query_as(OPEN)
        .bind(account.0)
        .fetch_all(&mut *conn)
        .await?;
    let balance = crate::paper::balance(conn, account).await.map_err(bad)?;
    let mut text = format!(
        "trading   {}\nbalance   {balance} KRW\nstreak    {streak} losing trade(s)\ncooldown  {}\n",
        if halted {
            format!("HALTED ({})", reason.clone().unwrap_or_default())
        } else {
            "active".into()
        },
        cooldown
            .filter(|c| *c > now)
            .map(|c| format!("until {c}"))
            .unwrap_or_else(|| "none".into()),
    );
    match &today {
        Some((equity, pnl, entries)) => text.push_str(&format!("today     {day} (Seoul): start equity {equity} KRW, realised {pnl} KRW, {entries} entries\n")),
        None => text.push_str(&format!("today     {day} (Seoul): no decision yet\n")),
    }
    for (m, q, p, t) in &open {
        text.push_str(&format!("position  {m} {q} @ {p} since {t}\n"));
    }
    Ok(serde_json::json!({
        "halted": halted, "halted_reason": reason, "loss_streak": streak, "cooldown_until": cooldown,
        "balance": balance.value(), "day": day,
        "today": today.map(|(e, p, n)| serde_json::json!({"start_equity": e, "realized_pnl": p, "entries": n})),
        "positions": open.iter().map(|(m, q, p, t)| serde_json::json!({"market": m, "quantity": q, "avg_price": p, "entry_filled_at": t})).collect::<Vec<_>>(),
        "text": text.trim_end(),
    }))
}

pub async fn run_report(
    cmd: ReportCommand,
    cfg: &crate::config::Loaded,
    json: bool,
) -> Result<(), CliError> {
    let ReportCommand::Daily(a) = cmd;
    let market: Market = a
        .market
        .parse()
        .map_err(|e| CliError::BadInput(format!("--market: {e}")))?;
    let pool = connect_and_migrate(2).await?;
    let mut conn = pool.acquire().await?;
    let now = market_now(&mut conn, &market).await?;
    let day = a.date.unwrap_or_else(|| seoul_day(now - Duration::days(1)));
    let reviewer =
        crate::ai::from_config(&cfg.config.ai, &cfg.secrets, Default::default()).map_err(bad)?;
    let bot = Bot {
        reviewer,
        ..Bot::inert()
    };
    let report = crate::bot::daily::gather(&mut conn, &bot, &market, day, now)
        .await
        .map_err(bad)?;
    drop(conn);
    pool.close().await;
    let png = notify::report::render_png(&report).map_err(|e| bad(e.0))?;
    std::fs::create_dir_all(&a.output).map_err(|e| bad(format!("{}: {e}", a.output.display())))?;
    let path = a.output.join(format!("daily-report-{market}-{day}.png"));
    std::fs::write(&path, png).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    if json {
        let mut v = serde_json::to_value(&report).map_err(bad)?;
        v["chart"] = serde_json::json!(path.display().to_string());
        print_json(&v)
    } else {
        println!("{}", notify::report::render_markdown(&report));
        println!("chart: {}", path.display());
        Ok(())
    }
}
