//! The jobs list's filter (state, kind, queue, text in args or errors) and the queries
//! behind it, shared by the jobs page and the bulk actions so that "all matching" means
//! what the list shows. It owns how much of the table one request may read; it renders
//! nothing.
//!
//! A filtered request reads a bounded **window**: at most the newest [`FILTER_WINDOW`]
//! jobs below the cursor (of the asked kind, through `jobs_kind_id_idx`), or
//! [`TEXT_WINDOW`] when the filter has text, whose `ILIKE` costs microseconds a row; it
//! stops early once the page is full. A filter that matches nothing therefore costs one
//! window, not a walk over every row (1.4 s at 1M jobs), and the page says which ids it
//! searched and links to the next window. Unfiltered pages need no window: their first 50
//! rows are the newest 50.

use serde::Deserialize;
use sqlx::PgPool;

use super::error::WebError;
use crate::queue::job::JOB_COLUMNS;
use crate::queue::{Job, JobState};

pub const PAGE_SIZE: i64 = 50;
/// Jobs one request with only equality filters (state, kind, queue) examines. Measured
/// at 1M jobs under wrk at 50 connections on two cores (docs/BENCHMARKS.md, "Dashboard"):
/// a 10,000-row window cost ~10 ms a request and p99 ~300 ms for a filter that matches
/// nothing; 3,000 keeps one request near 3 ms. A filter that matches 1 row in 25 still
/// fills a page from one window.
pub const FILTER_WINDOW: i64 = 3_000;
/// Jobs one text search examines: `ILIKE` over `args::text` and `errors::text` costs
/// ~5 µs a row (the jsonb-to-text cast and the match), so a window is ~2 ms; "search
/// older" continues below it. A trigram index would make it one lookup, but its entries
/// for every args on every state change would land on the queue's hot path.
pub const TEXT_WINDOW: i64 = 400;

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

pub fn non_empty(s: &str) -> Option<&str> {
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

    pub fn has_text(&self) -> bool {
        non_empty(&self.q).is_some()
    }

    /// How many jobs one page request may examine; `None` when nothing is filtered.
    pub fn window(&self) -> Option<i64> {
        if self.has_text() {
            Some(TEXT_WINDOW)
        } else if [&self.state, &self.kind, &self.queue]
            .iter()
            .any(|s| non_empty(s).is_some())
        {
            Some(FILTER_WINDOW)
        } else {
            None
        }
    }
}

/// The ids `lo..=hi` one page examined, and whether older jobs are left to search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Searched {
    pub lo: i64,
    pub hi: i64,
    pub older: bool,
}

/// One page of the list: the jobs, the cursor of the next page, and (for a windowed
/// filter) the range it searched.
#[derive(Debug)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    pub next: Option<i64>,
    /// `None` for an unfiltered page; `Some(None)` when no job is left below the cursor.
    pub searched: Option<Option<Searched>>,
}

/// The newest `$2` jobs below the cursor `$1`: the oldest id, and how many (fewer than `$2`:
/// no older job). An index-only scan of the primary key backwards; no lock (a plain read).
/// Only run when a windowed page did not fill.
const WINDOW_ALL: &str = "SELECT min(id), count(*) FROM
 (SELECT id FROM jobs WHERE id < $1 ORDER BY id DESC LIMIT $2) w";

/// The same window over the jobs of kind `$3`, through `jobs_kind_id_idx (kind, id)`, so a
/// kind that matches nothing answers at once. No lock. Run unprepared (planned with the
/// kind's value): PostgreSQL's generic plan, made after five runs of a prepared statement,
/// guessed 1 row in 21 for any kind and walked the primary key instead (1.7 s for `nope`).
const WINDOW_OF_KIND: &str = "SELECT min(id), count(*) FROM
 (SELECT id FROM jobs WHERE kind = $3 AND id < $1 ORDER BY id DESC LIMIT $2) w";

/// The filter's conditions, shared by [`MATCHING`] and the windowed queries. Every filter
/// is a bound parameter: `$1` state, `$2` kind, `$3` queue, `$5` text (LIKE-escaped), `$8`
/// the states an action applies to.
macro_rules! filter_conditions {
    () => {
        "($1::job_state IS NULL OR state = $1)
   AND ($2::text IS NULL OR kind = $2)
   AND ($3::text IS NULL OR queue = $3)
   AND ($5::text IS NULL OR args::text ILIKE '%' || $5 || '%' ESCAPE '\\'
        OR errors::text ILIKE '%' || $5 || '%' ESCAPE '\\')
   AND ($8::text[] IS NULL OR state = ANY($8::text[]::job_state[]))"
    };
}

