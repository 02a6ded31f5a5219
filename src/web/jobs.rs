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
use sqlx::PgPool;

use super::auth::Session;
use super::dashboard::DashState;
use super::error::WebError;
use super::layout::{self, badge, opt_time, page, post_button, time};
use crate::queue::admin::{errors_of, get_job};
use crate::queue::job::JOB_COLUMNS;
use crate::queue::{Job, JobId, JobState};

pub const PAGE_SIZE: i64 = 50;
/// Text search looks at the newest [`SEARCH_WINDOW_JOBS`] jobs created in the last week only:
/// an ILIKE over every row of a million-row table takes seconds (measured 2.6 s for a miss
/// over 1M rows), and older jobs are mostly pruned anyway. Ids only grow, so the row bound is
/// a primary-key range, cheap whatever the table's size.
pub const SEARCH_WINDOW_DAYS: i64 = 7;
pub const SEARCH_WINDOW_JOBS: i64 = 50_000;

/// The filter as the query string (and the bulk form) carries it; empty fields are unset.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct JobQuery {
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub queue: String,
    #[serde(default)]
    pub q: String,
    /// Keyset cursor: show jobs with a smaller id.
    pub before: Option<i64>,
    /// Set by an action's redirect to say what it did.
    #[serde(default)]
    pub msg: String,
}

fn non_empty(s: &str) -> Option<&str> {
    Some(s.trim()).filter(|s| !s.is_empty())
}

/// `%`, `_` and `\` match themselves: the text is searched for literally.
pub fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl JobQuery {
    pub fn state(&self) -> Result<Option<JobState>, WebError> {
        non_empty(&self.state)
            .map(|s| s.parse::<JobState>())
            .transpose()
            .map_err(|_| WebError::BadRequest(format!("unknown state `{}`", self.state)))
    }

    /// The filter part of a URL (no cursor, no message).
    pub fn to_query_string(&self) -> String {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("state", self.state.trim())
            .append_pair("kind", self.kind.trim())
            .append_pair("queue", self.queue.trim())
            .append_pair("q", &self.q)
            .finish()
    }
}

/// Every filter is a bound parameter; `$8` restricts to states an action applies to.
/// Newest first by id: the primary key scanned backwards between two bounds — the keyset
/// cursor `$4` (no OFFSET: page 1000 is as fast as page 1) and, for a text search, the
/// window of the newest `$9` ids. Both bounds are plain `id` comparisons (no `$n IS NULL OR`
/// around them) so that even PostgreSQL's generic plan for this prepared statement uses
/// them as index conditions.
const MATCHING: &str = "FROM jobs
 WHERE id < coalesce($4::int8, 9223372036854775807)
   AND id > CASE WHEN $5::text IS NULL THEN 0
                 ELSE (SELECT coalesce(max(id), 0) FROM jobs) - $9 END
   AND ($1::job_state IS NULL OR state = $1)
   AND ($2::text IS NULL OR kind = $2)
   AND ($3::text IS NULL OR queue = $3)
   AND ($5::text IS NULL OR (created_at >= $6
        AND (args::text ILIKE '%' || $5 || '%' ESCAPE '\\'
             OR errors::text ILIKE '%' || $5 || '%' ESCAPE '\\')))
   AND ($8::text[] IS NULL OR state = ANY($8::text[]::job_state[]))
 ORDER BY id DESC LIMIT $7";

fn bind_filter<'q, O>(
    q: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    f: &JobQuery,
    state: Option<JobState>,
    before: Option<i64>,
    now: DateTime<Utc>,
    limit: i64,
    states: Option<Vec<&'static str>>,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    q.bind(state)
        .bind(non_empty(&f.kind).map(str::to_string))
        .bind(non_empty(&f.queue).map(str::to_string))
        .bind(before)
        .bind(non_empty(&f.q).map(like_escape))
        .bind(now - chrono::Duration::days(SEARCH_WINDOW_DAYS))
        .bind(limit)
        .bind(states)
        .bind(SEARCH_WINDOW_JOBS)
}

