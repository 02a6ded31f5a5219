//! CoinPilot: a scheduled-job workflow orchestrator on PostgreSQL that runs a crypto
//! trading bot. See `docs/ARCHITECTURE.md` for the layers and their invariants; the
//! dependencies point down only: `queue` ← `cli`/`web`.

pub mod backtest;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod db;
pub mod domain;
pub mod market;
pub mod paper;
pub mod queue;
pub mod web;
