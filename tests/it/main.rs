//! Integration tests against a real PostgreSQL (see `support`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backtest_cli;
mod cli_input;
mod market;
mod paper;
mod queue_basics;
mod queue_processes;
mod support;
