//! The jobs list's bounded search: a filtered page reads one window of ids, says which,
//! and links to the next; a bulk action over a text search acts on that range only.

use axum::http::StatusCode;
use coinpilot::web::job_search::{FILTER_WINDOW, INDEXED_WINDOW, TEXT_WINDOW};
use serde_json::json;

use super::*;

/// `n` completed `noop` jobs in one statement (a window's worth is thousands).
async fn add_fillers(d: &Dash, n: i64) {
    sqlx::query(
        "INSERT INTO jobs (kind, queue, args, run_at, state, created_at, started_at, finished_at)
         SELECT 'noop', 'default', jsonb_build_object('filler', g), now(), 'completed',
                now(), now(), now()
         FROM generate_series(1, $1) g",
    )
    .bind(n)
    .execute(&d.db.pool)
    .await
    .unwrap();
}

async fn max_id(d: &Dash) -> i64 {
    sqlx::query_scalar("SELECT max(id) FROM jobs")
        .fetch_one(&d.db.pool)
        .await
        .unwrap()
}

fn search_path(q: &str) -> String {
    let qs = form_urlencoded::Serializer::new(String::new())
        .append_pair("q", q)
        .finish();
    format!("/jobs?{qs}")
}

/// The page's "Search older →" link, unescaped.
fn older_link(body: &str) -> Option<String> {
    let end = body.find("\">Search older")?;
    let start = body[..end].rfind("href=\"")? + "href=\"".len();
    Some(body[start..end].replace("&amp;", "&"))
}

/// A hidden field's value in the bulk form.
fn hidden(body: &str, name: &str) -> Option<String> {
    let key = format!("name=\"{name}\" value=\"");
    let start = body.find(&key)? + key.len();
    Some(body[start..start + body[start..].find('"')?].to_string())
}

#[tokio::test]
async fn a_text_match_older_than_the_first_window_is_found_by_search_older() {
    let d = setup().await;
    let needle = add_job(&d, "noop", json!({"note": "order 999 needle"})).await;
    add_fillers(&d, TEXT_WINDOW + 5).await;
    let top = max_id(&d).await;
    let l = login(&d, "admin", ADMIN_PW).await;

    let first = send(&d.app, get(&search_path("999 NEEDLE"), Some(&l.cookie))).await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(
        listed_ids(&first.body).is_empty(),
        "outside the first window"
    );
    let lo = top - TEXT_WINDOW + 1;
    assert!(
        first
            .body
            .contains(&format!("Searched jobs #{lo}–#{top}: 0 matches")),
        "the page says what it searched"
    );
    assert!(first.body.contains("Older jobs are not searched yet."));

    let older = older_link(&first.body).expect("a search older link");
    assert!(older.ends_with(&format!("&before={lo}")), "{older}");
    let second = send(&d.app, get(&older, Some(&l.cookie))).await;
    assert_eq!(listed_ids(&second.body), vec![needle]);
    assert!(second
        .body
        .contains(&format!("Searched jobs #{needle}–#{}: 1 match", lo - 1)));
    assert!(second.body.contains("no older job exists"));
    assert!(older_link(&second.body).is_none(), "nothing left to search");
}

#[tokio::test]
async fn a_full_page_of_text_matches_says_it_searched_down_to_its_last_job() {
    let d = setup().await;
    add_fillers(&d, 120).await;
    let top = max_id(&d).await;
    let l = login(&d, "admin", ADMIN_PW).await;
    let r = send(&d.app, get(&search_path("filler"), Some(&l.cookie))).await;
    let ids = listed_ids(&r.body);
    assert_eq!(ids.len(), 50);
    let last = ids[49];
    assert!(r
        .body
        .contains(&format!("Searched jobs #{last}–#{top}: 50 matches")));
    let next = send(&d.app, get(&older_link(&r.body).unwrap(), Some(&l.cookie))).await;
    assert_eq!(
        listed_ids(&next.body)[0],
        last - 1,
        "no match skipped between pages"
    );
}

#[tokio::test]
async fn a_rare_kind_is_found_on_the_first_page_however_many_newer_jobs() {
    let d = setup().await;
    let rare = add_job(&d, "rare_kind", json!({})).await;
    add_fillers(&d, FILTER_WINDOW + 5).await;
    let l = login(&d, "admin", ADMIN_PW).await;
    let r = send(&d.app, get("/jobs?kind=rare_kind", Some(&l.cookie))).await;
    assert_eq!(
        listed_ids(&r.body),
        vec![rare],
        "the kind's window skips other kinds"
    );
    assert!(r
        .body
        .contains(&format!("Searched jobs #{rare}–#{rare}: 1 match")));
    let r = send(&d.app, get("/jobs?kind=nope", Some(&l.cookie))).await;
    assert!(listed_ids(&r.body).is_empty());
    assert!(r.body.contains("No job of kind nope left to search."));
    // A filter the window does not index (queue) pages through the newest jobs instead.
    let r = send(&d.app, get("/jobs?queue=nope", Some(&l.cookie))).await;
    let top = max_id(&d).await;
    let lo = top - FILTER_WINDOW + 1;
    assert!(r
        .body
        .contains(&format!("Searched jobs #{lo}–#{top}: 0 matches")));
    assert!(older_link(&r.body)
        .unwrap()
        .ends_with(&format!("&before={lo}")));
}

