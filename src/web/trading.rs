//! The trading page's data (SPEC A5 "Trading"): the paper account's balance and equity,
//! open positions at the last close, closed trades (keyset-paginated), the equity curve,
//! the AI decisions and the risk state, loaded read-only from the bot's tables
//! (`accounts`, `positions`, `fills`, `trades`, `candles`, `ai_decisions`, `risk_state`,
//! `risk_days`). Every query here is a plain snapshot read: no locks, so the page never
//! waits on (or holds up) an order being executed. `/trading` renders it
//! (`web::trading_page`), `/api/trading` serves it as JSON (amounts as exact decimal
//! strings).

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::equity::{self, EquityCurve, CURVE_METHOD};
use super::error::WebError;
use crate::domain::risk::seoul_day;

/// Trades per page.
pub const TRADES_PAGE: i64 = 20;
/// AI decisions shown, newest first.
pub const AI_DECISIONS_SHOWN: i64 = 20;
/// The account, through its unique name.
const ACCOUNT: &str = "SELECT id, name, balance, created_at FROM accounts WHERE name = $1";

/// Open positions with the newest 1-minute close of their market: one backwards step on
/// the candles' primary key (market, interval, open_time) per position.
const POSITIONS: &str = "SELECT p.market, p.quantity, p.avg_price, p.entry_filled_at, p.cost,
        p.fees, p.dust, c.close, c.open_time
 FROM positions p
 LEFT JOIN LATERAL (SELECT close, open_time FROM candles
                    WHERE market = p.market AND interval = '1m'
                    ORDER BY open_time DESC LIMIT 1) c ON true
 WHERE p.account_id = $1 ORDER BY p.market";

/// One page of closed trades, newest exit first, below the keyset cursor ($2, $3) =
/// (exit_time, id) of the last trade shown (NULL: the first page):
/// `trades_account_exit_idx` gives the range on (account_id, exit_time), the row
/// comparison breaks ties; no OFFSET, so an old page is as fast as the first.
const TRADES: &str = "SELECT id, market, entry_time, entry_price, exit_time, exit_price,
        quantity, pnl, exit_reason
 FROM trades
 WHERE account_id = $1 AND exit_time <= coalesce($2::timestamptz, 'infinity')
   AND (exit_time, id) < (coalesce($2::timestamptz, 'infinity'), coalesce($3::int8, 9223372036854775807))
 ORDER BY exit_time DESC, id DESC LIMIT $4";

/// Totals over every closed trade of the account (through `trades_account_exit_idx`).
const TRADE_TOTALS: &str = "SELECT count(*), coalesce(sum(pnl), 0),
        count(*) FILTER (WHERE pnl > 0), count(*) FILTER (WHERE pnl < 0)
 FROM trades WHERE account_id = $1";

/// The newest AI decisions (`ai_decisions_decided_idx`, backwards).
const AI_DECISIONS: &str = "SELECT id, decided_at, kind, market, provider, model, verdict,
        confidence, confirmed, reasoning, error, latency_ms
 FROM ai_decisions ORDER BY decided_at DESC, id DESC LIMIT $1";

/// The risk manager's state and today's (Asia/Seoul) row, both by primary key.
const RISK: &str = "SELECT s.halted, s.halted_reason, s.loss_streak, s.cooldown_until,
        d.day_start_equity, d.realized_pnl, d.entries
 FROM risk_state s
 LEFT JOIN risk_days d ON d.account_id = s.account_id AND d.day = $2
 WHERE s.account_id = $1";

