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
}

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
        if value > Decimal::ZERO {
            Ok(Price(value))
        } else {
            Err(MoneyError::NonPositivePrice(value))
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
        if value >= Decimal::ZERO {
            Ok(Qty(value))
        } else {
            Err(MoneyError::NegativeQty(value))
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
        let raw = notional.0 / price.0;
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
