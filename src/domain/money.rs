//! Money types: `Decimal` newtypes so a price is never added to a quantity by mistake.
//! `Krw` is an amount of won (signed: PnL can be negative), `Price` is won per unit of the
//! base asset (strictly positive), `Qty` an amount of the base asset (never negative).
//! Arithmetic that makes sense between them is implemented; the rest does not compile.

use std::fmt;
use std::ops::{Add, AddAssign, Mul, Neg, Sub, SubAssign};

use rust_decimal::Decimal;
use serde::Serialize;

/// A money value that broke its type's rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("price must be positive, got {0}")]
    NonPositivePrice(Decimal),
    #[error("quantity must not be negative, got {0}")]
    NegativeQty(Decimal),
    #[error("{what} {value} is outside the supported range (up to {max})")]
    OutOfRange {
        what: &'static str,
        value: Decimal,
        max: Decimal,
    },
}

/// The largest price and quantity accepted. Bounded so that quantity × price, fees and
/// sums of them always fit a `Decimal` (about 7.9e28): `Decimal`'s operators panic on
/// overflow, and prices and quantities come from outside (job args, API payloads).
pub const MAX_PRICE: Decimal = Decimal::from_parts(2_764_472_320, 232_830, 0, false, 0); // 1e15
pub const MAX_QTY: Decimal = Decimal::from_parts(3_567_587_328, 232, 0, false, 0); // 1e12
/// The smallest price accepted (a price of 1e-28 would make notional / price overflow).
pub const MIN_PRICE: Decimal = Decimal::from_parts(1, 0, 0, false, 8); // 1e-8

/// An amount of Korean won.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(transparent)]
pub struct Krw(Decimal);

impl Krw {
    pub const ZERO: Krw = Krw(Decimal::ZERO);

    pub fn new(value: Decimal) -> Self {
        Krw(value)
    }

    pub fn value(self) -> Decimal {
        self.0
    }

    /// `self × fraction`, e.g. 20 % of a balance.
    pub fn times(self, fraction: Decimal) -> Krw {
        Krw(self.0 * fraction)
    }

    pub fn is_negative(self) -> bool {
        self.0.is_sign_negative() && !self.0.is_zero()
    }
}

/// Won per unit of the base asset; always > 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Price(Decimal);

impl Price {
    pub fn new(value: Decimal) -> Result<Self, MoneyError> {
        if value <= Decimal::ZERO {
            Err(MoneyError::NonPositivePrice(value))
        } else if !(MIN_PRICE..=MAX_PRICE).contains(&value) {
            Err(MoneyError::OutOfRange {
                what: "price",
                value,
                max: MAX_PRICE,
            })
        } else {
            Ok(Price(value))
        }
    }

    pub fn value(self) -> Decimal {
        self.0
    }

    /// `self × factor` for a positive factor such as `1 + slippage`; a non-positive factor
    /// is a configuration bug and is refused.
    pub fn scaled(self, factor: Decimal) -> Result<Price, MoneyError> {
        Price::new(self.0 * factor)
    }
}

/// An amount of the base asset (e.g. BTC); never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(transparent)]
pub struct Qty(Decimal);

impl Qty {
    pub const ZERO: Qty = Qty(Decimal::ZERO);

    pub fn new(value: Decimal) -> Result<Self, MoneyError> {
        if value < Decimal::ZERO {
            Err(MoneyError::NegativeQty(value))
        } else if value > MAX_QTY {
            Err(MoneyError::OutOfRange {
                what: "quantity",
                value,
                max: MAX_QTY,
            })
        } else {
            Ok(Qty(value))
        }
    }

    pub fn value(self) -> Decimal {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    /// How much `notional` buys at `price`, rounded **down** to `scale` decimals so the
    /// order never costs more than was budgeted.
    pub fn affordable(notional: Krw, price: Price, scale: u32) -> Qty {
        // Capped at MAX_QTY (an absurd notional cannot overflow what follows).
        let raw = notional
            .0
            .checked_div(price.0)
            .unwrap_or(MAX_QTY)
            .min(MAX_QTY);
        let q = raw.round_dp_with_strategy(scale, rust_decimal::RoundingStrategy::ToZero);
        Qty(q.max(Decimal::ZERO))
    }
}

impl Mul<Price> for Qty {
    type Output = Krw;
    fn mul(self, rhs: Price) -> Krw {
        Krw(self.0 * rhs.0)
    }
}

impl Add for Krw {
    type Output = Krw;
    fn add(self, rhs: Krw) -> Krw {
        Krw(self.0 + rhs.0)
    }
}

impl Sub for Krw {
    type Output = Krw;
    fn sub(self, rhs: Krw) -> Krw {
        Krw(self.0 - rhs.0)
    }
}

impl Neg for Krw {
    type Output = Krw;
    fn neg(self) -> Krw {
        Krw(-self.0)
    }
}

impl AddAssign for Krw {
    fn add_assign(&mut self, rhs: Krw) {
        self.0 += rhs.0;
    }
}

impl SubAssign for Krw {
    fn sub_assign(&mut self, rhs: Krw) {
        self.0 -= rhs.0;
    }
}

impl fmt::Display for Krw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.normalize(), f)
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.normalize(), f)
    }
}

impl fmt::Display for Qty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.normalize(), f)
    }
}

#[cfg(test)]
mod range_tests {
    use super::*;

    #[test]
    fn bounds_are_what_they_say() {
        assert_eq!(MAX_PRICE, Decimal::from(1_000_000_000_000_000u64));
        assert_eq!(MAX_QTY, Decimal::from(1_000_000_000_000u64));
        assert_eq!(MIN_PRICE, Decimal::new(1, 8));
        // The largest product fits, with room for fees and sums.
        assert!(MAX_QTY.checked_mul(MAX_PRICE).is_some());
        assert!(Price::new(MAX_PRICE * Decimal::TEN).is_err());
        assert!(Price::new(Decimal::new(1, 10)).is_err());
        assert!(Qty::new(MAX_QTY + Decimal::ONE).is_err());
        let huge = Krw::new(Decimal::MAX);
        let q = Qty::affordable(huge, Price::new(MIN_PRICE).unwrap(), 8);
        assert_eq!(q.value(), MAX_QTY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn constructors_refuse_what_would_be_a_bug() {
        assert!(Price::new(d("0")).is_err());
        assert!(Price::new(d("-1")).is_err());
        assert!(Qty::new(d("-0.00000001")).is_err());
        assert!(Qty::new(d("0")).is_ok());
    }

    #[test]
    fn affordable_quantity_rounds_down_to_eight_decimals() {
        let p = Price::new(d("150000000")).unwrap();
        let q = Qty::affordable(Krw::new(d("200000")), p, 8);
        // 200000 / 150000000 = 0.0013333333…: rounded down, never up.
        assert_eq!(q.value(), d("0.00133333"));
        assert!(q * p <= Krw::new(d("200000")));
    }
}
