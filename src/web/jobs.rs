//! The jobs pages: the filtered list (state, kind, queue, text in args or errors) with
//! keyset pagination, and a job's detail (args, every attempt's error, timeline). The
//! filter is shared with the bulk actions, so "all matching" means what the list shows.

use axum::extract::{Path, Query, State};
use axum::response::Html;
use axum::Extension;
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::auth::Session;
use super::dashboard::DashState;
use super::error::WebError;
pub use super::job_search::{like_escape, JobQuery, PAGE_SIZE};
use super::job_search::{non_empty, search, Searched, FILTER_WINDOW, INDEXED_WINDOW, TEXT_WINDOW};
use super::layout::{self, badge, opt_time, page, post_button, time};
use crate::queue::admin::{errors_of, get_job};
use crate::queue::{Job, JobId, JobState};

pub async fn list_page(
    State(st): State<DashState>,
    Extension(s): Extension<Session>,
    Query(f): Query<JobQuery>,
) -> Result<Html<String>, WebError> {
    let now = st.clock.now();
    let found = search(&st.pool, &f).await?;
    let searched = found.searched.flatten();
    let body = html! {
        h1 { "Jobs" }
        (filter_form(&f))
        (bulk_form(&s, &f, searched))
        @if let Some(w) = found.searched { (searched_line(&f, w, found.jobs.len())) }
        div.tbl { table {
            thead { tr { th { "id" } th { "kind" } th.hide-sm { "queue" } th { "state" }
                th.hide-sm { "attempt" } th { "created" } th.hide-sm { "last error" } } }
            tbody {
                @for j in &found.jobs { (job_row(j, now)) }
                @if found.jobs.is_empty() { tr { td colspan="7" .muted { "No job matches." } } }
            }
        } }
        p {
            @if f.before.is_some() { a.btn href={ "/jobs?" (f.to_query_string()) } { "Newest" } " " }
            @if let Some(n) = found.next {
                a.btn href={ "/jobs?" (f.to_query_string()) "&before=" (n) } {
                    @if found.searched.is_some() { "Search older →" } @else { "Older →" }
                }
            }
        }
    };
    let notice = non_empty(&f.msg);
    Ok(Html(page("Jobs", "jobs", &s, notice, body).into_string()))
}

/// What a windowed page covered, said plainly: no match is silently left out.
fn searched_line(f: &JobQuery, w: Option<Searched>, matches: usize) -> Markup {
    let below = f.before.map(|b| format!(" below #{b}")).unwrap_or_default();
    html! {
        p.searched.muted {
            @match w {
                // The window of a kind (or an indexed state) holds only those: say so,
                // not "no job".
                None => {
                    "No " @if let Some(s) = f.indexed_state() { (s.as_str()) " " }
                    "job" @if let Some(k) = non_empty(&f.kind) { " of kind " (k) }
                    (below) " left to search."
                }
                Some(w) => {
                    "Searched jobs #" (w.lo) "–#" (w.hi) ": " (matches)
                    @if matches == 1 { " match" } @else { " matches" }
                    @if w.older { ". Older jobs are not searched yet." }
                    @else { "; no older job exists." }
                }
            }
        }
    }
}

fn job_row(j: &Job, now: DateTime<Utc>) -> Markup {
    let last_error = errors_of(j)
        .last()
        .and_then(|e| e.get("message").and_then(Value::as_str).map(short));
    html! {
        tr {
            td.num { a href={ "/jobs/" (j.id) } { (j.id) } }
            td { (j.kind) }
            td.hide-sm { (j.queue) }
            td { (badge(j.display_state(now))) }
            td.num.hide-sm { (j.attempt) "/" (j.max_attempts) }
            td { (time(j.created_at)) }
            td.hide-sm.muted { (last_error.unwrap_or_default()) }
        }
    }
}

