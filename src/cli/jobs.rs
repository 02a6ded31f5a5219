//! `jobs …` and `queues …`.

use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde_json::Value;

use super::run::{connect_and_migrate, registry};
use super::{print_json, CliError};
use crate::clock::{Clock, SystemClock};
use crate::queue::admin::{self, JobFilter};
use crate::queue::presence;
use crate::queue::{enqueue, Job, JobEvent, JobId, JobState};

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first.
    List {
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        queue: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Show one job with every attempt's error.
    Show { id: i64 },
    /// Run a waiting job now, or enqueue a linked copy of a finished one.
    Retry { id: i64 },
    /// Cancel a job (a running one is stopped).
    Cancel { id: i64 },
    /// Discard a job by hand.
    Discard { id: i64 },
    /// Enqueue a job of a registered kind.
    Enqueue {
        kind: String,
        /// The job's args as JSON.
        #[arg(long, default_value = "{}")]
        args: String,
        #[arg(long)]
        unique_key: Option<String>,
        /// When to run (RFC 3339, e.g. 2025-09-09T00:05:00Z); default now.
        #[arg(long)]
        run_at: Option<String>,
        #[arg(long)]
        queue: Option<String>,
        #[arg(long)]
        priority: Option<i16>,
        #[arg(long)]
        max_attempts: Option<i32>,
        #[arg(long)]
        timeout_ms: Option<i32>,
    },
}

#[derive(Debug, Subcommand)]
pub enum QueuesCommand {
    /// Queues with their counts and pause state.
    List,
    /// Stop claims from a queue (running jobs finish).
    Pause { name: String },
    /// Resume a paused queue.
    Resume { name: String },
}

fn parse_args_json(s: &str) -> Result<Value, CliError> {
    serde_json::from_str(s).map_err(|e| {
        CliError::BadInput(format!(
            "--args is not valid JSON: {e} (got {s:?}); nothing was enqueued"
        ))
    })
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, CliError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| CliError::BadInput(format!("--run-at {s:?} is not an RFC 3339 time with a zone (e.g. 2025-09-09T00:05:00Z): {e}")))
}

pub async fn run_jobs(cmd: JobsCommand, json: bool) -> Result<(), CliError> {
    let clock = SystemClock;
    // Validate everything that needs no database first: bad input never touches it.
    if let JobsCommand::Enqueue {
        kind, args, run_at, ..
    } = &cmd
    {
        let args = parse_args_json(args)?;
        registry().new_job(kind, args)?;
        run_at.as_deref().map(parse_time).transpose()?;
    }
    let pool = connect_and_migrate(2).await?;
    let by = super::cli_actor();
    match cmd {
        JobsCommand::List {
            state,
            kind,
            queue,
            limit,
        } => {
            let state = state.as_deref().map(str::parse::<JobState>).transpose()?;
            let jobs = admin::list_jobs(
                &pool,
                &JobFilter {
                    state,
                    kind,
                    queue,
                    limit,
                },
            )
            .await?;
            if json {
                print_json(&jobs)?;
            } else {
                print_job_table(&jobs, clock.now());
            }
        }
        JobsCommand::Show { id } => {
            let mut conn = pool.acquire().await?;
            let job = admin::get_job(&mut conn, JobId(id), false).await?;
            if json {
                print_json(&job)?;
            } else {
                print_job_detail(&job, clock.now());
            }
        }
        JobsCommand::Retry { id } => {
            let r = admin::retry_job(&pool, JobId(id), clock.now(), &by).await?;
            if json {
                print_json(&r)?;
            } else {
                match r {
                    admin::Retried::RunNow { id } => println!("job {id} will run now"),
                    admin::Retried::Copied { original, copy } => {
                        println!("job {original} is final; enqueued copy {}", copy.id)
                    }
                }
            }
        }
        JobsCommand::Cancel { id } | JobsCommand::Discard { id } => {
            let event = if matches!(cmd, JobsCommand::Cancel { .. }) {
                JobEvent::Cancel
            } else {
                JobEvent::DiscardByHand
            };
            let mut tx = pool.begin().await?;
            let job = admin::stop_job(&mut tx, JobId(id), clock.now(), event, &by).await?;
            // A workflow step's job ends its step (and fails or cancels its run) with it.
            crate::workflow::WorkflowEngine::new(registry())
                .step_stopped(&mut tx, &job, clock.now())
                .await?;
            tx.commit().await?;
            if json {
                print_json(&job)?;
            } else {
                println!("job {} is now {}", job.id, job.state);
            }
        }
        JobsCommand::Enqueue {
            kind,
            args,
            unique_key,
            run_at,
            queue,
            priority,
            max_attempts,
            timeout_ms,
        } => {
            let mut job = registry()
                .new_job(&kind, parse_args_json(&args)?)?
                .with_enqueued_by(by);
            job.unique_key = unique_key;
            job.run_at = run_at.as_deref().map(parse_time).transpose()?;
            job.queue = queue.unwrap_or(job.queue);
            job.priority = priority.unwrap_or(job.priority);
            job.max_attempts = max_attempts.unwrap_or(job.max_attempts);
            job.timeout_ms = timeout_ms.or(job.timeout_ms);
            let mut conn = pool.acquire().await?;
            if job.run_at.is_none() {
                // Due at once on every worker's clock (the demo's replays 2025 at 60×).
                job.run_at = Some(presence::due_for_every_worker(&mut conn, clock.now()).await?);
            }
            let e = enqueue(&mut conn, clock.now(), &job).await?;
            if json {
                print_json(&e)?;
            } else if e.duplicate {
                println!(
                    "duplicate of live job {} (unique key); nothing new enqueued",
                    e.id
                );
            } else {
                println!("enqueued job {} ({kind} on queue {})", e.id, job.queue);
            }
        }
    }
    pool.close().await;
    Ok(())
}

