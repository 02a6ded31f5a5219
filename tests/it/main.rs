//! Integration tests against a real PostgreSQL (see `support`).
#![allow(clippy::unwrap_used, clippy::expect_used)]
// `support::one_heavy_test_at_a_time` is a std mutex held across a whole test on purpose.
#![allow(clippy::await_holding_lock)]

mod backtest_cli;
mod browser;
mod chaos;
mod cli_input;
mod config_cli;
mod dashboard;
mod fuzz_defs;
mod http_mock;
mod kustomize;
mod market;
mod ops_manifests;
mod paper;
mod pg_restart;
mod queue_basics;
mod queue_metrics;
mod queue_processes;
mod schedules;
mod support;
mod upbit;
mod upbit_live;
mod workflows;
