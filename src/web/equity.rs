//! The trading page's equity curve: the account's equity (KRW balance + every open position
//! at the market's close) at evenly spaced times, rebuilt from the ledger's own numbers,
//! and its small server-rendered SVG (no JavaScript, scales to the screen width).
//!
//! The rebuild walks backwards from what the account holds now, undoing each fill after a
//! sample time, so every point agrees with the fills to the last won and the newest point
//! is exactly the equity the page shows. A position is valued at the newest 1-minute close
//! at or before the sample time; before any candle, at its latest fill price. A
//! `paper reset` is not a fill: the curve before a reset is not the account's history.
//! [`load_curve`] reads what the rebuild needs (snapshot reads, no locks); [`rebuild`],
//! [`sample_times`] and [`render`] are pure.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use maud::{html, Markup};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::PgPool;

use super::error::WebError;
use super::layout::krw;
use super::trading::{AccountView, PositionView};
use crate::domain::indicator_table::to_f64;

/// One fill of the account, as the rebuild needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerFill {
    pub at: DateTime<Utc>,
    pub market: String,
    pub buy: bool,
    pub price: Decimal,
    pub quantity: Decimal,
    pub fee: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EquityPoint {
    pub t: DateTime<Utc>,
    pub equity: Decimal,
}

/// What the account holds at the newest sample time.
#[derive(Debug, Clone, Default)]
pub struct Holdings {
    pub cash: Decimal,
    /// Market → quantity held.
    pub quantity: HashMap<String, Decimal>,
}

/// Price observations per market, ascending by time: candle closes (at the candle's close
/// time) and fill prices.
pub type PriceSeries = HashMap<String, Vec<(DateTime<Utc>, Decimal)>>;

/// The newest price of `series` at or before `t`.
fn price_at(series: Option<&Vec<(DateTime<Utc>, Decimal)>>, t: DateTime<Utc>) -> Option<Decimal> {
    let s = series?;
    let n = s.partition_point(|(at, _)| *at <= t);
    n.checked_sub(1).map(|i| s[i].1)
}

/// Equity at each of `times` (ascending), from the holdings after every fill in `fills`
/// (ascending by time). A fill at exactly `t` counts as done by `t`.
pub fn rebuild(
    now: &Holdings,
    fills: &[LedgerFill],
    prices: &PriceSeries,
    times: &[DateTime<Utc>],
) -> Vec<EquityPoint> {
    let mut cash = now.cash;
    let mut held = now.quantity.clone();
    let mut pending = fills.len();
    let mut points = Vec::with_capacity(times.len());
    for &t in times.iter().rev() {
        while pending > 0 && fills[pending - 1].at > t {
            pending -= 1;
            let f = &fills[pending];
            let q = held.entry(f.market.clone()).or_default();
            if f.buy {
                cash += f.quantity * f.price + f.fee;
                *q -= f.quantity;
            } else {
                cash -= f.quantity * f.price - f.fee;
                *q += f.quantity;
            }
        }
        let positions: Decimal = held
            .iter()
            .filter(|(_, q)| !q.is_zero())
            .map(|(m, q)| *q * price_at(prices.get(m), t).unwrap_or(Decimal::ZERO))
            .sum();
        points.push(EquityPoint {
            t,
            equity: cash + positions,
        });
    }
    points.reverse();
    points
}

/// `n` + 1 evenly spaced times from `start` to `end` (both included).
pub fn sample_times(start: DateTime<Utc>, end: DateTime<Utc>, n: i32) -> Vec<DateTime<Utc>> {
    let span = (end - start).num_milliseconds().max(0);
    let n = i64::from(n.max(1));
    (0..=n)
        .map(|k| start + Duration::milliseconds(span * k / n))
        .collect()
}

/// The equity curve covers at most this many days back from now, in [`CURVE_POINTS`]
/// steps: enough to see a week of the bot, and it reads at most ~43k minute candles per
/// held market (one range scan of the candles' primary key).
pub const CURVE_DAYS: i64 = 30;
pub const CURVE_POINTS: i32 = 120;

/// The account's fills since $2, oldest first (for the equity curve's rebuild). Orders
/// are the account's (`orders_account_idx`), each joined to its fill by primary key.
const FILLS_SINCE: &str = "SELECT f.filled_at, o.market, o.side, f.price, f.quantity, f.fee
 FROM orders o JOIN fills f USING (client_order_id)
 WHERE o.account_id = $1 AND f.filled_at >= $2
 ORDER BY f.filled_at, f.client_order_id";

/// The first fill ever, to start the curve where trading started.
const FIRST_FILL: &str =
    "SELECT min(f.filled_at) FROM orders o JOIN fills f USING (client_order_id)
 WHERE o.account_id = $1";

