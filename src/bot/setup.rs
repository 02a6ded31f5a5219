//! Building the bot for a process: the market source, the reviewer and the strategy from
//! the configuration, and the offline demo's replay (its candles seeded up to the replay
//! start, so the indicators and the regime are warm at the first cycle).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;

use super::{Bot, BotError};
use crate::config::{self, MarketSource as SourceKind};
use crate::domain::candle::{Interval, Market};
use crate::domain::config::StrategyConfig;
use crate::domain::money::Krw;
use crate::market::replay::ReplaySource;
use crate::market::source::Replay;
use crate::market::store_page;

/// The shipped sample (see `data/SOURCES.md`).
pub const SAMPLE_MINUTES: &str = "data/upbit_KRW-BTC_1m_2025-09-20_2025-09-23.csv";
pub const SAMPLE_HOURS: &str = "data/upbit_KRW-BTC_1h_2025-09-08_2025-09-19.csv";
/// Where the demo's clock starts: 18 minutes before an entry, three hours before the
/// Seoul midnight whose daily report follows.
pub const DEMO_START: &str = "2025-09-22T11:50:00Z";

/// The replay's inputs (`up` flags).
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub minutes: PathBuf,
    pub hours: Option<PathBuf>,
    pub start: DateTime<Utc>,
    pub speed: f64,
}

impl Bot {
    /// A bot that can describe its kinds (queues, options) but never runs a job: for the
    /// commands that only validate or enqueue.
    pub fn inert() -> Bot {
        let market = Market::krw_btc();
        let empty = ReplaySource::empty(Interval::M1);
        Bot {
            strategy: StrategyConfig::default(),
            source: Arc::new(Replay {
                market,
                minutes: empty,
            }),
            reviewer: Arc::new(crate::ai::RulesReviewer::new(Default::default())),
            paper: crate::paper::PaperConfig::default(),
            account: crate::paper::job::DEFAULT_ACCOUNT.into(),
            starting_balance: crate::paper::default_balance(),
            initial_lookback: Duration::days(1),
            live: None,
        }
    }
}

/// The bot of a running process.
pub fn build(
    cfg: &config::Loaded,
    strategy: StrategyConfig,
    replay: Option<&ReplayOptions>,
    live: bool,
) -> Result<Bot, BotError> {
    let live = match (live, cfg.config.market.source) {
        (false, _) => None,
        (true, SourceKind::Upbit) => Some(Arc::new(
            crate::live::UpbitClient::from_secrets(
                crate::market::UpbitConfig::default(),
                &cfg.secrets,
            )
            .map_err(|e| BotError::Invalid(format!("--live: {e}")))?,
        )),
        (true, SourceKind::Replay) => return Err(BotError::Invalid(
            "--live needs market.source = \"upbit\" (live orders on replayed prices make no sense)"
                .into(),
        )),
    };
    let market = super::market_of(&cfg.config.market.market)?;
    let source: Arc<dyn crate::market::source::MarketSource> =
        match (cfg.config.market.source, replay) {
            (SourceKind::Replay, Some(r)) => Arc::new(Replay {
                market,
                minutes: ReplaySource::from_file(&r.minutes, Interval::M1)?,
            }),
            (SourceKind::Replay, None) => {
                return Err(BotError::Invalid(
                    "the replay source needs replay options".into(),
                ))
            }
            (SourceKind::Upbit, _) => Arc::new(crate::market::UpbitSource::new(
                crate::market::UpbitConfig::default(),
            )?),
        };
    let reviewer = crate::ai::from_config(&cfg.config.ai, &cfg.secrets, strategy.review)
        .map_err(|e| BotError::Invalid(format!("ai: {e}")))?;
    Ok(Bot {
        strategy,
        source,
        reviewer,
        paper: crate::paper::PaperConfig {
            orders: strategy.orders,
            ..crate::paper::PaperConfig::default()
        },
        account: crate::paper::job::DEFAULT_ACCOUNT.into(),
        starting_balance: Krw::new(cfg.config.paper.starting_balance_krw),
        initial_lookback: Duration::days(1),
        live,
    })
}

/// Stores the replay's hourly file and its minutes that closed by `until`, so the first
/// cycle decides with warm indicators. Idempotent (upserts).
pub async fn seed_replay(
    pool: &PgPool,
    market: &Market,
    r: &ReplayOptions,
    until: DateTime<Utc>,
) -> Result<(usize, usize), BotError> {
    let mut conn = pool.acquire().await?;
    let mut hours = 0;
    if let Some(h) = &r.hours {
        let src = ReplaySource::from_file(h, Interval::H1)?;
        let page = src.completed_by(until).to_vec();
        hours = page.len();
        store_page(&mut conn, market, Interval::H1, page, until).await?;
    }
    let minutes = ReplaySource::from_file(&r.minutes, Interval::M1)?;
    let done = minutes.completed_by(until);
    for chunk in done.chunks(5000) {
        store_page(&mut conn, market, Interval::M1, chunk.to_vec(), until).await?;
    }
    Ok((hours, done.len()))
}

/// Where a restarted demo resumes: after the newest stored minute, or at `start`.
pub async fn resume_point(
    pool: &PgPool,
    market: &Market,
    start: DateTime<Utc>,
) -> Result<DateTime<Utc>, BotError> {
    let mut conn = pool.acquire().await?;
    let newest = super::history::newest_minute(&mut conn, market).await?;
    Ok(newest
        .map(|t| (t + Duration::minutes(1)).max(start))
        .unwrap_or(start))
}

/// `strategy.toml` when present (validated), else the defaults.
pub fn load_strategy(path: &Path) -> Result<StrategyConfig, BotError> {
    if !path.is_file() {
        return Ok(StrategyConfig::default());
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| BotError::Invalid(format!("cannot read {}: {e}", path.display())))?;
    crate::domain::config::parse_strategy(&path.display().to_string(), &text)
        .map_err(|e| BotError::Invalid(e.to_string()))
}

/// A live source's hourly history (the regime needs 200 closed hours, SPEC B8): the last
/// [`REGIME_HOURS`](super::history::REGIME_HOURS) hours of 1h candles, fetched at start.
/// Idempotent (upserts); a failure is the caller's to report.
pub async fn load_hourly_history(
    pool: &PgPool,
    bot: &Bot,
    market: &Market,
    now: DateTime<Utc>,
) -> Result<usize, BotError> {
    use chrono::DurationRound;
    let to = now.duration_trunc(Duration::hours(1)).unwrap_or(now);
    let from = to - Duration::hours(super::history::REGIME_HOURS);
    let mut conn = pool.acquire().await?;
    let mut quiet = |_: &crate::market::BackfillReport, _: DateTime<Utc>| {};
    let report = crate::market::backfill_range(
        &mut conn,
        bot.source.as_ref(),
        market,
        Interval::H1,
        from,
        to,
        now,
        &mut quiet,
    )
    .await?;
    Ok(report.fetched)
}