fn short(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn filter_form(f: &JobQuery) -> Markup {
    html! {
        form.card.filters method="get" action="/jobs" {
            label { "State" select name="state" {
                option value="" { "any" }
                @for st in JobState::ALL {
                    option value=(st.as_str()) selected[f.state.trim() == st.as_str()] { (st.as_str()) }
                }
            } }
            label { "Kind" input name="kind" value=(f.kind) size="14"; }
            label { "Queue" input name="queue" value=(f.queue) size="10"; }
            label title={ "Each page searches " (TEXT_WINDOW) " jobs (" (INDEXED_WINDOW)
                " of a kind or of a discarded or cancelled state, " (FILTER_WINDOW)
                " for the other filters) and says which; \"Search older\" goes on" } {
                "Text in args or errors" input name="q" value=(f.q) size="22"; }
            button.primary type="submit" { "Filter" }
            a.btn href="/jobs" { "Clear" }
        }
    }
}

/// "Apply to all matching": the current filter travels in hidden fields. A text filter
/// acts only on the ids this page searched (`from`..=`to`, said on the form), never on
/// matches nobody has seen; the other filters act on every match, as paging shows them.
fn bulk_form(s: &Session, f: &JobQuery, searched: Option<Searched>) -> Markup {
    let range = searched.filter(|_| f.has_text());
    html! {
        @if s.can_act() && (range.is_some() || !f.has_text()) {
            form.card.filters method="post" action="/jobs/bulk" {
                (layout::csrf_field(s))
                input type="hidden" name="state" value=(f.state);
                input type="hidden" name="kind" value=(f.kind);
                input type="hidden" name="queue" value=(f.queue);
                input type="hidden" name="q" value=(f.q);
                @if let Some(w) = range {
                    input type="hidden" name="from" value=(w.lo);
                    input type="hidden" name="to" value=(w.hi);
                    span.muted { "All jobs matching this filter in #" (w.lo) "–#" (w.hi)
                        " (the range searched below):" }
                } @else {
                    span.muted { "All jobs matching this filter:" }
                }
                button type="submit" name="action" value="retry" { "Retry all" }
                button.danger type="submit" name="action" value="cancel" { "Cancel all" }
                button.danger type="submit" name="action" value="discard" { "Discard all" }
            }
        }
    }
}

/// The `?msg=` an action's redirect carries, shown once as a notice.
#[derive(Debug, Default, Deserialize)]
pub struct Notice {
    #[serde(default)]
    pub msg: String,
}

impl Notice {
    pub fn text(&self) -> Option<&str> {
        non_empty(&self.msg)
    }
}

pub async fn detail_page(
    State(st): State<DashState>,
    Extension(s): Extension<Session>,
    Path(id): Path<i64>,
    Query(n): Query<Notice>,
) -> Result<Html<String>, WebError> {
    let mut conn = st.pool.acquire().await?;
    let job = get_job(&mut conn, JobId(id), false).await?;
    drop(conn);
    let now = st.clock.now();
    let title = format!("Job {id}");
    let body = html! {
        h1 { "Job " (id) " " (badge(job.display_state(now))) }
        div.card { (job_actions(&s, &job)) }
        div.card { (job_facts(&job)) }
        h2 { "Args" }
        pre { (pretty(&job.args)) }
        @if let Some(o) = &job.output { h2 { "Output" } pre { (pretty(o)) } }
        h2 { "Attempts' errors" }
        (errors_list(&job))
    };
    Ok(Html(page(&title, "jobs", &s, n.text(), body).into_string()))
}

fn job_actions(s: &Session, j: &Job) -> Markup {
    let base = format!("/jobs/{}", j.id);
    let live = matches!(j.state, JobState::Available | JobState::Running);
    html! {
        @if j.state != JobState::Running {
            (post_button(s, &format!("{base}/retry"), "Retry now", "primary")) " "
        }
        @if live {
            (post_button(s, &format!("{base}/cancel"), "Cancel", "danger")) " "
            (post_button(s, &format!("{base}/discard"), "Discard", "danger"))
        }
        @if !s.can_act() { span.muted { "Read-only account." } }
    }
}

fn job_facts(j: &Job) -> Markup {
    html! {
        table { tbody {
            tr { th { "kind" } td { (j.kind) } th { "queue" } td { (j.queue) } }
            tr { th { "attempt" } td { (j.attempt) " of " (j.max_attempts) } th { "priority" } td { (j.priority) } }
            tr { th { "created" } td { (time(j.created_at)) } th { "run at" } td { (time(j.run_at)) } }
            tr { th { "started" } td { (opt_time(j.started_at)) } th { "finished" } td { (opt_time(j.finished_at)) } }
            tr { th { "worker" } td { (j.worker.as_deref().unwrap_or("—")) }
                 th { "enqueued by" } td { (j.enqueued_by.as_deref().unwrap_or("—")) } }
            @if let Some(c) = j.copied_from {
                tr { th { "copy of" } td colspan="3" { a href={ "/jobs/" (c) } { "job " (c) } } }
            }
            @if let Some(r) = j.workflow_run_id {
                tr { th { "workflow" } td colspan="3" {
                    a href={ "/workflows/runs/" (r) } { "run " (r) }
                    " step " (j.workflow_step.as_deref().unwrap_or("?"))
                } }
            }
        } }
    }
}

fn errors_list(j: &Job) -> Markup {
    let errors = errors_of(j);
    html! {
        @if errors.is_empty() { p.muted { "No failed attempt." } }
        @for e in &errors {
            div.card {
                b { "attempt " (e.get("attempt").map(Value::to_string).unwrap_or_default()) }
                " " span.muted { (e.get("at").and_then(Value::as_str).unwrap_or("")) }
                " " (e.get("kind").and_then(Value::as_str).map(badge).unwrap_or_default())
                pre { (e.get("message").and_then(Value::as_str).unwrap_or("")) }
                @if let Some(chain) = e.get("chain").and_then(Value::as_array).filter(|c| !c.is_empty()) {
                    ul { @for c in chain { li { (c.as_str().map(str::to_string).unwrap_or_else(|| c.to_string())) } } }
                }
            }
        }
    }
}

pub fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}
