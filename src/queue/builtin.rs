//! Built-in job kinds for tests, benchmarks and operations:
//! - `noop`: does nothing (benchmarks).
//! - `echo`: completes with its args as its output (workflow tests and placeholders).
//! - `sleep` `{"ms": N}`: waits N ms, stopping early when cancelled.
//! - `flaky` `{"fail_times": N, "ms": M}`: fails its first N attempts, then succeeds.
//! - `probe` `{"ms": M, "slow_attempts": S, "fail_times": N, "panic": bool}`: a canary
//!   that logs every run
//!   (job id, attempt, worker) in `probe_runs` before doing anything else, so the fault
//!   suite and operators can see exactly which worker ran which attempt.
//! - `prune`: deletes finished jobs past their horizon ([`super::prune`]).

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::handler::{Handler, HandlerRegistry, JobContext, JobError, KindOptions, Outcome};
use super::prune::{prune_finished, PruneOptions};

pub struct Noop;
impl Handler for Noop {
    const KIND: &'static str = "noop";
    type Args = serde_json::Value;
    async fn run(&self, _ctx: &mut JobContext, _args: Self::Args) -> Result<Outcome, JobError> {
        Ok(Outcome::done())
    }
}

pub struct Echo;
impl Handler for Echo {
    const KIND: &'static str = "echo";
    type Args = serde_json::Value;
    async fn run(&self, _ctx: &mut JobContext, args: Self::Args) -> Result<Outcome, JobError> {
        Ok(Outcome::output(args))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SleepArgs {
    pub ms: u64,
}

pub struct Sleep;
impl Handler for Sleep {
    const KIND: &'static str = "sleep";
    type Args = SleepArgs;
    async fn run(&self, ctx: &mut JobContext, args: SleepArgs) -> Result<Outcome, JobError> {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(args.ms)) => Ok(Outcome::output(json!({"slept_ms": args.ms}))),
            _ = ctx.cancel.cancelled() => Err(JobError::retry("cancelled while sleeping")),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlakyArgs {
    pub fail_times: i32,
    #[serde(default)]
    pub ms: u64,
}

pub struct Flaky;
impl Handler for Flaky {
    const KIND: &'static str = "flaky";
    type Args = FlakyArgs;
    async fn run(&self, ctx: &mut JobContext, args: FlakyArgs) -> Result<Outcome, JobError> {
        tokio::time::sleep(Duration::from_millis(args.ms)).await;
        if ctx.job.attempt <= args.fail_times {
            return Err(JobError::retry(format!(
                "flaky: failing attempt {} of the first {}",
                ctx.job.attempt, args.fail_times
            )));
        }
        Ok(Outcome::output(
            json!({"succeeded_on_attempt": ctx.job.attempt}),
        ))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeArgs {
    /// How long each attempt takes (only attempts up to `slow_attempts` when that is set).
    pub ms: u64,
    pub slow_attempts: Option<i32>,
    pub fail_times: i32,
    pub panic: bool,
}

pub struct Probe;
impl Handler for Probe {
    const KIND: &'static str = "probe";
    type Args = ProbeArgs;
    async fn run(&self, ctx: &mut JobContext, args: ProbeArgs) -> Result<Outcome, JobError> {
        // Autocommit, not the job's transaction: the run is logged even if it never completes.
        sqlx::query(
            "INSERT INTO probe_runs (job_id, attempt, worker, started_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(ctx.job.id.0)
        .bind(ctx.job.attempt)
        .bind(ctx.job.worker.as_deref().unwrap_or("?"))
        .bind(ctx.now())
        .execute(&ctx.pool)
        .await?;
        if args.panic {
            panic!("probe asked to panic on attempt {}", ctx.job.attempt);
        }
        if args.slow_attempts.is_none_or(|s| ctx.job.attempt <= s) {
            tokio::time::sleep(Duration::from_millis(args.ms)).await;
        }
        if ctx.job.attempt <= args.fail_times {
            return Err(JobError::retry(format!(
                "probe: failing attempt {}",
                ctx.job.attempt
            )));
        }
        Ok(Outcome::done())
    }
}

pub struct Prune;
impl Handler for Prune {
    const KIND: &'static str = "prune";
    type Args = PruneOptions;
    fn options(&self) -> KindOptions {
        KindOptions {
            queue: "maintenance".into(),
            max_attempts: 3,
            ..KindOptions::default()
        }
    }
    async fn run(&self, ctx: &mut JobContext, opts: PruneOptions) -> Result<Outcome, JobError> {
        let deleted = prune_finished(&ctx.pool, ctx.now(), &opts).await?;
        Ok(Outcome::output(json!({ "deleted": deleted })))
    }
}

/// Registers every built-in kind.
pub fn register_builtins(registry: &mut HandlerRegistry) {
    registry
        .register(Noop)
        .register(Echo)
        .register(Sleep)
        .register(Flaky)
        .register(Probe)
        .register(Prune);
}
