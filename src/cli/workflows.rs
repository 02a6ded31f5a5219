//! `workflows …`: the definitions, starting a run by hand, showing a run's steps, retrying
//! a failed run from its failed steps, cancelling a run.

use clap::Subcommand;
use serde_json::Value;

use super::run::{connect_and_migrate, registry};
use super::{cli_actor, print_json, CliError, DefDirs};
use crate::clock::{Clock, SystemClock};
use crate::workflow::{store, WorkflowEngine, WorkflowError};

#[derive(Debug, Subcommand)]
pub enum WorkflowsCommand {
    /// The workflow definitions and their recent runs.
    List,
    /// Start a run now; `--args` are merged into every step's args.
    Run {
        name: String,
        #[arg(long, default_value = "{}")]
        args: String,
    },
    /// A run and each step's state.
    Show { run: i64 },
    /// Resume a failed (or cancelled) run from its failed steps.
    Retry { run: i64 },
    /// Cancel a running run.
    Cancel { run: i64 },
}

pub async fn run(cmd: WorkflowsCommand, dirs: &DefDirs, json: bool) -> Result<(), CliError> {
    let clock = SystemClock;
    let registry = registry();
    let defs = match &cmd {
        WorkflowsCommand::List | WorkflowsCommand::Run { .. } => dirs.load(&registry)?.workflows,
        _ => Vec::new(),
    };
    let run_args: Option<Value> = match &cmd {
        WorkflowsCommand::Run { args, .. } => Some(serde_json::from_str(args).map_err(|e| {
            CliError::BadInput(format!(
                "--args is not valid JSON: {e} (got {args:?}); nothing was started"
            ))
        })?),
        _ => None,
    };
    let pool = connect_and_migrate(2).await?;
    let engine = WorkflowEngine::new(registry.clone());
    let now = clock.now();
    match cmd {
        WorkflowsCommand::List => {
            let mut out = Vec::new();
            for d in &defs {
                let runs = store::recent_runs(&pool, Some(&d.name), 5).await?;
                out.push(serde_json::json!({"name": d.name, "description": d.description,
                    "steps": d.steps.iter().map(|s| &s.id).collect::<Vec<_>>(), "recent_runs": runs}));
                if !json {
                    let last = runs
                        .first()
                        .map(|r| {
                            format!(
                                "last run {} {} ({})",
                                r.id,
                                r.state,
                                r.created_at.format("%Y-%m-%d %H:%M:%SZ")
                            )
                        })
                        .unwrap_or_else(|| "never run".into());
                    let steps: Vec<&str> = d.steps.iter().map(|s| s.id.as_str()).collect();
                    println!("{:<20} {:<45} {last}", d.name, steps.join(" → "));
                }
            }
            if json {
                print_json(&out)?;
            }
        }
        WorkflowsCommand::Run { name, .. } => {
            let def = defs.iter().find(|d| d.name == name).ok_or_else(|| {
                WorkflowError::UnknownWorkflow {
                    name: name.clone(),
                    known: defs
                        .iter()
                        .map(|d| d.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                }
            })?;
            let mut tx = pool.begin().await?;
            let id = engine
                .start_run(
                    &mut tx,
                    def,
                    run_args.unwrap_or_default(),
                    &cli_actor(),
                    now,
                )
                .await?;
            tx.commit().await?;
            if json {
                print_json(&serde_json::json!({"run_id": id, "workflow": name}))?;
            } else {
                println!("started workflow {name}: run {id} (see `coinpilot workflows show {id}`)");
            }
        }
        WorkflowsCommand::Show { run } => {
            let mut conn = pool.acquire().await?;
            let view = store::show_run(&mut conn, run).await?;
            if json {
                print_json(&view)?;
            } else {
                print_run(&view);
            }
        }
        WorkflowsCommand::Retry { run } => {
            let mut tx = pool.begin().await?;
            let steps = engine.retry_run(&mut tx, run, now).await?;
            tx.commit().await?;
            if json {
                print_json(&serde_json::json!({"run_id": run, "retried_steps": steps}))?;
            } else {
                println!("run {run} resumed from: {}", steps.join(", "));
            }
        }
        WorkflowsCommand::Cancel { run } => {
            let mut tx = pool.begin().await?;
            engine.cancel_run(&mut tx, run, now, &cli_actor()).await?;
            tx.commit().await?;
            if json {
                print_json(&serde_json::json!({"run_id": run, "state": "cancelled"}))?;
            } else {
                println!("run {run} cancelled");
            }
        }
    }
    pool.close().await;
    Ok(())
}

fn print_run(v: &store::RunView) {
    let r = &v.run;
    println!(
        "run {}  workflow {}  {}  (triggered by {})",
        r.id, r.workflow, r.state, r.triggered_by
    );
    println!(
        "started {}  finished {}",
        r.created_at,
        r.finished_at
            .map(|t| t.to_string())
            .unwrap_or_else(|| "-".into())
    );
    println!("args {}", v.args);
    println!(
        "{:<12} {:<18} {:<10} {:<10} {:<12} NOTE / OUTPUT",
        "STEP", "KIND", "STATE", "JOB", "AFTER"
    );
    for s in &v.steps {
        let job = match (s.job_id, &s.job_state) {
            (Some(id), Some(st)) => format!("{id}:{st}"),
            (Some(id), None) => id.to_string(),
            _ => "-".into(),
        };
        let detail = match (&s.note, &s.output) {
            (Some(n), Some(o)) => format!("{n}; output {o}"),
            (Some(n), None) => n.clone(),
            (None, Some(o)) => format!("output {o}"),
            _ => String::new(),
        };
        println!(
            "{:<12} {:<18} {:<10} {:<10} {:<12} {detail}",
            s.step,
            s.kind,
            s.state,
            job,
            s.after.join(",")
        );
    }
}
