//! The states of workflow steps and runs, their one table of allowed transitions each, and
//! the pure planner that decides which pending steps become ready or skipped. No SQL.
//!
//! Step: `pending` → `enqueued` (parents done, condition true) → `completed` | `failed`;
//! `pending` → `skipped` (a parent skipped, or the condition false); `pending`/`enqueued` →
//! `cancelled` (the run failed or was cancelled); `failed`/`cancelled` → `pending` (retry).
//! Run: `running` → `succeeded` | `failed` | `cancelled`; `failed`/`cancelled` → `running`.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde_json::Value;

use super::condition::{Condition, Verdict};
use super::def::WorkflowDef;
use super::WorkflowError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    Pending,
    Enqueued,
    Completed,
    Skipped,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepEvent {
    Enqueue,
    Complete,
    Skip,
    Fail,
    Cancel,
    Retry,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEvent {
    Succeed,
    Fail,
    Cancel,
    Retry,
}

impl StepState {
    pub const ALL: [StepState; 6] = [
        StepState::Pending,
        StepState::Enqueued,
        StepState::Completed,
        StepState::Skipped,
        StepState::Failed,
        StepState::Cancelled,
    ];

    /// The step transition table (drawn in `docs/ARCHITECTURE.md`).
    pub fn transition(self, event: StepEvent) -> Result<StepState, WorkflowError> {
        use StepEvent as E;
        use StepState as S;
        Ok(match (self, event) {
            (S::Pending, E::Enqueue) => S::Enqueued,
            (S::Pending, E::Skip) => S::Skipped,
            (S::Pending | S::Enqueued, E::Cancel) => S::Cancelled,
            (S::Enqueued, E::Complete) => S::Completed,
            // Pending → failed: the step's job could not be enqueued (its args are refused).
            (S::Enqueued | S::Pending, E::Fail) => S::Failed,
            (S::Failed | S::Cancelled, E::Retry) => S::Pending,
            (from, event) => {
                return Err(WorkflowError::InvalidTransition(format!(
                    "step {from} on {event:?}"
                )))
            }
        })
    }

    /// Done for the purpose of the run: nothing more will happen to it without a retry.
    pub fn is_final(self) -> bool {
        !matches!(self, StepState::Pending | StepState::Enqueued)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Enqueued => "enqueued",
            StepState::Completed => "completed",
            StepState::Skipped => "skipped",
            StepState::Failed => "failed",
            StepState::Cancelled => "cancelled",
        }
    }
}

impl RunState {
    pub const ALL: [RunState; 4] = [
        RunState::Running,
        RunState::Succeeded,
        RunState::Failed,
        RunState::Cancelled,
    ];

    /// The run transition table.
    pub fn transition(self, event: RunEvent) -> Result<RunState, WorkflowError> {
        use RunEvent as E;
        use RunState as S;
        Ok(match (self, event) {
            (S::Running, E::Succeed) => S::Succeeded,
            (S::Running, E::Fail) => S::Failed,
            (S::Running, E::Cancel) => S::Cancelled,
            (S::Failed | S::Cancelled, E::Retry) => S::Running,
            (from, event) => {
                return Err(WorkflowError::InvalidTransition(format!(
                    "run {from} on {event:?}"
                )))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }
}

macro_rules! text_enum {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $t {
            type Err = WorkflowError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <$t>::ALL
                    .into_iter()
                    .find(|x| x.as_str() == s)
                    .ok_or_else(|| WorkflowError::Corrupt(format!("unknown state `{s}`")))
            }
        }
    };
}
text_enum!(StepState);
text_enum!(RunState);

/// A step's row as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct StepStatus {
    pub state: StepState,
    pub output: Option<Value>,
}

/// What the planner decided for a pending step.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Enqueue { step: String, note: Option<String> },
    Skip { step: String, note: String },
}

/// Decides every pending step whose parents are all final, propagating skips downwards
/// until nothing changes. Pure: the engine applies the decisions in the run's transaction.
pub fn plan(def: &WorkflowDef, steps: &HashMap<String, StepStatus>) -> Vec<Decision> {
    let mut state: HashMap<&str, StepState> =
        steps.iter().map(|(k, v)| (k.as_str(), v.state)).collect();
    let mut out = Vec::new();
    loop {
        let mut changed = false;
        for s in &def.steps {
            if state.get(s.id.as_str()) != Some(&StepState::Pending) {
                continue;
            }
            let parents: Vec<StepState> = s
                .after
                .iter()
                .map(|p| state.get(p.as_str()).copied().unwrap_or(StepState::Pending))
                .collect();
            if parents.iter().any(|p| !p.is_final()) {
                continue;
            }
            let decision = if let Some(p) = s
                .after
                .iter()
                .find(|p| state.get(p.as_str()) != Some(&StepState::Completed))
            {
                Decision::Skip {
                    step: s.id.clone(),
                    note: format!("parent `{p}` did not complete"),
                }
            } else {
                decide_condition(&s.id, s.when.as_deref(), steps)
            };
            let next = match &decision {
                Decision::Enqueue { .. } => StepState::Enqueued,
                Decision::Skip { .. } => StepState::Skipped,
            };
            state.insert(s.id.as_str(), next);
            out.push(decision);
            changed = true;
        }
        if !changed {
            return out;
        }
    }
}

