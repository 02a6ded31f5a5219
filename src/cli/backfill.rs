//! `coinpilot backfill`: fills a range of candles directly (not through the queue) from the
//! configured market source, with a progress line on stderr and a summary on stdout.

use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, Utc};
use clap::Args;

use super::run::connect_and_migrate;
use super::{print_json, CliError};
use crate::clock::{Clock, SystemClock};
use crate::config::Loaded;
use crate::domain::candle::{Interval, Market};
use crate::market::{backfill_range, configured_source, BackfillReport, DEFAULT_CANDLES};

#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// The market, e.g. KRW-BTC.
    #[arg(long)]
    pub market: String,
    /// Candle interval: 1m, 3m, 5m, 10m, 15m, 30m, 1h or 4h.
    #[arg(long, default_value = "1m")]
    pub interval: String,
    /// Start (inclusive): RFC 3339 (2025-09-20T00:00:00Z) or a UTC date (2025-09-20).
    #[arg(long)]
    pub from: String,
    /// End (exclusive), same formats.
    #[arg(long)]
    pub to: String,
    /// Replay source only: the candle CSV to serve.
    #[arg(long, default_value = DEFAULT_CANDLES)]
    pub candles: PathBuf,
    /// Upbit source only: the API base URL.
    #[arg(
        long,
        env = "COINPILOT_UPBIT_BASE_URL",
        default_value = "https://api.upbit.com"
    )]
    pub upbit_base_url: String,
}

fn parse_time(flag: &str, s: &str) -> Result<DateTime<Utc>, CliError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| {
            CliError::BadInput(format!(
                "{flag} `{s}` is neither an RFC 3339 time (2025-09-20T00:00:00Z) nor a date (2025-09-20)"
            ))
        })
}

pub async fn run_backfill(args: BackfillArgs, loaded: &Loaded, json: bool) -> Result<(), CliError> {
    let market: Market = args
        .market
        .parse()
        .map_err(|e| CliError::BadInput(format!("--market: {e}")))?;
    let interval: Interval = args
        .interval
        .parse()
        .map_err(|e| CliError::BadInput(format!("--interval: {e}")))?;
    let (from, to) = (
        parse_time("--from", &args.from)?,
        parse_time("--to", &args.to)?,
    );
    if from >= to {
        return Err(CliError::BadInput(format!(
            "--from {from} must be before --to {to}"
        )));
    }
    let source = configured_source(
        loaded.config.market.source,
        &market,
        interval,
        &args.candles,
        &args.upbit_base_url,
    )
    .map_err(|e| CliError::BadInput(e.to_string()))?;
    let pool = connect_and_migrate(2).await?;
    let mut tx = pool.begin().await?;
    let now = SystemClock.now();
    let total = (to.min(now) - from).num_seconds().max(1) as f64;
    let mut show = |r: &BackfillReport, done_to: DateTime<Utc>| {
        let pct = ((done_to.min(now) - from).num_seconds() as f64 / total * 100.0).min(100.0);
        eprint!(
            "\rbackfill {market} {interval}: {pct:5.1}% to {done_to}  fetched {}  stored {}  empty {}   ",
            r.fetched, r.stored, r.confirmed_empty
        );
    };
    let report = backfill_range(
        &mut tx,
        source.as_ref(),
        &market,
        interval,
        from,
        to,
        now,
        &mut show,
    )
    .await
    .map_err(|e| CliError::Other(format!("backfill failed (nothing stored): {e}")))?;
    eprintln!();
    tx.commit().await?;
    pool.close().await;
    if json {
        return print_json(&report);
    }
    println!(
        "{market} {interval} from {from} to {to} ({} source): fetched {}, stored {}, rejected {}, confirmed empty {}",
        report.source,
        report.fetched,
        report.stored,
        report.rejected.len(),
        report.confirmed_empty
    );
    for r in &report.rejected {
        println!("  rejected {} ({}): {}", r.open_time, r.field, r.reason);
    }
    Ok(())
}