/// Matching jobs in `$6..$4`, newest first: the primary key scanned backwards between the
/// keyset cursor `$4` (no OFFSET: page 1000 is as fast as page 1) and the floor `$6`. Both
/// bounds are plain `id` comparisons (no `$n IS NULL OR` around them) so that even
/// PostgreSQL's generic plan for this prepared statement uses them as index conditions.
/// Used unwindowed (floor 0) by the unfiltered page and by the bulk actions. No lock.
const MATCHING: &str = concat!(
    "FROM jobs WHERE id < $4 AND id >= $6 AND ",
    filter_conditions!(),
    " ORDER BY id DESC LIMIT $7"
);

/// Matching jobs among the newest `$6` below the cursor `$4`: the inner LIMIT bounds what
/// one request reads, the outer one stops as soon as the page is full (a common state
/// reads ~1,300 rows, not the window). Primary key backwards; no lock.
const WINDOWED: &str = concat!(
    "FROM (SELECT * FROM jobs WHERE id < $4 ORDER BY id DESC LIMIT $6) jobs WHERE ",
    filter_conditions!(),
    " ORDER BY id DESC LIMIT $7"
);

/// The same among the newest `$6` jobs of kind `$2`, through `jobs_kind_id_idx (kind, id)`
/// when the kind is rare (the planner's choice: a common kind reads the primary key). Run
/// unprepared, planned with the kind's value (see [`WINDOW_OF_KIND`]). No lock.
const WINDOWED_OF_KIND: &str = concat!(
    "FROM (SELECT * FROM jobs WHERE kind = $2 AND id < $4 ORDER BY id DESC LIMIT $6) jobs WHERE ",
    filter_conditions!(),
    " ORDER BY id DESC LIMIT $7"
);

/// The newest id below the cursor `$1` (of kind `$2` when given): where a full windowed
/// page's search began. One probe of the primary key or `jobs_kind_id_idx`; no lock.
const NEWEST_BELOW: &str = "SELECT max(id) FROM jobs WHERE id < $1";
const NEWEST_OF_KIND_BELOW: &str = "SELECT max(id) FROM jobs WHERE id < $1 AND kind = $2";

/// What a query may examine: ids in `floor..before`, or the newest `size` below `before`.
#[derive(Debug, Clone, Copy)]
enum Scope {
    Range { floor: i64, before: i64 },
    Window { before: i64, size: i64 },
}

fn bind_filter<'q, O>(
    q: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    f: &JobQuery,
    scope: Scope,
    limit: i64,
    states: Option<Vec<&'static str>>,
) -> Result<sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>, WebError> {
    let (before, floor_or_size) = match scope {
        Scope::Range { floor, before } => (before, floor),
        Scope::Window { before, size } => (before, size),
    };
    Ok(q.bind(f.state()?)
        .bind(non_empty(&f.kind).map(str::to_string))
        .bind(non_empty(&f.queue).map(str::to_string))
        .bind(before)
        .bind(non_empty(&f.q).map(like_escape))
        .bind(floor_or_size)
        .bind(limit)
        .bind(states)
        .persistent(non_empty(&f.kind).is_none()))
}

async fn matching(
    pool: &PgPool,
    f: &JobQuery,
    scope: Scope,
    limit: i64,
) -> Result<Vec<Job>, WebError> {
    let from = match (scope, non_empty(&f.kind)) {
        (Scope::Range { .. }, _) => MATCHING,
        (Scope::Window { .. }, None) => WINDOWED,
        (Scope::Window { .. }, Some(_)) => WINDOWED_OF_KIND,
    };
    let sql = format!("SELECT {JOB_COLUMNS} {from}");
    let q = sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(sql));
    let rows = bind_filter(q, f, scope, limit, None)?
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// The window of `size` jobs below `before` that `f` searches: `(lo, rows)`.
async fn window(
    pool: &PgPool,
    f: &JobQuery,
    before: i64,
    size: i64,
) -> Result<(Option<i64>, i64), WebError> {
    let q = match non_empty(&f.kind) {
        Some(kind) => sqlx::query_as(WINDOW_OF_KIND)
            .bind(before)
            .bind(size)
            .bind(kind.to_string())
            .persistent(false),
        None => sqlx::query_as(WINDOW_ALL).bind(before).bind(size),
    };
    Ok(q.fetch_one(pool).await?)
}

