//! The read-only pages besides jobs: overview (and its JSON twin under `/api/`),
//! schedules, workflows and a run's DAG (trading is `trading_page`).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::Extension;
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use serde::Serialize;
use sqlx::{PgPool, Row};

use super::actions::WORKFLOW_SCHEDULE_ARGS;
use super::auth::Session;
use super::counts::FinalCounts;
use super::dag;
use super::dashboard::DashState;
use super::error::WebError;
use super::jobs::{pretty, Notice};
use super::layout::{age, badge, csrf_field, opt_time, page, post_button, time};
use crate::queue::JobState;
use crate::schedule::store as schedules;
use crate::workflow::store as runs;

/// A worker whose heartbeat is older than this is not counted as alive (heartbeats come
/// every third of a lease, 20 s by default).
const ALIVE_SECS: i64 = 120;

#[derive(Debug, Serialize)]
pub struct QueueRow {
    pub queue: String,
    pub paused: bool,
    /// Count per state, in [`JobState::ALL`] order.
    pub counts: Vec<i64>,
    pub oldest_available_secs: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct Overview {
    pub queues: Vec<QueueRow>,
    pub completed_last_hour: i64,
    pub discarded_last_hour: i64,
    pub workers_alive: Vec<String>,
    /// When the completed/discarded/cancelled counts were taken (`None`: exact, now); see
    /// `web::counts`.
    pub final_counts_as_of: Option<DateTime<Utc>>,
}

/// Finished in the last hour, through `jobs_finished_idx`.
const LAST_HOUR: &str = "SELECT count(*) FILTER (WHERE state = 'completed') AS completed,
        count(*) FILTER (WHERE state = 'discarded') AS discarded
 FROM jobs WHERE state IN ('completed', 'discarded', 'cancelled') AND finished_at >= $1";
/// Queues with a switch row (a queue without one is active), by primary key.
const QUEUE_SWITCHES: &str = "SELECT name, paused FROM queues";
/// Oldest due job per queue, through `jobs_claim_idx`.
const OLDEST: &str = "SELECT queue, min(run_at) AS oldest FROM jobs
 WHERE state = 'available' AND run_at <= $1 GROUP BY queue";

pub async fn load_overview(
    pool: &PgPool,
    counts: &Arc<FinalCounts>,
    now: DateTime<Utc>,
) -> Result<Overview, WebError> {
    // The queue switches only: the counts come from `web::counts` (`admin::list_queues`
    // counts live jobs with an `IN` the planner answers with a full scan at 1M rows).
    let switches: Vec<(String, bool)> = sqlx::query_as(QUEUE_SWITCHES).fetch_all(pool).await?;
    let mut queues: Vec<QueueRow> = switches
        .into_iter()
        .map(|(queue, paused)| QueueRow {
            queue,
            paused,
            counts: vec![0; JobState::ALL.len()],
            oldest_available_secs: None,
        })
        .collect();
    fn slot<'a>(qs: &'a mut Vec<QueueRow>, name: &str) -> &'a mut QueueRow {
        let i = match qs.iter().position(|q| q.queue == name) {
            Some(i) => i,
            None => {
                qs.push(QueueRow {
                    queue: name.to_string(),
                    paused: false,
                    counts: vec![0; JobState::ALL.len()],
                    oldest_available_secs: None,
                });
                qs.len() - 1
            }
        };
        &mut qs[i]
    }
    let counts = counts.load(pool, now).await?;
    for (q, st, n) in counts.rows {
        if let Some(i) = JobState::ALL.iter().position(|s| s.as_str() == st) {
            slot(&mut queues, &q).counts[i] = n;
        }
    }
    for r in sqlx::query(OLDEST).bind(now).fetch_all(pool).await? {
        let (q, at): (String, DateTime<Utc>) = (r.try_get(0)?, r.try_get(1)?);
        slot(&mut queues, &q).oldest_available_secs = Some((now - at).num_seconds().max(0));
    }
    queues.sort_by(|a, b| a.queue.cmp(&b.queue));
    let hour = sqlx::query(LAST_HOUR)
        .bind(now - chrono::Duration::hours(1))
        .fetch_one(pool)
        .await?;
    let workers_alive =
        sqlx::query_scalar("SELECT name FROM workers WHERE heartbeat_at >= $1 ORDER BY name")
            .bind(now - chrono::Duration::seconds(ALIVE_SECS))
            .fetch_all(pool)
            .await?;
    Ok(Overview {
        queues,
        completed_last_hour: hour.try_get("completed")?,
        discarded_last_hour: hour.try_get("discarded")?,
        workers_alive,
        final_counts_as_of: counts.final_as_of,
    })
}

