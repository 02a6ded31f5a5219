//! CoinPilot: a scheduled-job workflow orchestrator on PostgreSQL that runs a crypto
//! trading bot. See `docs/ARCHITECTURE.md` for the layers and their invariants; the
//! dependencies point down only: `queue` ← `workflow` ← `schedule` ← `cli`/`web`.

pub mod ai;
pub mod backtest;
pub mod bench;
pub mod bot;
pub mod cli;
pub mod clock;
pub mod config;
pub mod db;
pub mod defs;
pub mod domain;
pub mod failpoint;
pub mod live;
pub mod market;
pub mod notify;
pub mod paper;
pub mod queue;
pub mod schedule;
pub mod web;
pub mod workflow;
