//! Crash points for the fault suite: `COINPILOT_FAILPOINT=NAME` makes the process abort
//! (as SIGKILL would end it: no unwinding, no destructors, no commit) the first time it
//! reaches the point of that name. Unset, a failpoint costs one relaxed load.
//!
//! Points: `workflow.step_completed` — inside a step job's completion transaction, after
//! the step was marked completed and its children were enqueued, before the commit.

use std::sync::OnceLock;

static ARMED: OnceLock<Option<String>> = OnceLock::new();

/// Aborts the process if `name` is the armed failpoint.
pub fn hit(name: &str) {
    let armed = ARMED.get_or_init(|| {
        std::env::var("COINPILOT_FAILPOINT")
            .ok()
            .filter(|s| !s.is_empty())
    });
    if armed.as_deref() == Some(name) {
        eprintln!("failpoint {name}: aborting the process");
        std::process::abort();
    }
}
