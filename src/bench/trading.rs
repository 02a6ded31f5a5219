//! `coinpilot bench indicators` and `coinpilot bench backtest`: ns per candle, wall time
//! and peak RSS on a candle file (by default the shared BTC 1m month, 47,598 candles).
//! Each figure is the best and the median of `--runs` repetitions in this process; the
//! whole-command figure is measured from outside (see `docs/BENCHMARKS.md`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;

use crate::backtest::{self, BacktestInput};
use crate::cli::backtest::{load_candles, load_hours_for, load_strategy};
use crate::cli::CliError;
use crate::domain::candle::Interval;
use crate::domain::engine::ReviewMode;
use crate::domain::indicator_table::{self, to_f64};
use crate::domain::money::Krw;
use crate::domain::strategy::SignalIndicators;

pub const DEFAULT_CANDLES: &str = "../shared/data/upbit_KRW-BTC_1m_2025-09-01_2025-10-04.csv";

#[derive(Debug, Args)]
pub struct TradingBenchArgs {
    /// 1-minute candle CSV.
    #[arg(long, default_value = DEFAULT_CANDLES)]
    pub candles: PathBuf,
    /// Hourly CSV for the backtest's regime (optional, as in `backtest`).
    #[arg(long)]
    pub hourly: Option<PathBuf>,
    /// Repetitions; the best and the median are reported.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
}

/// Peak resident set size of this process so far, in KiB (Linux `VmHWM`; read from /proc
/// because `getrusage` would need `unsafe`, which the crate denies). −1 if unknown.
pub fn peak_rss_kib() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(-1)
}

fn stats(mut runs: Vec<Duration>) -> (Duration, Duration) {
    runs.sort();
    (runs[0], runs[runs.len() / 2])
}

fn print(what: &str, candles: usize, best: Duration, median: Duration, json: bool) {
    let ns = |d: Duration| d.as_nanos() as f64 / candles.max(1) as f64;
    let rss = peak_rss_kib();
    if json {
        println!(
            "{{\"bench\":\"{what}\",\"candles\":{candles},\"best_ms\":{:.3},\"median_ms\":{:.3},\"best_ns_per_candle\":{:.1},\"median_ns_per_candle\":{:.1},\"peak_rss_kib\":{rss}}}",
            best.as_secs_f64() * 1e3,
            median.as_secs_f64() * 1e3,
            ns(best),
            ns(median)
        );
    } else {
        println!(
            "{what:<22} {candles} candles: best {:.3} ms ({:.1} ns/candle), median {:.3} ms ({:.1} ns/candle); peak RSS {:.1} MiB",
            best.as_secs_f64() * 1e3,
            ns(best),
            median.as_secs_f64() * 1e3,
            ns(median),
            rss as f64 / 1024.0
        );
    }
}

fn time(runs: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    let mut all = Vec::with_capacity(runs.max(1));
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        f();
        all.push(t.elapsed());
    }
    stats(all)
}

pub fn indicators(a: TradingBenchArgs, json: bool) -> Result<(), CliError> {
    let t = Instant::now();
    let candles = load_candles(&a.candles, Interval::M1)?;
    let load = t.elapsed();
    let n = candles.len();
    let prices: Vec<(f64, f64)> = candles
        .iter()
        .map(|c| (to_f64(c.close), to_f64(c.volume)))
        .collect();
    let (best, median) = time(a.runs, || {
        let mut ind = SignalIndicators::default();
        let mut sink = 0.0;
        for &(close, volume) in &prices {
            let s = ind.update(close, volume);
            sink += s.rsi14.unwrap_or(0.0);
        }
        std::hint::black_box(sink);
    });
    print("indicators (O(1) step)", n, best, median, json);
    let closes: Vec<f64> = prices.iter().map(|p| p.0).collect();
    let volumes: Vec<f64> = prices.iter().map(|p| p.1).collect();
    // The same six series TA-Lib's batch functions compute, for a like-for-like figure.
    let (best, median) = time(a.runs, || {
        use crate::domain::indicators::{bollinger, rsi, sma, volume_ratio};
        let vol_sma = sma(&volumes, 20);
        let ratio: Vec<Option<f64>> = volumes
            .iter()
            .zip(&vol_sma)
            .map(|(v, s)| s.and_then(|s| volume_ratio(*v, s)))
            .collect();
        std::hint::black_box((
            rsi(&closes, 14),
            rsi(&closes, 7),
            sma(&closes, 200),
            bollinger(&closes, 20, 2.0),
            ratio,
        ));
    });
    print("indicators (batch)", n, best, median, json);
    batch_breakdown(&a, &closes, &volumes, json);
    let (best, median) = time(a.runs, || {
        std::hint::black_box(indicator_table::render(&candles, Interval::M1).len());
    });
    print("indicator table (CSV)", n, best, median, json);
    if !json {
        println!(
            "load + parse + validate {n} candles: {:.3} ms",
            load.as_secs_f64() * 1e3
        );
    }
    Ok(())
}

/// Each batch function alone, for a per-function comparison with TA-Lib's
/// (`ops/bench/talib_indicators.py` prints the same lines).
fn batch_breakdown(a: &TradingBenchArgs, closes: &[f64], volumes: &[f64], json: bool) {
    use crate::domain::indicators::{bollinger, rsi, sma};
    let n = closes.len();
    let (best, median) = time(a.runs, || {
        std::hint::black_box(rsi(closes, 14));
    });
    print("  batch rsi(14)", n, best, median, json);
    let (best, median) = time(a.runs, || {
        std::hint::black_box(sma(closes, 200));
    });
    print("  batch sma(200)", n, best, median, json);
    let (best, median) = time(a.runs, || {
        std::hint::black_box(bollinger(closes, 20, 2.0));
    });
    print("  batch bollinger(20,2)", n, best, median, json);
    let (best, median) = time(a.runs, || {
        std::hint::black_box(sma(volumes, 20));
    });
    print("  batch sma(volume,20)", n, best, median, json);
}

pub fn backtest(a: TradingBenchArgs, json: bool) -> Result<(), CliError> {
    let config = load_strategy(None)?;
    let input = |minutes, hourly| BacktestInput {
        minutes,
        hourly,
        config,
        balance: Krw::new(1_000_000.into()),
        review: ReviewMode::Rules,
    };
    let load = || -> Result<_, CliError> {
        let m = load_candles(&a.candles, Interval::M1)?;
        let h = match &a.hourly {
            Some(p) => load_hours_for(p, m.first().map(|c| c.open_time))?,
            None => Vec::new(),
        };
        Ok((m, h))
    };
    let (minutes, hourly) = load()?;
    let n = minutes.len();
    let mut failure = None;
    let (best, median) = time(a.runs, || {
        if let Err(e) = backtest::run(input(minutes.clone(), hourly.clone())) {
            failure = Some(e);
        }
    });
    if let Some(e) = failure {
        return Err(CliError::Other(e.to_string()));
    }
    print("backtest (engine)", n, best, median, json);
    let mut failure = None;
    let (best, median) = time(a.runs, || {
        match load().map(|(m, h)| backtest::run(input(m, h))) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => failure = Some(CliError::Other(e.to_string())),
            Err(e) => failure = Some(e),
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    print("backtest (read+parse+run)", n, best, median, json);
    Ok(())
}