/// The last 1-minute close in each bucket of $4 seconds from $2 to $3, per market in $1,
/// stamped at the candle's close time: a range scan of the candles' primary key per
/// market, sorted in memory (a few thousand rows at most).
const BUCKET_CLOSES: &str =
    "SELECT DISTINCT ON (market, b) market, open_time + interval '1 minute', close
 FROM (SELECT market, open_time, close,
              date_bin(make_interval(secs => $4), open_time, $2) AS b
       FROM candles
       WHERE market = ANY($1) AND interval = '1m' AND open_time >= $2 AND open_time < $3) c
 ORDER BY market, b, open_time DESC";

#[derive(Debug, Clone, Serialize)]
pub struct EquityCurve {
    /// How the points were made.
    pub method: &'static str,
    pub points: Vec<EquityPoint>,
}

pub const CURVE_METHOD: &str =
    "balance and positions rebuilt from the fills, valued at the 1-minute candle closes";

/// From the first fill (at most [`CURVE_DAYS`] back) to now; no curve before any fill.
pub async fn load_curve(
    pool: &PgPool,
    account: &AccountView,
    positions: &[PositionView],
    now: DateTime<Utc>,
) -> Result<EquityCurve, WebError> {
    let empty = EquityCurve {
        method: CURVE_METHOD,
        points: Vec::new(),
    };
    let first: Option<DateTime<Utc>> = sqlx::query_scalar(FIRST_FILL)
        .bind(account.id)
        .fetch_one(pool)
        .await?;
    let Some(first) = first else { return Ok(empty) };
    let start = first.max(now - Duration::days(CURVE_DAYS));
    if start >= now {
        return Ok(empty);
    }
    let rows: Vec<(DateTime<Utc>, String, String, Decimal, Decimal, Decimal)> =
        sqlx::query_as(FILLS_SINCE)
            .bind(account.id)
            .bind(start)
            .fetch_all(pool)
            .await?;
    let fills: Vec<LedgerFill> = rows
        .into_iter()
        .map(|(at, market, side, price, quantity, fee)| LedgerFill {
            at,
            market,
            buy: side == "buy",
            price,
            quantity,
            fee,
        })
        .collect();
    let times = sample_times(start, now, CURVE_POINTS);
    let prices = price_series(pool, &fills, positions, start, now).await?;
    let holdings = Holdings {
        cash: account.balance,
        quantity: positions
            .iter()
            .map(|p| (p.market.clone(), p.quantity))
            .collect(),
    };
    let mut points = rebuild(&holdings, &fills, &prices, &times);
    // The newest point is the equity the page shows (a position with no candle at cost).
    if let Some(last) = points.last_mut() {
        last.equity = account.equity;
    }
    Ok(EquityCurve {
        method: CURVE_METHOD,
        points,
    })
}

