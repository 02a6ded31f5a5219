//! Trading concepts without I/O: money types, candles and their parsing, indicators, the
//! v3.3 strategy, the `rules` reviewer, risk rules, order arithmetic and the per-candle
//! engine that backtest, paper and live all drive (DESIGN invariant 9).
//!
//! Nothing here reads files, talks to the network or asks for the time: callers pass text,
//! candles and "now" in. That keeps every rule a pure function the tests can pin down.

pub mod candle;
pub mod candle_csv;
pub mod config;
pub mod engine;
pub mod indicator_table;
pub mod indicators;
pub mod money;
pub mod portfolio;
pub mod review;
pub mod risk;
pub mod strategy;
