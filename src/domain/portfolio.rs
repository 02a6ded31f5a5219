//! Order arithmetic shared by the paper executor and the backtest (SPEC B6/B8), exact in
//! `Decimal`: notional = 20 % of the KRW balance, quantity rounded down to 8 decimals, fee
//! 0.05 % of quantity × fill (not rounded to whole KRW), slippage 5 bps against us, 5,000
//! KRW minimum buy, PnL = sell proceeds − buy cost.
//!
//! Options (`[orders]` in `strategy.toml`): `notional_fraction` [0.2], `fee_rate`
//! [0.0005], `slippage_bps` [5], `min_order_krw` [5000], `qty_decimals` [8].

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::money::{Krw, MoneyError, Price, Qty};

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrderConfig {
    pub notional_fraction: Decimal,
    pub fee_rate: Decimal,
    pub slippage_bps: Decimal,
    pub min_order_krw: Decimal,
    pub qty_decimals: u32,
}

impl Default for OrderConfig {
    fn default() -> Self {
        OrderConfig {
            notional_fraction: Decimal::new(2, 1),
            fee_rate: Decimal::new(5, 4),
            slippage_bps: Decimal::from(5),
            min_order_krw: Decimal::from(5_000),
            qty_decimals: 8,
        }
    }
}

impl OrderConfig {
    fn slippage(&self) -> Decimal {
        self.slippage_bps / Decimal::from(10_000)
    }

    /// A buy fills at the reference price × (1 + slippage).
    pub fn buy_fill(&self, reference: Price) -> Result<Price, MoneyError> {
        reference.scaled(Decimal::ONE + self.slippage())
    }

    /// A sell fills at the reference price × (1 − slippage).
    pub fn sell_fill(&self, reference: Price) -> Result<Price, MoneyError> {
        reference.scaled(Decimal::ONE - self.slippage())
    }

    /// The budget of an entry decided with `balance`: notional_fraction × balance.
    pub fn notional(&self, balance: Krw) -> Krw {
        balance.times(self.notional_fraction)
    }

    pub fn fee(&self, qty: Qty, fill: Price) -> Krw {
        (qty * fill).times(self.fee_rate)
    }
}

/// Why a buy is not placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderRefusal {
    #[error("order of {0} KRW is below the {1} KRW minimum")]
    BelowMinimum(Krw, Krw),
    #[error("cost {cost} KRW exceeds the balance {balance} KRW")]
    InsufficientBalance { cost: Krw, balance: Krw },
}

/// A filled buy: what the position holds and what it cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BuyFill {
    pub qty: Qty,
    pub price: Price,
    pub fee: Krw,
    /// quantity × fill + fee.
    pub cost: Krw,
}

/// Sizes a buy of `notional` KRW at `fill`, leaving `balance` ≥ 0.
pub fn size_buy(
    notional: Krw,
    fill: Price,
    balance: Krw,
    cfg: &OrderConfig,
) -> Result<BuyFill, OrderRefusal> {
    let min = Krw::new(cfg.min_order_krw);
    let qty = Qty::affordable(notional, fill, cfg.qty_decimals);
    let gross = qty * fill;
    if gross < min {
        return Err(OrderRefusal::BelowMinimum(gross, min));
    }
    let fee = cfg.fee(qty, fill);
    let cost = gross + fee;
    if cost > balance {
        return Err(OrderRefusal::InsufficientBalance { cost, balance });
    }
    Ok(BuyFill {
        qty,
        price: fill,
        fee,
        cost,
    })
}

/// An open long position in one market.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Position {
    pub qty: Qty,
    pub entry_price: Price,
    pub entry_time: DateTime<Utc>,
    pub entry_fee: Krw,
    pub cost: Krw,
}

/// A closed round trip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClosedTrade {
    pub entry_time: DateTime<Utc>,
    pub entry_price: Price,
    pub exit_time: DateTime<Utc>,
    pub exit_price: Price,
    pub qty: Qty,
    pub entry_fee: Krw,
    pub exit_fee: Krw,
    pub cost: Krw,
    pub proceeds: Krw,
    /// proceeds − cost: > 0 a win, < 0 a loss, 0 neither.
    pub pnl: Krw,
}

/// Sells the whole position at `fill` (paper sells always fill, SPEC B6).
pub fn close_position(
    pos: &Position,
    fill: Price,
    at: DateTime<Utc>,
    cfg: &OrderConfig,
) -> ClosedTrade {
    let exit_fee = cfg.fee(pos.qty, fill);
    let proceeds = pos.qty * fill - exit_fee;
    ClosedTrade {
        entry_time: pos.entry_time,
        entry_price: pos.entry_price,
        exit_time: at,
        exit_price: fill,
        qty: pos.qty,
        entry_fee: pos.entry_fee,
        exit_fee,
        cost: pos.cost,
        proceeds,
        pnl: proceeds - pos.cost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn a_buy_is_twenty_percent_rounded_down_with_fee_and_slippage() {
        let cfg = OrderConfig::default();
        let balance = Krw::new(d("1000000"));
        let fill = cfg.buy_fill(Price::new(d("150000000")).unwrap()).unwrap();
        assert_eq!(fill.value(), d("150075000"));
        let b = size_buy(cfg.notional(balance), fill, balance, &cfg).unwrap();
        // 200000 / 150075000 = 0.00133266700…
        assert_eq!(b.qty.value(), d("0.00133266"));
        assert_eq!((b.qty * fill).value(), d("199998.94950"));
        assert_eq!(b.fee.value(), d("99.99947475"));
        assert_eq!(b.cost.value(), d("200098.94897475"));
    }

    #[test]
    fn a_buy_under_5000_krw_is_refused() {
        let cfg = OrderConfig::default();
        let balance = Krw::new(d("24999"));
        let fill = Price::new(d("100")).unwrap();
        assert!(matches!(
            size_buy(cfg.notional(balance), fill, balance, &cfg),
            Err(OrderRefusal::BelowMinimum(..))
        ));
        let balance = Krw::new(d("25000"));
        assert!(size_buy(cfg.notional(balance), fill, balance, &cfg).is_ok());
    }

    #[test]
    fn pnl_is_proceeds_minus_cost() {
        let cfg = OrderConfig::default();
        let t = Utc.with_ymd_and_hms(2025, 9, 1, 0, 0, 0).unwrap();
        let pos = Position {
            qty: Qty::new(d("0.001")).unwrap(),
            entry_price: Price::new(d("100000000")).unwrap(),
            entry_time: t,
            entry_fee: Krw::new(d("50")),
            cost: Krw::new(d("100050")),
        };
        let sell = cfg.sell_fill(Price::new(d("101000000")).unwrap()).unwrap();
        assert_eq!(sell.value(), d("100949500"));
        let tr = close_position(&pos, sell, t, &cfg);
        assert_eq!(tr.exit_fee.value(), d("50.47475"));
        assert_eq!(tr.proceeds.value(), d("100899.02525"));
        assert_eq!(tr.pnl.value(), d("849.02525"));
    }
}