#[derive(Debug, Clone, Serialize)]
pub struct AccountView {
    pub id: i64,
    pub name: String,
    pub balance: Decimal,
    /// Σ open positions at their last close (their cost when no candle is stored).
    pub positions_value: Decimal,
    pub equity: Decimal,
    pub unrealized_pnl: Decimal,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PositionView {
    pub market: String,
    pub quantity: Decimal,
    pub entry_price: Decimal,
    pub entry_time: DateTime<Utc>,
    /// Σ (quantity × fill + fee) of the buys held.
    pub cost: Decimal,
    pub fees: Decimal,
    /// Live only: worth less than the exchange's minimum order.
    pub dust: bool,
    pub last_close: Option<Decimal>,
    /// When that close was final (the candle's open + 1 minute).
    pub last_close_at: Option<DateTime<Utc>>,
    /// quantity × last close − cost; `None` before any candle of the market.
    pub unrealized_pnl: Option<Decimal>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TradeView {
    pub id: i64,
    pub market: String,
    pub entry_time: DateTime<Utc>,
    pub entry_price: Decimal,
    pub exit_time: DateTime<Utc>,
    pub exit_price: Decimal,
    pub quantity: Decimal,
    pub pnl: Decimal,
    pub exit_reason: String,
    /// The Asia/Seoul day the exit counts on (daily PnL and the daily loss limit).
    pub exit_day_seoul: NaiveDate,
}

#[derive(Debug, Clone, Serialize)]
pub struct TradeTotals {
    pub count: i64,
    pub realized_pnl: Decimal,
    pub wins: i64,
    pub losses: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TradePage {
    pub trades: Vec<TradeView>,
    /// The cursor of the next (older) page, when there is one.
    pub next: Option<String>,
    pub totals: TradeTotals,
}

#[derive(Debug, Clone, Serialize)]
pub struct AiDecisionView {
    pub id: i64,
    pub decided_at: DateTime<Utc>,
    pub kind: String,
    pub market: String,
    pub provider: String,
    pub model: String,
    /// "offline rules" for the deterministic `rules` reviewer, else "provider / model".
    pub reviewer: String,
    pub verdict: Option<String>,
    pub confidence: Option<i16>,
    pub confirmed: bool,
    pub reasoning: String,
    pub error: Option<String>,
    pub latency_ms: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RiskView {
    pub halted: bool,
    pub halted_reason: Option<String>,
    pub loss_streak: i32,
    pub cooldown_until: Option<DateTime<Utc>>,
    /// Entries are refused until `cooldown_until`.
    pub cooldown_active: bool,
    /// Today as Asia/Seoul counts it; the fields below are that day's row (`None` until the
    /// day's first decision or the midnight reset created it).
    pub day_seoul: NaiveDate,
    pub day_start_equity: Option<Decimal>,
    pub realized_pnl_today: Option<Decimal>,
    pub entries_today: Option<i32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Trading {
    pub at: DateTime<Utc>,
    /// `None` until the bot (or `paper reset`) opened the account.
    pub account: Option<AccountView>,
    pub positions: Vec<PositionView>,
    pub trades: TradePage,
    pub equity_curve: EquityCurve,
    pub ai_decisions: Vec<AiDecisionView>,
    pub risk: Option<RiskView>,
}

/// The page's query string: which account (default the bot's `paper`) and the trades'
/// keyset cursor.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TradingQuery {
    #[serde(default)]
    pub account: String,
    #[serde(default)]
    pub trades_before: String,
}

impl TradingQuery {
    pub fn account_name(&self) -> &str {
        match self.account.trim() {
            "" => crate::paper::job::DEFAULT_ACCOUNT,
            a => a,
        }
    }
}

/// `<exit time in µs since the epoch>.<trade id>`, the last trade shown.
fn cursor_of(t: &TradeView) -> String {
    format!("{}.{}", t.exit_time.timestamp_micros(), t.id)
}

fn parse_cursor(s: &str) -> Result<(DateTime<Utc>, i64), WebError> {
    let bad = || WebError::BadRequest(format!("trades_before `{s:.40}` is not a trades cursor"));
    let (micros, id) = s.trim().split_once('.').ok_or_else(bad)?;
    let micros: i64 = micros.parse().map_err(|_| bad())?;
    let id: i64 = id.parse().map_err(|_| bad())?;
    let at = DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
    Ok((at, id))
}

pub async fn load(
    pool: &PgPool,
    q: &TradingQuery,
    now: DateTime<Utc>,
) -> Result<Trading, WebError> {
    let cursor = match q.trades_before.trim() {
        "" => None,
        c => Some(parse_cursor(c)?),
    };
    let ai_decisions = ai_decisions(pool).await?;
    let row: Option<(i64, String, Decimal, DateTime<Utc>)> = sqlx::query_as(ACCOUNT)
        .bind(q.account_name())
        .fetch_optional(pool)
        .await?;
    let Some((id, name, balance, created_at)) = row else {
        return Ok(Trading {
            at: now,
            account: None,
            positions: Vec::new(),
            trades: TradePage {
                trades: Vec::new(),
                next: None,
                totals: TradeTotals {
                    count: 0,
                    realized_pnl: Decimal::ZERO,
                    wins: 0,
                    losses: 0,
                },
            },
            equity_curve: EquityCurve {
                method: CURVE_METHOD,
                points: Vec::new(),
            },
            ai_decisions,
            risk: None,
        });
    };
    let positions = positions(pool, id).await?;
    let value = |p: &PositionView| p.last_close.map(|c| p.quantity * c).unwrap_or(p.cost);
    let positions_value: Decimal = positions.iter().map(value).sum();
    let account = AccountView {
        id,
        name,
        balance,
        positions_value,
        equity: balance + positions_value,
        unrealized_pnl: positions.iter().filter_map(|p| p.unrealized_pnl).sum(),
        created_at,
    };
    let curve = equity::load_curve(pool, &account, &positions, now).await?;
    Ok(Trading {
        at: now,
        trades: trades(pool, id, cursor).await?,
        risk: risk(pool, id, now).await?,
        account: Some(account),
        positions,
        equity_curve: curve,
        ai_decisions,
    })
}

type PositionRow = (
    String,
    Decimal,
    Decimal,
    DateTime<Utc>,
    Decimal,
    Decimal,
    bool,
    Option<Decimal>,
    Option<DateTime<Utc>>,
);

async fn positions(pool: &PgPool, account: i64) -> Result<Vec<PositionView>, WebError> {
    let rows: Vec<PositionRow> = sqlx::query_as(POSITIONS)
        .bind(account)
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .map(
            |(market, quantity, entry_price, entry_time, cost, fees, dust, close, open)| {
                PositionView {
                    market,
                    quantity,
                    entry_price,
                    entry_time,
                    cost,
                    fees,
                    dust,
                    last_close: close,
                    last_close_at: open.map(|o| o + Duration::minutes(1)),
                    unrealized_pnl: close.map(|c| quantity * c - cost),
                }
            },
        )
        .collect())
}

type TradeRow = (
    i64,
    String,
    DateTime<Utc>,
    Decimal,
    DateTime<Utc>,
    Decimal,
    Decimal,
    Decimal,
    String,
);

async fn trades(
    pool: &PgPool,
    account: i64,
    cursor: Option<(DateTime<Utc>, i64)>,
) -> Result<TradePage, WebError> {
    let mut rows: Vec<TradeRow> = sqlx::query_as(TRADES)
        .bind(account)
        .bind(cursor.map(|c| c.0))
        .bind(cursor.map(|c| c.1))
        .bind(TRADES_PAGE + 1)
        .fetch_all(pool)
        .await?;
    let more = rows.len() as i64 > TRADES_PAGE;
    rows.truncate(TRADES_PAGE as usize);
    let trades: Vec<TradeView> = rows
        .into_iter()
        .map(
            |(
                id,
                market,
                entry_time,
                entry_price,
                exit_time,
                exit_price,
                quantity,
                pnl,
                exit_reason,
            )| {
                TradeView {
                    id,
                    market,
                    entry_time,
                    entry_price,
                    exit_time,
                    exit_price,
                    quantity,
                    pnl,
                    exit_reason,
                    exit_day_seoul: seoul_day(exit_time),
                }
            },
        )
        .collect();
    let (count, realized_pnl, wins, losses): (i64, Decimal, i64, i64) =
        sqlx::query_as(TRADE_TOTALS)
            .bind(account)
            .fetch_one(pool)
            .await?;
    Ok(TradePage {
        next: more.then(|| trades.last().map(cursor_of)).flatten(),
        trades,
        totals: TradeTotals {
            count,
            realized_pnl,
            wins,
            losses,
        },
    })
}

type AiRow = (
    i64,
    DateTime<Utc>,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<i16>,
    bool,
    String,
    Option<String>,
    i64,
);

/// The label a reviewer is shown with: the offline reviewer must never pass for a model.
pub fn reviewer_label(provider: &str, model: &str) -> String {
    match provider {
        "rules" => "offline rules".to_string(),
        p => format!("{p} / {model}"),
    }
}

async fn ai_decisions(pool: &PgPool) -> Result<Vec<AiDecisionView>, WebError> {
    let rows: Vec<AiRow> = sqlx::query_as(AI_DECISIONS)
        .bind(AI_DECISIONS_SHOWN)
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| AiDecisionView {
            reviewer: reviewer_label(&r.4, &r.5),
            id: r.0,
            decided_at: r.1,
            kind: r.2,
            market: r.3,
            provider: r.4,
            model: r.5,
            verdict: r.6,
            confidence: r.7,
            confirmed: r.8,
            reasoning: r.9,
            error: r.10,
            latency_ms: r.11,
        })
        .collect())
}

type RiskRow = (
    bool,
    Option<String>,
    i32,
    Option<DateTime<Utc>>,
    Option<Decimal>,
    Option<Decimal>,
    Option<i32>,
);

async fn risk(
    pool: &PgPool,
    account: i64,
    now: DateTime<Utc>,
) -> Result<Option<RiskView>, WebError> {
    let day = seoul_day(now);
    let row: Option<RiskRow> = sqlx::query_as(RISK)
        .bind(account)
        .bind(day)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(
        |(halted, halted_reason, loss_streak, cooldown_until, equity, pnl, entries)| RiskView {
            halted,
            halted_reason,
            loss_streak,
            cooldown_active: cooldown_until.is_some_and(|u| now < u),
            cooldown_until,
            day_seoul: day,
            day_start_equity: equity,
            realized_pnl_today: pnl,
            entries_today: entries,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::{parse_cursor, reviewer_label};

    #[test]
    fn the_offline_reviewer_is_labelled_as_such() {
        assert_eq!(reviewer_label("rules", "rules-v1"), "offline rules");
        assert_eq!(
            reviewer_label("anthropic", "claude-x"),
            "anthropic / claude-x"
        );
    }

    #[test]
    fn a_bad_cursor_is_a_bad_request_naming_the_field() {
        assert!(parse_cursor("1758000000000000.12").is_ok());
        for bad in ["", "12", "x.1", "1.y", "99999999999999999999.1"] {
            let e = parse_cursor(bad).unwrap_err().to_string();
            assert!(e.contains("trades_before"), "{bad}: {e}");
        }
    }
}