fn decide_condition(id: &str, when: Option<&str>, steps: &HashMap<String, StepStatus>) -> Decision {
    let Some(when) = when else {
        return Decision::Enqueue {
            step: id.to_string(),
            note: None,
        };
    };
    // Conditions were validated at load; a snapshot that no longer parses is skipped with
    // the reason rather than run unguarded.
    let verdict = match Condition::parse(when) {
        Ok(c) => c.evaluate(&|s: &str| steps.get(s).and_then(|st| st.output.as_ref())),
        Err(e) => Verdict::Missing(format!("(condition does not parse: {e})")),
    };
    match verdict {
        Verdict::True => Decision::Enqueue {
            step: id.to_string(),
            note: Some(format!("`{when}` held")),
        },
        Verdict::False => Decision::Skip {
            step: id.to_string(),
            note: format!("`{when}` was false"),
        },
        Verdict::Missing(field) => Decision::Skip {
            step: id.to_string(),
            note: format!("`{when}` was false: field `{field}` is missing"),
        },
    }
}

/// The run's end once every step is final: failed if one failed, cancelled if one was
/// cancelled, else succeeded. `None` while a step is pending or enqueued.
pub fn run_outcome<'a>(states: impl Iterator<Item = &'a StepState>) -> Option<RunEvent> {
    let mut event = RunEvent::Succeed;
    for s in states {
        match s {
            StepState::Pending | StepState::Enqueued => return None,
            StepState::Failed => event = RunEvent::Fail,
            StepState::Cancelled if event == RunEvent::Succeed => event = RunEvent::Cancel,
            _ => {}
        }
    }
    Some(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::def::StepDef;
    use serde_json::json;

    fn step(id: &str, after: &[&str], when: Option<&str>) -> StepDef {
        StepDef {
            id: id.into(),
            job: "noop".into(),
            after: after.iter().map(|s| s.to_string()).collect(),
            when: when.map(str::to_string),
            args: Default::default(),
        }
    }

    fn trade_cycle() -> WorkflowDef {
        WorkflowDef {
            name: "trade-cycle".into(),
            description: String::new(),
            steps: vec![
                step("collect", &[], None),
                step("evaluate", &["collect"], None),
                step("review", &["evaluate"], Some("evaluate.signal == 'entry'")),
                step("buy", &["review"], Some("review.confirmed == true")),
                step("sell", &["evaluate"], Some("evaluate.signal == 'exit'")),
            ],
        }
    }

    fn status(pairs: &[(&str, StepState, Option<Value>)]) -> HashMap<String, StepStatus> {
        pairs
            .iter()
            .map(|(k, s, o)| {
                (
                    k.to_string(),
                    StepStatus {
                        state: *s,
                        output: o.clone(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn roots_are_enqueued_first() {
        use StepState::*;
        let s = status(&[
            ("collect", Pending, None),
            ("evaluate", Pending, None),
            ("review", Pending, None),
            ("buy", Pending, None),
            ("sell", Pending, None),
        ]);
        let d = plan(&trade_cycle(), &s);
        assert_eq!(
            d,
            vec![Decision::Enqueue {
                step: "collect".into(),
                note: None
            }]
        );
    }

    #[test]
    fn a_false_condition_skips_the_step_and_everything_below_it() {
        use StepState::*;
        let s = status(&[
            ("collect", Completed, None),
            ("evaluate", Completed, Some(json!({"signal": "exit"}))),
            ("review", Pending, None),
            ("buy", Pending, None),
            ("sell", Pending, None),
        ]);
        let d = plan(&trade_cycle(), &s);
        let skipped: Vec<_> = d
            .iter()
            .filter_map(|d| match d {
                Decision::Skip { step, .. } => Some(step.as_str()),
                _ => None,
            })
            .collect();
        let enqueued: Vec<_> = d
            .iter()
            .filter_map(|d| match d {
                Decision::Enqueue { step, .. } => Some(step.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(skipped, vec!["review", "buy"]);
        assert_eq!(enqueued, vec!["sell"]);
    }

    #[test]
    fn a_missing_field_is_recorded_on_the_skipped_step() {
        use StepState::*;
        let s = status(&[
            ("collect", Completed, None),
            ("evaluate", Completed, Some(json!({}))),
            ("review", Pending, None),
            ("buy", Pending, None),
            ("sell", Pending, None),
        ]);
        let d = plan(&trade_cycle(), &s);
        assert!(
            matches!(&d[0], Decision::Skip { step, note } if step == "review" && note.contains("evaluate.signal")),
            "{d:?}"
        );
    }

    #[test]
    fn a_step_waits_for_every_parent() {
        use StepState::*;
        let def = WorkflowDef {
            name: "j".into(),
            description: String::new(),
            steps: vec![
                step("a", &[], None),
                step("b", &[], None),
                step("c", &["a", "b"], None),
            ],
        };
        let s = status(&[
            ("a", Completed, None),
            ("b", Enqueued, None),
            ("c", Pending, None),
        ]);
        assert!(plan(&def, &s).is_empty());
    }

    #[test]
    fn outcome_of_a_run() {
        use StepState::*;
        assert_eq!(
            run_outcome([Completed, Skipped].iter()),
            Some(RunEvent::Succeed)
        );
        assert_eq!(
            run_outcome([Completed, Failed, Cancelled].iter()),
            Some(RunEvent::Fail)
        );
        assert_eq!(
            run_outcome([Completed, Cancelled].iter()),
            Some(RunEvent::Cancel)
        );
        assert_eq!(run_outcome([Completed, Enqueued].iter()), None);
    }

    #[test]
    fn transition_tables_refuse_the_impossible() {
        assert!(StepState::Completed.transition(StepEvent::Retry).is_err());
        assert!(StepState::Skipped.transition(StepEvent::Enqueue).is_err());
        assert_eq!(
            StepState::Failed.transition(StepEvent::Retry).unwrap(),
            StepState::Pending
        );
        assert!(RunState::Succeeded.transition(RunEvent::Retry).is_err());
        assert_eq!(
            RunState::Failed.transition(RunEvent::Retry).unwrap(),
            RunState::Running
        );
    }
}
