//! `coinpilot bench …`: benchmarks that print figures (never timed tests).

pub mod queue;

use clap::Subcommand;

use crate::cli::CliError;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Enqueue and drain throughput, pickup latency and worker memory of the job queue.
    Queue(queue::QueueBenchArgs),
}

pub async fn run(cmd: BenchCommand, json: bool) -> Result<(), CliError> {
    match cmd {
        BenchCommand::Queue(a) => queue::run(a, json).await,
    }
}
