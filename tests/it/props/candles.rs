//! Candle CSV rows: under each header format, rows of arbitrary cells never panic; an
//! error names the file and a line inside it (`f.csv:LINE:`); what parses is strictly
//! ascending by open time and every candle is consistent (low ≤ open, close ≤ high). A
//! valid file parses whole, and one broken cell in it is reported at its own line.

use coinpilot::domain::candle::Interval;
use coinpilot::domain::candle_csv::parse_candles;
use proptest::prelude::*;

const HEADERS: &[&str] = &[
    "timestamp,open,high,low,close,volume",
    "open_time_ms,open_time_utc,open,high,low,close,volume",
    "market,candle_date_time_utc,candle_date_time_kst,opening_price,high_price,low_price,trade_price,timestamp,candle_acc_trade_price,candle_acc_trade_volume,unit",
];

/// Cells that are valid somewhere, nearly valid, or garbage.
fn cell() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "2025-09-01 00:00:00",
            "2025-09-01T00:01:00",
            "2025-09-01 00:02:00Z",
            "2025-02-30 00:00:00",
            "2025-09-01 24:00:00",
            "1756684800000",
            "1756684860000",
            "-1",
            "0",
            "100",
            "100.5",
            "99",
            "1e3",
            "",
            " ",
            "NaN",
            "KRW-BTC",
            "1",
            "170000000",
            "170000000.00000001",
            "99999999999999999999999999999999",
        ])
        .prop_map(str::to_string),
        (0u32..200_000_000).prop_map(|n| n.to_string()),
        super::noise(12).prop_map(|s| s.replace([',', '\n', '\r'], "")),
    ]
}

fn csv() -> impl Strategy<Value = String> {
    let rows = prop::collection::vec(prop::collection::vec(cell(), 5..12), 0..12);
    (prop::sample::select(HEADERS), rows).prop_map(|(h, rows)| {
        let mut text = format!("{h}\n");
        for r in rows {
            text.push_str(&r.join(","));
            text.push('\n');
        }
        text
    })
}

/// A valid ccxt-style file of `rows` consecutive minutes: (text, number of rows).
fn valid_csv() -> impl Strategy<Value = (String, usize)> {
    let row = (
        1u32..1_000_000,
        0u32..1_000,
        0u32..1_000,
        0u32..1_000,
        0u32..100_000,
    );
    prop::collection::vec(row, 1..30).prop_map(|rows| {
        let mut text = String::from("timestamp,open,high,low,close,volume\n");
        let start = chrono::DateTime::parse_from_rfc3339("2025-09-01T00:00:00Z").unwrap();
        for (i, (open, up, down, close_off, vol)) in rows.iter().enumerate() {
            let t = start + chrono::Duration::minutes(i as i64);
            let (open, close) = (
                *open + 1_000,
                (*open + 1_000 + close_off).saturating_sub(*down),
            );
            let (high, low) = (
                open.max(close) + up,
                open.min(close).saturating_sub(*down).max(1),
            );
            text.push_str(&format!(
                "{},{open},{high},{low},{close},{vol}.5\n",
                t.format("%Y-%m-%d %H:%M:%S")
            ));
        }
        (text, rows.len())
    })
}

proptest! {
    #[test]
    fn a_valid_file_parses_and_one_broken_cell_is_found_at_its_line(
        (text, rows) in valid_csv(),
        row in any::<prop::sample::Index>(),
        column in 0usize..6,
        bad in prop::sample::select(vec!["abc", "", "--1", "1.2.3", "2025-13-01 00:00:00"]),
    ) {
        let parsed = parse_candles("f.csv", &text, Interval::M1).unwrap();
        prop_assert_eq!(parsed.len(), rows);
        let k = row.index(rows);
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        let mut cells: Vec<&str> = lines[k + 1].split(',').collect();
        cells[column] = bad;
        lines[k + 1] = cells.join(",");
        let broken = lines.join("\n");
        let e = parse_candles("f.csv", &broken, Interval::M1).unwrap_err();
        prop_assert_eq!(e.line, k + 2, "{}", e);
        prop_assert!(e.field.is_some(), "{}", e);
    }


    #[test]
    fn candle_rows_never_panic_and_errors_name_file_and_line(text in csv()) {
        match parse_candles("f.csv", &text, Interval::M1) {
            Ok(candles) => {
                prop_assert!(candles.windows(2).all(|w| w[0].open_time < w[1].open_time));
                for c in &candles {
                    prop_assert!(c.low <= c.open.min(c.close) && c.open.max(c.close) <= c.high);
                }
            }
            Err(e) => {
                prop_assert!(e.line >= 1 && e.line <= super::max_line(&text), "{}", e);
                let prefix = format!("f.csv:{}:", e.line);
                prop_assert!(e.to_string().starts_with(&prefix), "{}", e);
            }
        }
    }
}