pub async fn overview_json(State(st): State<DashState>) -> Result<Response, WebError> {
    let o = load_overview(&st.pool, &st.final_counts, st.clock.now()).await?;
    let body = serde_json::to_string(&o).map_err(|e| WebError::Internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

pub async fn overview(
    State(st): State<DashState>,
    Extension(s): Extension<Session>,
    Query(n): Query<Notice>,
) -> Result<Html<String>, WebError> {
    let o = load_overview(&st.pool, &st.final_counts, st.clock.now()).await?;
    let body = html! {
        h1 { "Overview" }
        div.grid {
            div.card.stat { b { (o.completed_last_hour) } span { "completed in the last hour" } }
            div.card.stat { b { (o.discarded_last_hour) } span { "discarded in the last hour" } }
            div.card.stat { b { (o.workers_alive.len()) } span { "workers alive" } }
        }
        h2 { "Queues" }
        div.tbl { table {
            thead { tr { th { "queue" } @for st in JobState::ALL { th { (st.as_str()) } }
                th { "oldest due" } th { "" } } }
            tbody { @for q in &o.queues { (queue_row(&s, q)) } }
        } }
        @if let Some(at) = o.final_counts_as_of {
            p.muted { small { "Completed, discarded and cancelled counts as of " (time(at))
                " UTC (on a table this large they are refreshed every "
                (st.final_counts.refresh_every().as_secs()) " s, not per page view)." } }
        }
        h2 { "Workers alive" }
        p { @for w in &o.workers_alive { span.b { (w) } " " }
            @if o.workers_alive.is_empty() { span.muted { "None in the last two minutes." } } }
    };
    let notice = n.text();
    Ok(Html(
        page("Overview", "overview", &s, notice, body).into_string(),
    ))
}

fn queue_row(s: &Session, q: &QueueRow) -> Markup {
    let action = if q.paused { "resume" } else { "pause" };
    html! {
        tr {
            td { (q.queue) @if q.paused { " " (badge("paused")) } }
            @for (i, n) in q.counts.iter().enumerate() {
                td.num { a href={ "/jobs?queue=" (q.queue) "&state=" (JobState::ALL[i].as_str()) } { (n) } }
            }
            td { (q.oldest_available_secs.map(age).unwrap_or_else(|| "—".into())) }
            td { (post_button(s, &format!("/queues/{}/{action}", q.queue), action, "")) }
        }
    }
}

pub async fn schedules(
    State(st): State<DashState>,
    Extension(s): Extension<Session>,
    Query(n): Query<Notice>,
) -> Result<Html<String>, WebError> {
    let list = schedules::list(&st.pool, st.clock.now(), 3).await?;
    let body = html! {
        h1 { "Schedules" }
        div.tbl { table {
            thead { tr { th { "name" } th { "status" } th.hide-sm { "cron" } th { "target" }
                th { "next fires" } th { "last result" } th { "" } } }
            tbody {
                @for sc in &list {
                    tr {
                        td { (sc.name) }
                        td { (badge(sc.status)) }
                        td.hide-sm { code { (sc.cron) } " " span.muted { (sc.timezone) } }
                        td { (sc.target_type) " " (sc.target) }
                        td { @for t in &sc.next_fires_local { (t) br; } }
                        td { (sc.last_result.as_deref().unwrap_or("—"))
                             br; span.muted { (opt_time(sc.last_fire_at)) } }
                        td {
                            @let base = format!("/schedules/{}", sc.name);
                            @if sc.status == "paused" { (post_button(&s, &format!("{base}/resume"), "Resume", "")) }
                            @else { (post_button(&s, &format!("{base}/pause"), "Pause", "")) }
                            " " (post_button(&s, &format!("{base}/trigger"), "Trigger now", "primary"))
                        }
                    }
                }
                @if list.is_empty() { tr { td colspan="7" .muted { "No schedule." } } }
            }
        } }
    };
    let notice = n.text();
    Ok(Html(
        page("Schedules", "schedules", &s, notice, body).into_string(),
    ))
}

pub async fn workflows(
    State(st): State<DashState>,
    Extension(s): Extension<Session>,
    Query(n): Query<Notice>,
) -> Result<Html<String>, WebError> {
    let recent = runs::recent_runs(&st.pool, None, 50).await?;
    let mut defs: Vec<_> = st.workflows.values().collect();
    defs.sort_by(|a, b| a.name.cmp(&b.name));
    // "Run now" starts with the args the workflow's schedule would pass (editable).
    let mut args = Vec::with_capacity(defs.len());
    for d in &defs {
        let a: Option<serde_json::Value> = sqlx::query_scalar(WORKFLOW_SCHEDULE_ARGS)
            .bind(&d.name)
            .fetch_optional(&st.pool)
            .await?;
        args.push(a.unwrap_or_else(|| serde_json::json!({})).to_string());
    }
    let body = html! {
        h1 { "Workflows" }
        div.card {
            @for (d, a) in defs.iter().zip(&args) {
                div { b { (d.name) } " " span.muted { (d.steps.len()) " steps" } " "
                    @if s.can_act() {
                        form.inline method="post" action={ "/workflows/" (d.name) "/run" } {
                            (csrf_field(&s))
                            input name="args" value=(a) size="28" aria-label="run args (JSON object)";
                            " " button.primary type="submit" { "Run now" }
                        }
                    }
                }
            }
            @if defs.is_empty() { span.muted { "This process loaded no workflow definition." } }
        }
        h2 { "Recent runs" }
        div.tbl { table {
            thead { tr { th { "run" } th { "workflow" } th { "state" } th.hide-sm { "triggered by" }
                th { "created" } th.hide-sm { "finished" } } }
            tbody { @for r in &recent { tr {
                td.num { a href={ "/workflows/runs/" (r.id) } { (r.id) } }
                td { (r.workflow) } td { (badge(r.state.as_str())) }
                td.hide-sm { (r.triggered_by) } td { (time(r.created_at)) }
                td.hide-sm { (opt_time(r.finished_at)) }
            } } }
        } }
    };
    let notice = n.text();
    Ok(Html(
        page("Workflows", "workflows", &s, notice, body).into_string(),
    ))
}

pub async fn run_detail(
    State(st): State<DashState>,
    Extension(s): Extension<Session>,
    Path(id): Path<i64>,
    Query(n): Query<Notice>,
) -> Result<Html<String>, WebError> {
    let mut conn = st.pool.acquire().await?;
    let run = runs::show_run(&mut conn, id).await?;
    drop(conn);
    let state = run.run.state.as_str();
    let base = format!("/workflows/runs/{id}");
    let body = html! {
        h1 { "Run " (id) " · " (run.run.workflow) " " (badge(state)) }
        div.card {
            span.muted { "triggered by " (run.run.triggered_by) ", created " (time(run.run.created_at)) } " "
            @if matches!(state, "failed" | "cancelled") { (post_button(&s, &format!("{base}/retry"), "Retry failed steps", "primary")) }
            @if state == "running" { (post_button(&s, &format!("{base}/cancel"), "Cancel run", "danger")) }
        }
        div.card.tbl { (dag::render(&run.steps)) }
        h2 { "Steps" }
        div.tbl { table {
            thead { tr { th { "step" } th { "kind" } th { "state" } th { "job" } th.hide-sm { "note" } } }
            tbody { @for st in &run.steps { tr {
                td { (st.step) } td { (st.kind) } td { (badge(st.state.as_str())) }
                td { @if let Some(j) = st.job_id { a href={ "/jobs/" (j) } { (j) } " " span.muted { (st.job_state.as_deref().unwrap_or("")) } } }
                td.hide-sm.muted { (st.note.as_deref().unwrap_or("")) }
            } } }
        } }
        h2 { "Args" }
        pre { (pretty(&run.args)) }
    };
    let notice = n.text();
    Ok(Html(
        page(&format!("Run {id}"), "workflows", &s, notice, body).into_string(),
    ))
}

pub async fn not_found() -> Response {
    WebError::NotFound.into_response()
}