/// The newest job below `before` that `f`'s window can hold (of its kind, if any).
async fn newest_below(pool: &PgPool, f: &JobQuery, before: i64) -> Result<Option<i64>, WebError> {
    let q = match non_empty(&f.kind) {
        Some(kind) => sqlx::query_scalar(NEWEST_OF_KIND_BELOW)
            .bind(before)
            .bind(kind.to_string())
            .persistent(false),
        None => sqlx::query_scalar(NEWEST_BELOW).bind(before),
    };
    Ok(q.fetch_one(pool).await?)
}

/// One page of matching jobs, newest first, below `f.before`.
pub async fn search(pool: &PgPool, f: &JobQuery) -> Result<JobPage, WebError> {
    f.state()?; // an unknown state is a 400 even when no job is left to search
    let before = f.before.unwrap_or(i64::MAX);
    let Some(size) = f.window() else {
        let scope = Scope::Range { floor: 0, before };
        let mut jobs = matching(pool, f, scope, PAGE_SIZE + 1).await?;
        let next = cut_page(&mut jobs);
        return Ok(JobPage {
            jobs,
            next,
            searched: None,
        });
    };
    let Some(hi) = newest_below(pool, f, before).await? else {
        let searched = Some(None);
        return Ok(JobPage {
            jobs: Vec::new(),
            next: None,
            searched,
        });
    };
    // Pinned below the newest job now, so jobs enqueued meanwhile are never counted as
    // searched by the window query that may follow.
    let top = hi.saturating_add(1);
    let scope = Scope::Window { before: top, size };
    let mut jobs = matching(pool, f, scope, PAGE_SIZE + 1).await?;
    let searched = match cut_page(&mut jobs) {
        // A full page: the search reached down to its last job, the next page goes on.
        Some(last) => Searched {
            lo: last,
            hi,
            older: true,
        },
        None => {
            let (lo, rows) = window(pool, f, top, size).await?;
            Searched {
                lo: lo.unwrap_or(hi),
                hi,
                older: rows == size,
            }
        }
    };
    let next = searched.older.then_some(searched.lo);
    Ok(JobPage {
        jobs,
        next,
        searched: Some(Some(searched)),
    })
}

/// Keeps the first [`PAGE_SIZE`] jobs; the last one's id when there were more.
fn cut_page(jobs: &mut Vec<Job>) -> Option<i64> {
    let more = jobs.len() as i64 > PAGE_SIZE;
    jobs.truncate(PAGE_SIZE as usize);
    more.then(|| jobs.last().map(|j| j.id.0)).flatten()
}

/// The ids of the next batch of jobs matching `f` in `states`, in `floor..before`.
pub async fn matching_ids(
    pool: &PgPool,
    f: &JobQuery,
    states: &[JobState],
    floor: i64,
    before: i64,
    limit: i64,
) -> Result<Vec<i64>, WebError> {
    let sql = format!("SELECT id {MATCHING}");
    let q = sqlx::query_as::<_, (i64,)>(sqlx::AssertSqlSafe(sql));
    let states = Some(states.iter().map(|s| s.as_str()).collect());
    let rows = bind_filter(q, f, Scope::Range { floor, before }, limit, states)?
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

#[cfg(test)]
mod tests {
    use super::{like_escape, JobQuery, FILTER_WINDOW, TEXT_WINDOW};

    #[test]
    fn like_wildcards_and_the_escape_character_are_escaped() {
        assert_eq!(like_escape("50%_off"), "50\\%\\_off");
        assert_eq!(like_escape("a\\b"), "a\\\\b");
        assert_eq!(like_escape("it's"), "it's");
    }

    #[test]
    fn only_a_filtered_list_reads_a_window_and_text_reads_the_small_one() {
        let q = |state: &str, kind: &str, text: &str| JobQuery {
            state: state.into(),
            kind: kind.into(),
            q: text.into(),
            ..JobQuery::default()
        };
        assert_eq!(q("", "", "").window(), None);
        assert_eq!(q(" ", "", "  ").window(), None);
        assert_eq!(q("discarded", "", "").window(), Some(FILTER_WINDOW));
        assert_eq!(q("", "noop", "").window(), Some(FILTER_WINDOW));
        assert_eq!(q("", "noop", "order").window(), Some(TEXT_WINDOW));
    }
}