/// Candle closes per bucket and the fill prices, per market traded or held.
async fn price_series(
    pool: &PgPool,
    fills: &[LedgerFill],
    positions: &[PositionView],
    start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<PriceSeries, WebError> {
    let mut markets: Vec<String> = fills.iter().map(|f| f.market.clone()).collect();
    markets.extend(positions.iter().map(|p| p.market.clone()));
    markets.sort();
    markets.dedup();
    let bucket_secs = ((now - start).num_seconds() as f64 / f64::from(CURVE_POINTS)).max(60.0);
    let closes: Vec<(String, DateTime<Utc>, Decimal)> = sqlx::query_as(BUCKET_CLOSES)
        .bind(&markets)
        .bind(start)
        .bind(now)
        .bind(bucket_secs)
        .fetch_all(pool)
        .await?;
    let mut series: PriceSeries = HashMap::new();
    // Pushed lowest priority first: the sort is stable, so at equal times a fill's price
    // wins over a close, and both over a held position's entry price (the last resort, for
    // a position bought before the window with no candle since).
    for p in positions {
        series
            .entry(p.market.clone())
            .or_default()
            .push((p.entry_time.min(start), p.entry_price));
    }
    for (m, t, c) in closes {
        series.entry(m).or_default().push((t, c));
    }
    for f in fills {
        series
            .entry(f.market.clone())
            .or_default()
            .push((f.at, f.price));
    }
    for s in series.values_mut() {
        s.sort_by_key(|(t, _)| *t);
    }
    Ok(series)
}

const W: f64 = 900.0;
const H: f64 = 200.0;
/// Keeps the line's width inside the box at the extremes.
const PAD: f64 = 3.0;

/// The curve as an SVG line chart between two lines of text (HTML, so they stay legible
/// when the SVG shrinks to a phone's width): the highest and lowest equity above, marked
/// by grid lines; the first and last times under it; a dashed line at the first point's
/// equity. Green when the curve ends at or above where it started, red below. Nothing for
/// fewer than two points.
pub fn render(points: &[EquityPoint]) -> Markup {
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return html! {};
    };
    if points.len() < 2 {
        return html! {};
    }
    let hi = points
        .iter()
        .map(|p| p.equity)
        .max()
        .unwrap_or(first.equity);
    let lo = points
        .iter()
        .map(|p| p.equity)
        .min()
        .unwrap_or(first.equity);
    let range = to_f64(hi - lo);
    let (t0, span) = (first.t, (last.t - first.t).num_milliseconds().max(1) as f64);
    let y = |v: Decimal| {
        let frac = if range > 0.0 {
            to_f64(v - lo) / range
        } else {
            0.5
        };
        format!("{:.1}", PAD + (H - 2.0 * PAD) * (1.0 - frac))
    };
    let x = |t: DateTime<Utc>| {
        let frac = (t - t0).num_milliseconds() as f64 / span;
        format!("{:.1}", PAD + (W - 2.0 * PAD) * frac)
    };
    let line: Vec<String> = points
        .iter()
        .map(|p| format!("{},{}", x(p.t), y(p.equity)))
        .collect();
    let colour = if last.equity >= first.equity {
        "#17643a"
    } else {
        "#9b1c1c"
    };
    html! {
        div.muted style="display:flex;justify-content:space-between;flex-wrap:wrap;font-size:.85rem" {
            span { "max " (krw(hi)) } span { "min " (krw(lo)) }
        }
        svg viewBox={ "0 0 " (W) " " (H) } style="width:100%;height:auto;display:block"
            role="img" aria-label="equity curve" {
            title { "Equity from " (krw(first.equity)) " to " (krw(last.equity)) }
            @for v in [hi, lo] {
                line x1="0" y1=(y(v)) x2=(W) y2=(y(v)) stroke="#e1e4ea" {}
            }
            line x1="0" y1=(y(first.equity)) x2=(W) y2=(y(first.equity))
                stroke="#c5cbd6" stroke-dasharray="4 4" {}
            polyline points=(line.join(" ")) fill="none" stroke=(colour) stroke-width="2"
                vector-effect="non-scaling-stroke" {}
        }
        div.muted style="display:flex;justify-content:space-between;flex-wrap:wrap;font-size:.85rem" {
            span { (first.t.format("%Y-%m-%d %H:%M")) } span { (last.t.format("%Y-%m-%d %H:%M")) " UTC" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(min: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_758_000_000 + min * 60, 0).unwrap()
    }

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn fill(min: i64, buy: bool, price: &str, qty: &str, fee: &str) -> LedgerFill {
        LedgerFill {
            at: t(min),
            market: "KRW-BTC".into(),
            buy,
            price: d(price),
            quantity: d(qty),
            fee: d(fee),
        }
    }

    #[test]
    fn the_rebuild_undoes_fills_and_values_positions_at_the_close() {
        // 1,000 KRW; buy 2 at 100 (fee 0.1) at minute 10; sell 2 at 120 (fee 0.12) at 30.
        let fills = vec![
            fill(10, true, "100", "2", "0.1"),
            fill(30, false, "120", "2", "0.12"),
        ];
        let now = Holdings {
            cash: d("1000") - d("200.1") + d("239.88"),
            quantity: HashMap::new(),
        };
        let prices: PriceSeries = [(
            "KRW-BTC".to_string(),
            vec![(t(10), d("100")), (t(20), d("110")), (t(30), d("120"))],
        )]
        .into();
        let pts = rebuild(&now, &fills, &prices, &[t(0), t(10), t(20), t(40)]);
        let eq: Vec<Decimal> = pts.iter().map(|p| p.equity).collect();
        assert_eq!(eq, vec![d("1000"), d("999.9"), d("1019.9"), d("1039.78")]);
    }

    #[test]
    fn an_open_position_is_valued_at_the_newest_price_not_after_the_sample() {
        let fills = vec![fill(5, true, "100", "1", "0")];
        let now = Holdings {
            cash: d("0"),
            quantity: [("KRW-BTC".to_string(), d("1"))].into(),
        };
        let prices: PriceSeries = [(
            "KRW-BTC".to_string(),
            vec![(t(5), d("100")), (t(8), d("90"))],
        )]
        .into();
        let pts = rebuild(&now, &fills, &prices, &[t(4), t(7), t(9)]);
        let eq: Vec<Decimal> = pts.iter().map(|p| p.equity).collect();
        assert_eq!(eq, vec![d("100"), d("100"), d("90")]);
    }

    #[test]
    fn sample_times_span_both_ends_evenly() {
        let ts = sample_times(t(0), t(60), 4);
        assert_eq!(ts, vec![t(0), t(15), t(30), t(45), t(60)]);
        assert_eq!(sample_times(t(5), t(5), 3).len(), 4);
    }

    #[test]
    fn the_chart_draws_every_point_and_labels_the_extremes() {
        let pts: Vec<EquityPoint> = [("1000", 0), ("1100", 10), ("950", 20)]
            .iter()
            .map(|(v, m)| EquityPoint {
                t: t(*m),
                equity: d(v),
            })
            .collect();
        let svg = render(&pts).into_string();
        assert!(svg.contains("<svg"));
        let line = svg.split("points=\"").nth(1).unwrap();
        let line = &line[..line.find('"').unwrap()];
        assert_eq!(line.split(' ').count(), 3);
        assert!(svg.contains("max 1,100 KRW") && svg.contains("min 950 KRW"));
        assert!(render(&pts[..1]).into_string().is_empty());
    }
}
