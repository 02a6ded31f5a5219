//! Integration tests against a real PostgreSQL (see `support`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod browser;
mod cli_input;
mod config_cli;
mod dashboard;
mod kustomize;
mod ops_manifests;
mod queue_basics;
mod queue_metrics;
mod queue_processes;
mod schedules;
mod support;
mod workflows;