/// One page of matching jobs, newest first.
pub async fn search(
    pool: &PgPool,
    f: &JobQuery,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Job>, WebError> {
    let sql = format!("SELECT {JOB_COLUMNS} {MATCHING}");
    let q = sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(sql));
    let rows = bind_filter(q, f, f.state()?, f.before, now, limit, None)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// The ids of the next batch of matching jobs in `states`, below `before`.
pub async fn matching_ids(
    pool: &PgPool,
    f: &JobQuery,
    states: &[JobState],
    before: Option<i64>,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<i64>, WebError> {
    let sql = format!("SELECT id {MATCHING}");
    let q = sqlx::query_as::<_, (i64,)>(sqlx::AssertSqlSafe(sql));
    let rows = bind_filter(
        q,
        f,
        f.state()?,
        before,
        now,
        limit,
        Some(states.iter().map(|s| s.as_str()).collect()),
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

struct JobRow(Job);

impl sqlx::FromRow<'_, sqlx::postgres::PgRow> for JobRow {
    fn from_row(row: &sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        Job::from_row(row).map(JobRow)
    }
}

pub async fn list_page(
    State(st): State<DashState>,
    Extension(s): Extension<Session>,
    Query(f): Query<JobQuery>,
) -> Result<Html<String>, WebError> {
    let now = st.clock.now();
    let mut jobs = search(&st.pool, &f, now, PAGE_SIZE + 1).await?;
    let more = jobs.len() as i64 > PAGE_SIZE;
    jobs.truncate(PAGE_SIZE as usize);
    let next = more.then(|| jobs.last().map(|j| j.id.0)).flatten();
    let body = html! {
        h1 { "Jobs" }
        (filter_form(&f))
        (bulk_form(&s, &f))
        div.tbl { table {
            thead { tr { th { "id" } th { "kind" } th.hide-sm { "queue" } th { "state" }
                th.hide-sm { "attempt" } th { "created" } th.hide-sm { "last error" } } }
            tbody {
                @for j in &jobs { (job_row(j, now)) }
                @if jobs.is_empty() { tr { td colspan="7" .muted { "No job matches." } } }
            }
        } }
        p {
            @if f.before.is_some() { a.btn href={ "/jobs?" (f.to_query_string()) } { "Newest" } " " }
            @if let Some(n) = next { a.btn href={ "/jobs?" (f.to_query_string()) "&before=" (n) } { "Older →" } }
        }
    };
    let notice = non_empty(&f.msg);
    Ok(Html(page("Jobs", "jobs", &s, notice, body).into_string()))
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
            label title="Searches the newest 50,000 jobs of the last 7 days" {
                "Text in args or errors (recent jobs)" input name="q" value=(f.q) size="22"; }
            button.primary type="submit" { "Filter" }
            a.btn href="/jobs" { "Clear" }
        }
    }
}

/// "Apply to all matching": the current filter travels in hidden fields.
fn bulk_form(s: &Session, f: &JobQuery) -> Markup {
    html! {
        @if s.can_act() {
            form.card.filters method="post" action="/jobs/bulk" {
                (layout::csrf_field(s))
                input type="hidden" name="state" value=(f.state);
                input type="hidden" name="kind" value=(f.kind);
                input type="hidden" name="queue" value=(f.queue);
                input type="hidden" name="q" value=(f.q);
                span.muted { "All jobs matching this filter:" }
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

#[cfg(test)]
mod tests {
    use super::like_escape;

    #[test]
    fn like_wildcards_and_the_escape_character_are_escaped() {
        assert_eq!(like_escape("50%_off"), "50\\%\\_off");
        assert_eq!(like_escape("a\\b"), "a\\\\b");
        assert_eq!(like_escape("it's"), "it's");
    }
}