fn print_job_table(jobs: &[Job], now: DateTime<Utc>) {
    println!(
        "{:>10}  {:<18} {:<12} {:<10} {:>7}  {:<20}  LAST ERROR",
        "ID", "KIND", "QUEUE", "STATE", "ATTEMPT", "RUN AT"
    );
    for j in jobs {
        let last = j
            .errors
            .as_array()
            .and_then(|a| a.last())
            .and_then(|e| e["message"].as_str())
            .unwrap_or("");
        println!(
            "{:>10}  {:<18} {:<12} {:<10} {:>3}/{:<3}  {:<20}  {}",
            j.id,
            j.kind,
            j.queue,
            j.display_state(now),
            j.attempt,
            j.max_attempts,
            j.run_at.format("%Y-%m-%d %H:%M:%S"),
            truncate(last, 60)
        );
    }
}

fn print_job_detail(j: &Job, now: DateTime<Utc>) {
    println!(
        "job {}  {}  queue {}  state {}",
        j.id,
        j.kind,
        j.queue,
        j.display_state(now)
    );
    println!("  args        {}", j.args);
    println!(
        "  attempt     {}/{}   priority {}",
        j.attempt, j.max_attempts, j.priority
    );
    println!("  run at      {}", j.run_at);
    println!(
        "  created     {}   by {}",
        j.created_at,
        j.enqueued_by.as_deref().unwrap_or("-")
    );
    if let Some(t) = j.started_at {
        println!(
            "  started     {t}   on {}",
            j.worker.as_deref().unwrap_or("-")
        );
    }
    if let Some(t) = j.finished_at {
        println!("  finished    {t}");
    }
    if let Some(k) = &j.unique_key {
        println!("  unique key  {k}");
    }
    if let Some(o) = &j.output {
        println!("  output      {o}");
    }
    for e in admin::errors_of(j) {
        println!(
            "  attempt {} at {} [{}]: {}",
            e["attempt"],
            e["at"].as_str().unwrap_or("?"),
            e["kind"].as_str().unwrap_or("?"),
            e["message"].as_str().unwrap_or("?")
        );
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

pub async fn run_queues(cmd: QueuesCommand, json: bool) -> Result<(), CliError> {
    let pool = connect_and_migrate(2).await?;
    let now = SystemClock.now();
    match cmd {
        QueuesCommand::List => {
            let qs = admin::list_queues(&pool, now).await?;
            if json {
                print_json(&qs)?;
            } else {
                println!(
                    "{:<16} {:<7} {:>10} {:>8} {:>10}",
                    "QUEUE", "PAUSED", "AVAILABLE", "RUNNING", "SCHEDULED"
                );
                for q in qs {
                    println!(
                        "{:<16} {:<7} {:>10} {:>8} {:>10}",
                        q.name, q.paused, q.available, q.running, q.scheduled
                    );
                }
            }
        }
        QueuesCommand::Pause { name } | QueuesCommand::Resume { name }
            if name.trim().is_empty() =>
        {
            return Err(CliError::BadInput("queue name is empty".into()));
        }
        QueuesCommand::Pause { name } => {
            admin::set_queue_paused(&pool, &name, true, now).await?;
            println!("queue {name} paused");
        }
        QueuesCommand::Resume { name } => {
            admin::set_queue_paused(&pool, &name, false, now).await?;
            println!("queue {name} resumed");
        }
    }
    pool.close().await;
    Ok(())
}
