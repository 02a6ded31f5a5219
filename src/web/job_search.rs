//! The jobs list's filter (state, kind, queue, text in args or errors) and the queries
//! behind it, shared by the jobs page and the bulk actions so that "all matching" means
//! what the list shows. It owns how much of the table one request may read; it renders
//! nothing.
//!
//! A filtered request reads a bounded **window**: at most the newest [`FILTER_WINDOW`]
//! jobs below the cursor that meet the indexed part of the filter (its kind, through
//! `jobs_kind_id_idx`; a discarded or cancelled state, through `jobs_failed_id_idx`), or
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
/// Jobs one request examines when an index picks them (a kind, a discarded or cancelled
/// state; see `Driver`): they lie scattered over the table, one heap page read each
/// (~2.5 µs, against ~0.5 µs a row for the newest jobs, which share pages), so the window
/// is smaller for the same cost. It only matters when the rest of the filter (queue)
/// rejects most of them; otherwise the page fills from its first ~50.
pub const INDEXED_WINDOW: i64 = 1_000;
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

    /// The filter's state when it has an index of its own ([`INDEXED_STATES`]): the
    /// window then holds only jobs in that state.
    pub fn indexed_state(&self) -> Option<JobState> {
        self.state()
            .ok()
            .flatten()
            .filter(|s| INDEXED_STATES.contains(s))
    }

    pub fn has_text(&self) -> bool {
        non_empty(&self.q).is_some()
    }

    /// How many jobs one page request may examine; `None` when nothing is filtered.
    pub fn window(&self) -> Option<i64> {
        if self.has_text() {
            Some(TEXT_WINDOW)
        } else if Driver::of(self) != Driver::All {
            Some(INDEXED_WINDOW)
        } else if [&self.state, &self.queue]
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

/// The states with an index of their own, `jobs_failed_id_idx (state, id)` (migration
/// 0010, partial, so the queue's completions never enter it): the ones people filter on
/// to find what went wrong. The other states are either most of the table (completed) or
/// a small, new tail of it (available, running), which the newest window finds.
const INDEXED_STATES: [JobState; 2] = [JobState::Discarded, JobState::Cancelled];

/// What defines a filter's window: the conditions an index answers. The window is "the
/// newest `size` jobs below the cursor that meet these"; the rest of the filter (queue,
/// text, a state without an index) is checked on each of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driver {
    /// The primary key: every job is in the window.
    All,
    /// `jobs_kind_id_idx (kind, id)`.
    Kind,
    /// `jobs_failed_id_idx (state, id)`.
    State,
    /// Either index, the planner's choice with the values in hand.
    KindAndState,
}

impl Driver {
    fn of(f: &JobQuery) -> Self {
        let kind = non_empty(&f.kind).is_some();
        let state = f.indexed_state().is_some();
        match (kind, state) {
            (false, false) => Driver::All,
            (true, false) => Driver::Kind,
            (false, true) => Driver::State,
            (true, true) => Driver::KindAndState,
        }
    }

    /// The window's conditions besides `id < $4`, in [`filter_conditions`]'s numbering.
    fn conditions(self) -> &'static str {
        match self {
            Driver::All => "",
            Driver::Kind => " AND kind = $2",
            Driver::State => " AND state = $1",
            Driver::KindAndState => " AND kind = $2 AND state = $1",
        }
    }

    /// Whether the statement may be prepared once and reused. A query through an index is
    /// run unprepared, planned with the values in hand: PostgreSQL's generic plan, made
    /// after five runs of a prepared statement, guessed 1 row in 21 for any kind and walked
    /// the primary key instead (1.7 s for `kind=nope`), and a partial index is only usable
    /// when the planner can see that `state = $1` implies its predicate.
    fn persistent(self) -> bool {
        self == Driver::All
    }
}

/// The window query: the newest `$6` jobs below the cursor `$4` that meet the driver's
/// conditions, read backwards through its index. No lock (a plain read).
fn window_of(driver: Driver, select: &str) -> String {
    format!(
        "SELECT {select} FROM jobs WHERE id < $4{} ORDER BY id DESC LIMIT $6",
        driver.conditions()
    )
}

/// Matching jobs among the window (see [`window_of`]): the inner LIMIT bounds what one
/// request reads, the outer one stops as soon as the page is full (a common state reads
/// ~1,300 rows, not the window; an indexed state or kind reads ~50). No lock.
fn windowed_sql(driver: Driver) -> String {
    format!(
        "SELECT {JOB_COLUMNS} FROM ({}) jobs WHERE {} ORDER BY id DESC LIMIT $7",
        window_of(driver, "*"),
        filter_conditions!()
    )
}

/// What a query may examine: ids in `floor..before`, or the newest `size` below `before`.
#[derive(Debug, Clone, Copy)]
enum Scope {
    Range { floor: i64, before: i64 },
    Window { before: i64, size: i64 },
}

