//! Integration tests against a real PostgreSQL (see `support`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backtest_cli;
mod chaos;
mod cli_input;
mod config_cli;
mod fuzz_defs;
mod kustomize;
mod ops_manifests;
mod pg_restart;
mod queue_basics;
mod queue_metrics;
mod queue_processes;
mod schedules;
mod support;
mod workflows;
