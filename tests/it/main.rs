//! Integration tests against a real PostgreSQL (see `support`).
#![allow(clippy::unwrap_used, clippy::expect_used)]
// `support::one_heavy_test_at_a_time` is a std mutex held across a whole test on purpose.
#![allow(clippy::await_holding_lock)]

mod ai;
mod backtest_cli;
mod bench_queue;
mod bench_trade_cycle;
mod bot;
mod browser;
mod chaos;
mod chaos_paper;
mod cli_input;
mod config_cli;
mod dashboard;
mod fuzz_defs;
mod http_mock;
mod kustomize;
mod market;
mod notify;
mod ops_manifests;
mod paper;
mod pg_restart;
mod props;
mod queue_basics;
mod queue_bulk;
mod queue_delete_completed;
mod queue_metrics;
mod queue_prefetch;
mod queue_presence;
mod queue_processes;
mod schedules;
mod secrets_logs;
mod soak;
mod support;
mod trading_cli;
mod upbit;
mod upbit_live;
mod workflows;