type Args = sqlx::postgres::PgArguments;

/// Binds the filter in [`filter_conditions`]'s numbering; a statement may leave some of
/// the eight unused (their types travel with the bind, so PostgreSQL needs no guess).
fn bind_filter<'q, O>(
    q: sqlx::query::QueryAs<'q, sqlx::Postgres, O, Args>,
    f: &JobQuery,
    scope: Scope,
    limit: i64,
    states: Option<Vec<&'static str>>,
) -> Result<sqlx::query::QueryAs<'q, sqlx::Postgres, O, Args>, WebError> {
    let (before, floor_or_size) = match scope {
        Scope::Range { floor, before } => (before, floor),
        Scope::Window { before, size } => (before, size),
    };
    let persistent = match scope {
        Scope::Range { .. } => non_empty(&f.kind).is_none(),
        Scope::Window { .. } => Driver::of(f).persistent(),
    };
    Ok(q.bind(f.state()?)
        .bind(non_empty(&f.kind).map(str::to_string))
        .bind(non_empty(&f.queue).map(str::to_string))
        .bind(before)
        .bind(non_empty(&f.q).map(like_escape))
        .bind(floor_or_size)
        .bind(limit)
        .bind(states)
        .persistent(persistent))
}

async fn matching(
    pool: &PgPool,
    f: &JobQuery,
    scope: Scope,
    limit: i64,
) -> Result<Vec<Job>, WebError> {
    let sql = match scope {
        Scope::Range { .. } => format!("SELECT {JOB_COLUMNS} {MATCHING}"),
        Scope::Window { .. } => windowed_sql(Driver::of(f)),
    };
    let q = sqlx::query_as::<_, JobRow>(sqlx::AssertSqlSafe(sql));
    let rows = bind_filter(q, f, scope, limit, None)?
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// The window of `size` jobs below `before` that `f` searches: `(lo, rows)`, fewer rows
/// than `size` when no older job meets the driver. An index-only scan; no lock. Only run
/// when a windowed page did not fill.
async fn window(
    pool: &PgPool,
    f: &JobQuery,
    before: i64,
    size: i64,
) -> Result<(Option<i64>, i64), WebError> {
    let sql = format!(
        "SELECT min(id), count(*) FROM ({}) w",
        window_of(Driver::of(f), "id")
    );
    let q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
    let scope = Scope::Window { before, size };
    Ok(bind_filter(q, f, scope, 0, None)?.fetch_one(pool).await?)
}

/// The newest job below `before` that `f`'s window can hold: where a page's search
/// begins. One probe of the driver's index; no lock.
async fn newest_below(pool: &PgPool, f: &JobQuery, before: i64) -> Result<Option<i64>, WebError> {
    let sql = format!(
        "SELECT max(id) FROM jobs WHERE id < $4{}",
        Driver::of(f).conditions()
    );
    let q = sqlx::query_as::<_, (Option<i64>,)>(sqlx::AssertSqlSafe(sql));
    let scope = Scope::Window { before, size: 0 };
    Ok(bind_filter(q, f, scope, 0, None)?.fetch_one(pool).await?.0)
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
    use super::{like_escape, JobQuery, FILTER_WINDOW, INDEXED_WINDOW, TEXT_WINDOW};

    #[test]
    fn like_wildcards_and_the_escape_character_are_escaped() {
        assert_eq!(like_escape("50%_off"), "50\\%\\_off");
        assert_eq!(like_escape("a\\b"), "a\\\\b");
        assert_eq!(like_escape("it's"), "it's");
    }

    #[test]
    fn only_a_filtered_list_reads_a_window_an_indexed_one_and_text_read_smaller_ones() {
        let q = |state: &str, kind: &str, text: &str| JobQuery {
            state: state.into(),
            kind: kind.into(),
            q: text.into(),
            ..JobQuery::default()
        };
        assert_eq!(q("", "", "").window(), None);
        assert_eq!(q(" ", "", "  ").window(), None);
        assert_eq!(q("completed", "", "").window(), Some(FILTER_WINDOW));
        assert_eq!(q("discarded", "", "").window(), Some(INDEXED_WINDOW));
        assert_eq!(q("cancelled", "", "").window(), Some(INDEXED_WINDOW));
        assert_eq!(q("", "noop", "").window(), Some(INDEXED_WINDOW));
        assert_eq!(q("available", "noop", "").window(), Some(INDEXED_WINDOW));
        assert_eq!(q("", "noop", "order").window(), Some(TEXT_WINDOW));
        let queue = JobQuery {
            queue: "trading".into(),
            ..JobQuery::default()
        };
        assert_eq!(queue.window(), Some(FILTER_WINDOW));
    }
}
