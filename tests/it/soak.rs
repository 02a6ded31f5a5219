//! The long versions of the fault suite (`--soak MINUTES`): each test here repeats one
//! chaos test, with fresh databases and new seeds, until `COINPILOT_SOAK_MINUTES` have
//! passed, and fails on the first round that breaks an invariant. They are `#[ignore]`d, so
//! `cargo test` (and `.ci/run`) never runs them; `.ci/soak --soak MINUTES` does:
//! `COINPILOT_SOAK_MINUTES=M cargo test --release --test it -- --ignored --test-threads 1 soak::`.
//! Each round's figures go to stderr; the totals are printed at the end.

use std::time::{Duration, Instant};

use crate::chaos::{env_or, five_workers_per_second, sigkill_drain};
use crate::chaos_paper::paper_burst;
use crate::support::one_heavy_test_at_a_time;

/// How long each soak test runs: `COINPILOT_SOAK_MINUTES`, 10 when unset.
fn soak_length() -> Duration {
    Duration::from_secs(env_or("COINPILOT_SOAK_MINUTES", 10) as u64 * 60)
}

/// A round starts only while the soak has time left, so a soak ends within one round of
/// its length.
fn rounds_until(length: Duration) -> impl Iterator<Item = u64> {
    let start = Instant::now();
    (0u64..).take_while(move |_| start.elapsed() < length)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a soak: run with .ci/soak --soak MINUTES"]
async fn soak_sigkilled_workers() {
    let _heavy = one_heavy_test_at_a_time();
    let n = env_or("COINPILOT_CHAOS_JOBS", 20_000);
    let kills = env_or("COINPILOT_CHAOS_KILLS", 6);
    let (mut rounds, mut rescues) = (0, 0);
    for _ in rounds_until(soak_length()) {
        rescues += sigkill_drain(n, kills).await;
        rounds += 1;
    }
    eprintln!(
        "soak chaos: {rounds} rounds, {} jobs, {} kills, {rescues} rescues within the bound, 0 lost",
        rounds * n,
        rounds * kills
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a soak: run with .ci/soak --soak MINUTES"]
async fn soak_paper_burst() {
    let _heavy = one_heavy_test_at_a_time();
    let n = env_or("COINPILOT_PAPER_JOBS", 3_000);
    let kills = env_or("COINPILOT_PAPER_KILLS", 4);
    let seed = env_or("COINPILOT_CHAOS_SEED", fastrand::usize(..)) as u64;
    let (mut jobs, mut killed, mut fills, mut refused) = (0, 0, 0, 0);
    for round in rounds_until(soak_length()) {
        eprintln!(
            "soak paper: round {round}, seed {}",
            seed.wrapping_add(round)
        );
        let b = paper_burst(seed.wrapping_add(round), n, kills).await;
        jobs += b.jobs;
        killed += b.kills;
        fills += b.fills;
        refused += b.refused;
    }
    eprintln!("soak paper: {jobs} jobs, {killed} kills, {fills} fills, {refused} refused, ledger exact every round");
}

/// One long run rather than rounds: a per-second schedule across the whole soak.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a soak: run with .ci/soak --soak MINUTES"]
async fn soak_per_second_schedule() {
    let _heavy = one_heavy_test_at_a_time();
    let fires = five_workers_per_second(soak_length().as_secs()).await;
    eprintln!("soak schedule: {fires} fires, one job each, none missed or doubled");
}
