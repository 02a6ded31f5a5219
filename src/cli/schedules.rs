//! `schedules …`: list with next fire times (in the schedule's zone and UTC), pause,
//! resume, trigger now, and sync from the files.

use clap::Subcommand;

use super::run::{connect_and_migrate, registry};
use super::{cli_actor, print_json, CliError, DefDirs};
use crate::clock::{Clock, SystemClock};
use crate::schedule::{self, store};
use crate::workflow::WorkflowEngine;

#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// Every schedule with its next fire times and last result.
    List {
        /// How many next fire times to show.
        #[arg(long, default_value_t = 3)]
        next: usize,
    },
    /// Pause a schedule (outlives restarts; wins over the file's `enabled`).
    Pause { name: String },
    /// Resume a paused schedule from its next fire after now.
    Resume { name: String },
    /// Fire a schedule now, by hand (recorded as a manual trigger).
    Trigger { name: String },
    /// Load the files and add/update their schedules; `--prune` disables the rest.
    Sync {
        #[arg(long)]
        prune: bool,
    },
}

pub async fn run(cmd: SchedulesCommand, dirs: &DefDirs, json: bool) -> Result<(), CliError> {
    let clock = SystemClock;
    let registry = registry();
    // Files that need loading are checked before the database is touched.
    let defs = match &cmd {
        SchedulesCommand::Sync { .. } | SchedulesCommand::Trigger { .. } => {
            Some(dirs.load(&registry)?)
        }
        _ => None,
    };
    let pool = connect_and_migrate(2).await?;
    let now = clock.now();
    match cmd {
        SchedulesCommand::List { next } => {
            let list = store::list(&pool, now, next.clamp(1, 100)).await?;
            if json {
                print_json(&list)?;
            } else {
                print_table(&list);
            }
        }
        SchedulesCommand::Pause { ref name } | SchedulesCommand::Resume { ref name } => {
            let pause = matches!(cmd, SchedulesCommand::Pause { .. });
            let mut tx = pool.begin().await?;
            store::set_paused(&mut tx, name, pause, now).await?;
            tx.commit().await?;
            let state = if pause { "paused" } else { "resumed" };
            if json {
                print_json(&serde_json::json!({ "schedule": name, "state": state }))?;
            } else {
                println!("schedule {name} {state}");
            }
        }
        SchedulesCommand::Trigger { name } => {
            let workflows = defs.map(|d| d.workflows).unwrap_or_default();
            let workflows = workflows.into_iter().map(|w| (w.name.clone(), w)).collect();
            let engine = WorkflowEngine::new(registry.clone());
            let firing = schedule::Firing {
                registry: &registry,
                engine: &engine,
                workflows: &workflows,
            };
            let t = schedule::trigger_now(&pool, &firing, &name, now, &cli_actor()).await?;
            if json {
                print_json(&t)?;
            } else if let Some(run) = t.run_id {
                println!(
                    "triggered {name}: workflow run {run} (by {})",
                    t.triggered_by
                );
            } else if let Some(job) = t.job_id {
                println!("triggered {name}: job {job} (by {})", t.triggered_by);
            }
        }
        SchedulesCommand::Sync { prune } => {
            let schedules = defs.map(|d| d.schedules).unwrap_or_default();
            // A mistyped --jobs-dir (or a run from the wrong directory) must not disable
            // every schedule: pruning needs files that define at least one.
            if prune && schedules.is_empty() {
                return Err(CliError::BadInput(format!(
                    "--prune: {} holds no schedule (missing or empty directory?); nothing was changed",
                    dirs.jobs.display()
                )));
            }
            let r = store::sync(&pool, &schedules, prune, now).await?;
            if json {
                print_json(&r)?;
            } else {
                println!(
                    "schedules from {}: {} added, {} updated, {} pruned{}",
                    dirs.jobs.display(),
                    r.added.len(),
                    r.updated.len(),
                    r.pruned.len(),
                    if r.pruned.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", r.pruned.join(", "))
                    }
                );
            }
        }
    }
    pool.close().await;
    Ok(())
}

fn print_table(list: &[store::ScheduleInfo]) {
    println!(
        "{:<22} {:<16} {:<12} {:<9} {:<28} {:<25} {:<22} LAST",
        "NAME", "CRON", "ZONE", "STATUS", "TARGET", "NEXT (ZONE)", "NEXT (UTC)"
    );
    for s in list {
        let target = format!("{}:{}", s.target_type, s.target);
        let next_local = s
            .next_fires_local
            .first()
            .cloned()
            .unwrap_or_else(|| "-".into());
        let next_utc = s
            .next_fires_utc
            .first()
            .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
            .unwrap_or_else(|| "-".into());
        let last = match (&s.last_trigger, &s.last_result) {
            (Some(t), Some(r)) => format!("{t} → {r}"),
            (Some(t), None) => t.clone(),
            _ => "never".into(),
        };
        println!(
            "{:<22} {:<16} {:<12} {:<9} {:<28} {:<25} {:<22} {last}",
            s.name, s.cron, s.timezone, s.status, target, next_local, next_utc
        );
    }
}
