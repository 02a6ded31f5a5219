//! `coinpilot backtest` and `coinpilot indicators`: offline commands over candle CSVs (no
//! database, no async runtime). File I/O lives here; everything else is `domain` and
//! `backtest`.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::Args;
use rust_decimal::Decimal;

use super::CliError;
use crate::backtest::{self, report, BacktestInput};
use crate::domain::candle::{Candle, Interval};
use crate::domain::candle_csv::{parse_candles, parse_candles_from};
use crate::domain::config::{parse_strategy, StrategyConfig};
use crate::domain::engine::ReviewMode;
use crate::domain::indicator_table;
use crate::domain::money::Krw;
use crate::domain::strategy::REGIME_SLOW;
use chrono::{DateTime, Duration, Utc};

#[derive(Debug, Args)]
pub struct BacktestArgs {
    /// 1-minute candle CSV (ccxt `timestamp,open,high,low,close,volume`, freqtrade export
    /// or raw Upbit API dump).
    #[arg(long)]
    pub candles: PathBuf,
    /// Hourly candle CSV for the regime; hours it lacks are aggregated from the minutes.
    #[arg(long)]
    pub hourly: Option<PathBuf>,
    /// Strategy thresholds [default: ./strategy.toml if present, else built-in defaults].
    #[arg(long)]
    pub strategy: Option<PathBuf>,
    /// Starting KRW balance.
    #[arg(long, default_value = "1000000")]
    pub balance: String,
    /// Confirm every entry signal instead of asking the offline `rules` reviewer.
    #[arg(long)]
    pub no_review: bool,
    /// Write every closed trade to this CSV file.
    #[arg(long)]
    pub trades_csv: Option<PathBuf>,
    /// Draw the equity curve into this PNG file.
    #[arg(long)]
    pub equity_png: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct IndicatorsArgs {
    /// Candle CSV to compute indicators on.
    #[arg(long)]
    pub input: PathBuf,
    /// `1m` (rsi14, rsi7, sma200, Bollinger, volume ratio) or `1h` (rsi14, sma50, sma200,
    /// regime_d): the columns of the TA-Lib reference file for that interval.
    #[arg(long)]
    pub interval: String,
    /// Output CSV [default: stdout].
    #[arg(long)]
    pub output: Option<PathBuf>,
}

fn read(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path)
        .map_err(|e| CliError::BadInput(format!("cannot read {}: {e}", path.display())))
}

fn write(path: &Path, text: &str) -> Result<(), CliError> {
    std::fs::write(path, text)
        .map_err(|e| CliError::Other(format!("cannot write {}: {e}", path.display())))
}

/// Reads and validates a candle file.
pub fn load_candles(path: &Path, interval: Interval) -> Result<Vec<Candle>, CliError> {
    let text = read(path)?;
    parse_candles(&path.display().to_string(), &text, interval)
        .map_err(|e| CliError::BadInput(e.to_string()))
}

/// Hourly candles from `start` − 2 × 200 hours on: the regime needs the 200 rows before
/// the first minute and nothing older, and skipping years of rows halves the command's
/// time. If gaps leave fewer than 200 rows before `start`, the whole file is read. (The
/// SMAs' running sums then start later; on whole-won KRW prices they are exact integers
/// in f64 either way, so the regime is bit-identical.)
pub fn load_hours_for(path: &Path, start: Option<DateTime<Utc>>) -> Result<Vec<Candle>, CliError> {
    let text = read(path)?;
    let name = path.display().to_string();
    let parse = |from| {
        parse_candles_from(&name, &text, Interval::H1, from)
            .map_err(|e| CliError::BadInput(e.to_string()))
    };
    let Some(start) = start else {
        return parse(None);
    };
    let from = start - Duration::hours(2 * REGIME_SLOW as i64);
    let hours = parse(Some(from))?;
    let before = hours.iter().take_while(|h| h.open_time < start).count();
    if before >= REGIME_SLOW {
        Ok(hours)
    } else {
        parse(None)
    }
}

/// The strategy file named, else `./strategy.toml`, else the defaults.
pub fn load_strategy(path: Option<&Path>) -> Result<StrategyConfig, CliError> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None if Path::new("strategy.toml").is_file() => PathBuf::from("strategy.toml"),
        None => return Ok(StrategyConfig::default()),
    };
    let text = read(&path)?;
    parse_strategy(&path.display().to_string(), &text)
        .map_err(|e| CliError::BadInput(e.to_string()))
}

fn parse_balance(s: &str) -> Result<Krw, CliError> {
    match Decimal::from_str(s.trim().replace('_', "").as_str()) {
        Ok(d) if d > Decimal::ZERO => Ok(Krw::new(d)),
        _ => Err(CliError::BadInput(format!(
            "--balance `{s}` must be a positive KRW amount"
        ))),
    }
}

/// Builds the input of a backtest from the command's files.
pub fn prepare(args: &BacktestArgs) -> Result<BacktestInput, CliError> {
    let balance = parse_balance(&args.balance)?;
    let config = load_strategy(args.strategy.as_deref())?;
    let minutes = load_candles(&args.candles, Interval::M1)?;
    let hourly = match &args.hourly {
        Some(p) => load_hours_for(p, minutes.first().map(|c| c.open_time))?,
        None => Vec::new(),
    };
    Ok(BacktestInput {
        minutes,
        hourly,
        config,
        balance,
        review: if args.no_review {
            ReviewMode::Off
        } else {
            ReviewMode::Rules
        },
    })
}

pub fn run_backtest(args: &BacktestArgs, json: bool) -> Result<(), CliError> {
    let input = prepare(args)?;
    let (review, balance) = (input.review, input.balance);
    let outcome = backtest::run(input).map_err(|e| CliError::Other(e.to_string()))?;
    if let Some(p) = &args.trades_csv {
        write(p, &report::trades_csv(&outcome))?;
    }
    if let Some(p) = &args.equity_png {
        crate::backtest::chart::equity_png(p, &outcome.equity)
            .map_err(|e| CliError::Other(e.to_string()))?;
    }
    if json {
        println!("{}", report::json_line(&outcome, review));
    } else {
        print!("{}", report::summary(&outcome, review, balance));
    }
    Ok(())
}

pub fn run_indicators(args: &IndicatorsArgs) -> Result<(), CliError> {
    let interval =
        Interval::from_str(&args.interval).map_err(|e| CliError::BadInput(e.to_string()))?;
    if !matches!(interval, Interval::M1 | Interval::H1) {
        return Err(CliError::BadInput("--interval must be 1m or 1h".into()));
    }
    let candles = load_candles(&args.input, interval)?;
    let table = indicator_table::render(&candles, interval);
    match &args.output {
        Some(p) => write(p, &table),
        None => {
            use std::io::Write as _;
            std::io::stdout()
                .write_all(table.as_bytes())
                .map_err(|e| CliError::Other(format!("cannot write to stdout: {e}")))
        }
    }
}