/// `n` discarded `noop` jobs in queue `queue`, in one statement.
async fn add_discarded(d: &Dash, n: i64, queue: &str) {
    sqlx::query(
        "INSERT INTO jobs (kind, queue, args, run_at, attempt, state, created_at, started_at,
                           finished_at)
         SELECT 'noop', $2, '{}', now(), 1, 'discarded', now(), now(), now()
         FROM generate_series(1, $1) g",
    )
    .bind(n)
    .bind(queue)
    .execute(&d.db.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_discarded_job_behind_any_number_of_completed_ones_is_on_the_first_page() {
    let d = setup().await;
    let old = add_job(&d, "noop", json!({})).await;
    discard_all(&d).await;
    add_fillers(&d, FILTER_WINDOW + 5).await;
    let l = login(&d, "admin", ADMIN_PW).await;

    let r = send(&d.app, get("/jobs?state=discarded", Some(&l.cookie))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        listed_ids(&r.body),
        vec![old],
        "found through its state's index"
    );
    assert!(r
        .body
        .contains(&format!("Searched jobs #{old}–#{old}: 1 match")));
    assert!(r.body.contains("no older job exists"));
    // With a kind too, either index may answer: the same one job.
    let r = send(
        &d.app,
        get("/jobs?state=discarded&kind=noop", Some(&l.cookie)),
    )
    .await;
    assert_eq!(listed_ids(&r.body), vec![old]);
    let r = send(&d.app, get("/jobs?state=cancelled", Some(&l.cookie))).await;
    assert!(listed_ids(&r.body).is_empty());
    assert!(
        r.body.contains("No cancelled job left to search."),
        "the window holds only cancelled jobs, and says so"
    );
    let r = send(
        &d.app,
        get("/jobs?state=cancelled&kind=noop", Some(&l.cookie)),
    )
    .await;
    assert!(r
        .body
        .contains("No cancelled job of kind noop left to search."));
    // A state without an index of its own still pages through the newest jobs.
    let r = send(&d.app, get("/jobs?state=running", Some(&l.cookie))).await;
    let top = max_id(&d).await;
    let lo = top - FILTER_WINDOW + 1;
    assert!(r
        .body
        .contains(&format!("Searched jobs #{lo}–#{top}: 0 matches")));
}

#[tokio::test]
async fn a_queue_filter_over_discarded_jobs_searches_a_window_of_discarded_jobs() {
    let d = setup().await;
    add_discarded(&d, 1, "rare").await;
    let rare = max_id(&d).await;
    add_discarded(&d, INDEXED_WINDOW, "default").await;
    add_fillers(&d, 10).await;
    let newest_discarded = max_id(&d).await - 10;
    let l = login(&d, "admin", ADMIN_PW).await;

    let first = send(
        &d.app,
        get("/jobs?state=discarded&queue=rare", Some(&l.cookie)),
    )
    .await;
    assert!(
        listed_ids(&first.body).is_empty(),
        "outside the first window"
    );
    let lo = newest_discarded - INDEXED_WINDOW + 1;
    assert!(
        first.body.contains(&format!(
            "Searched jobs #{lo}–#{newest_discarded}: 0 matches"
        )),
        "the window is the newest {INDEXED_WINDOW} discarded jobs, not the newest jobs"
    );
    let older = older_link(&first.body).expect("a search older link");
    let second = send(&d.app, get(&older, Some(&l.cookie))).await;
    assert_eq!(listed_ids(&second.body), vec![rare]);
    assert!(second.body.contains("no older job exists"));
}

#[tokio::test]
async fn bulk_retry_over_a_text_search_acts_on_the_searched_range_only() {
    let d = setup().await;
    let old = add_job(&d, "noop", json!({"note": "needle"})).await;
    add_fillers(&d, TEXT_WINDOW).await;
    let new = add_job(&d, "noop", json!({"note": "needle"})).await;
    discard_all(&d).await;
    let l = login(&d, "admin", ADMIN_PW).await;
    let page = send(&d.app, get(&search_path("needle"), Some(&l.cookie))).await;
    assert_eq!(listed_ids(&page.body), vec![new]);
    let (from, to) = (
        hidden(&page.body, "from").unwrap(),
        hidden(&page.body, "to").unwrap(),
    );
    assert_eq!(to, new.to_string());
    assert!(
        page.body
            .contains(&format!("All jobs matching this filter in #{from}–#{to}")),
        "the form says what it covers"
    );
    let form = |range: bool| {
        let mut f = vec![
            ("csrf", l.csrf.as_str()),
            ("action", "retry"),
            ("q", "needle"),
        ];
        if range {
            f.extend([("from", from.as_str()), ("to", to.as_str())]);
        }
        post("/jobs/bulk", Some(&l.cookie), &f)
    };
    let r = send(&d.app, form(false)).await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "no range, no text bulk action"
    );
    let r = send(&d.app, form(true)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let location = r.location.unwrap();
    assert!(
        location.contains(&format!("before={}", new + 1)),
        "{location}"
    );
    let copied: Vec<i64> =
        sqlx::query_scalar("SELECT copied_from FROM jobs WHERE copied_from IS NOT NULL")
            .fetch_all(&d.db.pool)
            .await
            .unwrap();
    assert_eq!(copied, vec![new], "the older match ({old}) was never shown");
    let back = send(&d.app, get(&location, Some(&l.cookie))).await;
    assert!(back
        .body
        .contains(&format!("in jobs #{from}–#{to}: 1 jobs done")));
}
