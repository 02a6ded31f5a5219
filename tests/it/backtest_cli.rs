//! `coinpilot backtest` and `coinpilot indicators` from the outside: no database needed.

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_coinpilot"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = bin().args(args).output().expect("run coinpilot");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("coinpilot-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

const MINUTES: &str = "data/upbit_KRW-BTC_1m_2025-09-20_2025-09-23.csv";
const HOURS: &str = "data/upbit_KRW-BTC_1h_2025-09-08_2025-09-19.csv";

#[test]
fn backtest_json_is_one_line_with_the_promised_fields() {
    let trades = scratch("trades.csv");
    let t = trades.to_str().unwrap();
    let (code, out, err) = run(&[
        "backtest",
        "--candles",
        MINUTES,
        "--hourly",
        HOURS,
        "--trades-csv",
        t,
        "--json",
    ]);
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    for key in [
        "trades",
        "wins",
        "losses",
        "pnl_krw",
        "final_balance_krw",
        "max_drawdown_pct",
        "sharpe",
        "exposure_pct",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {out}");
    }
    let n = v["trades"].as_u64().unwrap();
    assert!(v["wins"].as_u64().unwrap() + v["losses"].as_u64().unwrap() <= n);
    let csv = std::fs::read_to_string(&trades).unwrap();
    assert!(csv.starts_with("entry_time,entry_price,exit_time,exit_price,quantity,"));
    assert_eq!(csv.lines().count() as u64, n + 1);
}

#[test]
fn backtest_prints_a_readable_summary() {
    let (code, out, err) = run(&[
        "backtest",
        "--candles",
        MINUTES,
        "--hourly",
        HOURS,
        "--no-review",
    ]);
    assert_eq!(code, 0, "stderr: {err}");
    for word in [
        "trades",
        "pnl",
        "max dd",
        "sharpe",
        "exposure",
        "reviewer: none",
    ] {
        assert!(out.contains(word), "{word:?} not in {out}");
    }
}

fn write(name: &str, text: &str) -> PathBuf {
    let p = scratch(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Exit code 2 (bad input) and `expected` in the error.
fn assert_refused(args: &[&str], expected: &str) {
    let (code, _, err) = run(args);
    assert_eq!(code, 2, "{args:?}: {err}");
    assert!(err.contains(expected), "{expected:?} not in {err:?}");
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_high_below_low_candle_is_refused_naming_file_line_and_field() {
    let p = write(
        "bad.csv",
        "timestamp,open,high,low,close,volume\n2025-09-01 00:00:00,10,12,9,11,1\n2025-09-01 00:01:00,10,9,12,11,1\n",
    );
    assert_refused(
        &["backtest", "--candles", path(&p)],
        "bad.csv:3: field `high`: high 9 is below low 12",
    );
}

#[test]
fn a_broken_row_is_refused_naming_its_line() {
    let p = write(
        "broken.csv",
        "timestamp,open,high,low,close,volume\n2025-09-01 00:00:00,10,12,9,11,1\n2025-09-01 00:01:00,10,12\n",
    );
    assert_refused(
        &["indicators", "--input", path(&p), "--interval", "1m"],
        "broken.csv:3: 3 cells, the header has 6",
    );
}

#[test]
fn a_typo_in_strategy_toml_names_line_and_field() {
    let p = write(
        "strategy.toml",
        "[exit]\nstop_loss = 0.03\ntake_proft = 0.05\n",
    );
    let (code, _, err) = run(&["backtest", "--candles", MINUTES, "--strategy", path(&p)]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("strategy.toml:3: field `exit.take_proft`"),
        "{err}"
    );
    let (code, _, err) = run(&["backtest", "--candles", MINUTES, "--balance", "-5"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn indicators_write_the_reference_columns() {
    let out = scratch("ind.csv");
    let (code, _, err) = run(&[
        "indicators",
        "--input",
        HOURS,
        "--interval",
        "1h",
        "--output",
        path(&out),
    ]);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.starts_with("timestamp,close,volume,rsi14,sma50,sma200,regime_d\n"));
    assert_eq!(text.lines().count(), 289);
}

/// freqtrade's `backtesting` of the same strategy on the shared month
/// (`../shared/bench/freqtrade/README.md`): 127 trades, 47 wins / 80 losses,
/// −23,052.118 KRW. It has no risk rules, no review and no slippage, so with those turned
/// off ours must agree trade for trade.
#[test]
fn with_risk_review_and_slippage_off_the_month_matches_freqtrade() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    if !shared.is_dir() {
        eprintln!(
            "NOTICE: {} is absent; freqtrade parity test skipped",
            shared.display()
        );
        return;
    }
    let cfg = write(
        "no-risk.toml",
        "[risk]\nmax_consecutive_losses = 1000000\ndaily_loss_limit = 0.99\nmax_entries_per_day = 1000000\n[orders]\nslippage_bps = 0\n",
    );
    let m = shared.join("upbit_KRW-BTC_1m_2025-09-01_2025-10-04.csv");
    let h = shared.join("upbit_KRW-BTC_1h_2022-01-01_2025-09-29.csv");
    let (code, out, err) = run(&[
        "backtest",
        "--candles",
        path(&m),
        "--hourly",
        path(&h),
        "--strategy",
        path(&cfg),
        "--no-review",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            v["trades"].as_u64(),
            v["wins"].as_u64(),
            v["losses"].as_u64()
        ),
        (Some(127), Some(47), Some(80))
    );
    let pnl = v["pnl_krw"].as_f64().unwrap();
    assert!((pnl - -23_052.118).abs() < 0.001, "pnl {pnl}");
}

#[test]
fn equity_png_is_a_png_drawn_with_the_embedded_font() {
    let png = scratch("equity.png");
    let (code, _, err) = run(&[
        "backtest",
        "--candles",
        MINUTES,
        "--hourly",
        HOURS,
        "--equity-png",
        path(&png),
    ]);
    assert_eq!(code, 0, "{err}");
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        bytes.len() > 10_000,
        "suspiciously small: {} bytes",
        bytes.len()
    );
}
