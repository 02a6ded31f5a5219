//! Market data storage against the real PostgreSQL (SPEC B1): a still-forming candle is
//! updated in place, never duplicated; gaps are the missing ranges minus confirmed-empty minutes.

use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use coinpilot::domain::candle::{Candle, Interval, Market};
use coinpilot::market::{self, Gap};
use rust_decimal::Decimal;

use crate::support::*;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-09-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn btc() -> Market {
    "KRW-BTC".parse().unwrap()
}

fn candle(minute: i64, close: &str, volume: &str) -> Candle {
    let close = Decimal::from_str(close).unwrap();
    Candle {
        open_time: t0() + Duration::minutes(minute),
        open: close,
        high: close + Decimal::ONE,
        low: close - Decimal::ONE,
        close,
        volume: Decimal::from_str(volume).unwrap(),
    }
}

#[tokio::test]
async fn a_still_forming_candle_is_updated_never_duplicated() {
    let db = TestDb::new().await;
    let mut c = db.pool.acquire().await.unwrap();
    let first = vec![candle(0, "100", "1"), candle(1, "101", "0.5")];
    let r = market::store_page(&mut c, &btc(), Interval::M1, first, t0())
        .await
        .unwrap();
    assert_eq!((r.written, r.rejected.len()), (2, 0));
    // The same minute fetched again while it formed: more volume, a new close.
    let again = vec![candle(1, "102", "0.9")];
    let r = market::store_page(&mut c, &btc(), Interval::M1, again.clone(), t0())
        .await
        .unwrap();
    assert_eq!(r.written, 1);
    let r = market::store_page(&mut c, &btc(), Interval::M1, again, t0())
        .await
        .unwrap();
    assert_eq!(r.written, 0, "an unchanged re-fetch rewrites nothing");
    assert_eq!(db.count("SELECT count(*) FROM candles").await, 2);
    let stored = market::load_candles(
        &mut c,
        &btc(),
        Interval::M1,
        t0(),
        t0() + Duration::hours(1),
    )
    .await
    .unwrap();
    assert_eq!(stored[1], candle(1, "102", "0.9"));
}

#[tokio::test]
async fn malformed_candles_are_rejected_and_the_rest_of_the_page_kept() {
    let db = TestDb::new().await;
    let mut c = db.pool.acquire().await.unwrap();
    let mut broken = candle(1, "100", "1");
    broken.high = Decimal::from(50);
    let page = vec![
        candle(0, "100", "1"),
        broken,
        candle(2, "100", "1"),
        candle(2, "101", "1"),
    ];
    let r = market::store_page(&mut c, &btc(), Interval::M1, page, t0())
        .await
        .unwrap();
    assert_eq!(r.written, 2);
    let why: Vec<usize> = r.rejected.iter().map(|x| x.index).collect();
    assert_eq!(why, vec![1, 3], "high < low, then the duplicate time");
}

#[tokio::test]
async fn gaps_are_the_missing_ranges_minus_confirmed_empty_minutes() {
    let db = TestDb::new().await;
    let mut c = db.pool.acquire().await.unwrap();
    let page = [0, 1, 4, 5, 9]
        .iter()
        .map(|m| candle(*m, "100", "1"))
        .collect();
    market::store_page(&mut c, &btc(), Interval::M1, page, t0())
        .await
        .unwrap();
    let at = |m: i64| t0() + Duration::minutes(m);
    let gaps = market::find_gaps(&mut c, &btc(), Interval::M1, at(0), at(10))
        .await
        .unwrap();
    assert_eq!(
        gaps,
        vec![
            Gap {
                from: at(2),
                to: at(4)
            },
            Gap {
                from: at(6),
                to: at(9)
            }
        ]
    );
    // Minute 7 confirmed empty: the second gap splits; confirming 2 and 3 closes the first.
    market::record_empty(&mut c, &btc(), Interval::M1, &[at(7), at(2), at(3)], t0())
        .await
        .unwrap();
    let gaps = market::find_gaps(&mut c, &btc(), Interval::M1, at(0), at(10))
        .await
        .unwrap();
    assert_eq!(
        gaps,
        vec![
            Gap {
                from: at(6),
                to: at(7)
            },
            Gap {
                from: at(8),
                to: at(9)
            }
        ]
    );
    // Another market's candles are not this market's.
    let eth: Market = "KRW-ETH".parse().unwrap();
    let all = market::find_gaps(&mut c, &eth, Interval::M1, at(0), at(10))
        .await
        .unwrap();
    assert_eq!(
        all,
        vec![Gap {
            from: at(0),
            to: at(10)
        }]
    );
}
