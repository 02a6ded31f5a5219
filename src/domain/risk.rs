//! The risk manager (SPEC B5, timing per B8) as pure state and functions, per account.
//! Time is passed in; days are Asia/Seoul dates.
//!
//! Options (`[risk]` in `strategy.toml`; defaults in brackets):
//! - `max_consecutive_losses` [3]: that many losing trades in a row start a cooldown;
//! - `cooldown_hours` [24]: from the exit fill of the last of those losses;
//! - `daily_loss_limit` [0.05]: realised PnL today ≤ −this × the day's starting equity
//!   stops entries for the rest of the day;
//! - `max_entries_per_day` [10]: counted when an entry fills, on the fill's day.
//!
//! Exits are never blocked by risk rules: only entries are checked here.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Asia::Seoul;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::money::Krw;

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RiskConfig {
    pub max_consecutive_losses: u32,
    pub cooldown_hours: i64,
    pub daily_loss_limit: Decimal,
    pub max_entries_per_day: u32,
}

impl Default for RiskConfig {
    fn default() -> Self {
        RiskConfig {
            max_consecutive_losses: 3,
            cooldown_hours: 24,
            daily_loss_limit: Decimal::new(5, 2),
            max_entries_per_day: 10,
        }
    }
}

/// The Asia/Seoul calendar day of an instant: the unit of daily risk and reports.
pub fn seoul_day(t: DateTime<Utc>) -> NaiveDate {
    t.with_timezone(&Seoul).date_naive()
}

/// The UTC instants where the Seoul day of `t` begins and ends (half-open), so hot loops
/// compare two timestamps instead of converting every candle's time zone.
pub fn seoul_day_bounds(t: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let day = seoul_day(t);
    let start_of = |d: NaiveDate| {
        // A midnight a DST change skipped starts the day at the first instant after it.
        let midnight = d.and_time(chrono::NaiveTime::MIN);
        Seoul
            .from_local_datetime(&midnight)
            .earliest()
            .or_else(|| {
                Seoul
                    .from_local_datetime(&(midnight + Duration::hours(1)))
                    .earliest()
            })
            .map(|l| l.with_timezone(&Utc))
    };
    let start = start_of(day).unwrap_or(t);
    let end = day
        .succ_opt()
        .and_then(start_of)
        .unwrap_or(t + Duration::days(1));
    (start, end)
}

/// Why an entry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("trading is halted")]
    Halted,
    #[error("cooldown after consecutive losses until {0}")]
    Cooldown(DateTime<Utc>),
    #[error("daily loss limit reached: realised {pnl} KRW ≤ −{limit} KRW")]
    DailyLossLimit { pnl: Krw, limit: Krw },
    #[error("{0} entries today: the daily maximum")]
    MaxEntries(u32),
    #[error("a position in this market is already open")]
    PositionOpen,
}

/// One account's risk state: one row per Seoul day in the database, this in memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RiskState {
    pub day: NaiveDate,
    pub day_start_equity: Krw,
    pub realized_pnl_today: Krw,
    pub entries_today: u32,
    /// Survives midnight (SPEC B5): only a winning trade resets it.
    pub loss_streak: u32,
    /// Survives midnight, too.
    pub cooldown_until: Option<DateTime<Utc>>,
    pub halted: bool,
    /// [`seoul_day_bounds`] of `day`, cached.
    #[serde(skip)]
    bounds: (DateTime<Utc>, DateTime<Utc>),
}

impl RiskState {
    /// The state for the Seoul day of `now`, starting with `equity`.
    pub fn new(now: DateTime<Utc>, equity: Krw) -> Self {
        RiskState {
            day: seoul_day(now),
            day_start_equity: equity,
            realized_pnl_today: Krw::ZERO,
            entries_today: 0,
            loss_streak: 0,
            cooldown_until: None,
            halted: false,
            bounds: seoul_day_bounds(now),
        }
    }

    /// Daily reset, run before anything else at the first event of a new Seoul day:
    /// realised PnL and entry count go to zero, the streak and cooldown stay. `equity` is
    /// the balance plus the open position at the previous close. Returns whether it reset.
    pub fn roll_day(&mut self, now: DateTime<Utc>, equity: Krw) -> bool {
        if !self.is_new_day(now) {
            return false;
        }
        self.day = seoul_day(now);
        self.bounds = seoul_day_bounds(now);
        self.day_start_equity = equity;
        self.realized_pnl_today = Krw::ZERO;
        self.entries_today = 0;
        true
    }

    /// Whether `now` lies outside the current Seoul day (a reset is due).
    pub fn is_new_day(&self, now: DateTime<Utc>) -> bool {
        now < self.bounds.0 || now >= self.bounds.1
    }

    /// May an entry be decided at `now`? Checked against the decision's day, which the
    /// caller has already rolled to.
    pub fn check_entry(
        &self,
        now: DateTime<Utc>,
        position_open: bool,
        cfg: &RiskConfig,
    ) -> Result<(), Refusal> {
        if self.halted {
            return Err(Refusal::Halted);
        }
        if position_open {
            return Err(Refusal::PositionOpen);
        }
        if let Some(until) = self.cooldown_until.filter(|u| now < *u) {
            return Err(Refusal::Cooldown(until));
        }
        let limit = self.day_start_equity.times(cfg.daily_loss_limit);
        if self.realized_pnl_today <= -limit {
            return Err(Refusal::DailyLossLimit {
                pnl: self.realized_pnl_today,
                limit,
            });
        }
        if self.entries_today >= cfg.max_entries_per_day {
            return Err(Refusal::MaxEntries(self.entries_today));
        }
        Ok(())
    }

    /// An entry filled (counts on the fill's day).
    pub fn record_entry_fill(&mut self) {
        self.entries_today += 1;
    }

    /// A trade closed with `pnl` at `exit_fill_time` (counts on that day). A loss extends
    /// the streak and the third one starts the cooldown; a win resets it; zero is neither.
    pub fn record_trade(&mut self, pnl: Krw, exit_fill_time: DateTime<Utc>, cfg: &RiskConfig) {
        self.realized_pnl_today += pnl;
        if pnl.is_negative() {
            self.loss_streak += 1;
            if self.loss_streak >= cfg.max_consecutive_losses {
                self.cooldown_until = Some(exit_fill_time + Duration::hours(cfg.cooldown_hours));
                // The streak starts over: the cooldown is the consequence of this run.
                self.loss_streak = 0;
            }
        } else if pnl > Krw::ZERO {
            self.loss_streak = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 9, 1, h, m, 0).unwrap()
    }

    fn krw(v: i64) -> Krw {
        Krw::new(v.into())
    }

    #[test]
    fn cooldown_starts_after_exactly_three_losses() {
        let cfg = RiskConfig::default();
        let mut s = RiskState::new(at(1, 0), krw(10_000_000));
        s.record_trade(krw(-1), at(1, 0), &cfg);
        s.record_trade(krw(-1), at(2, 0), &cfg);
        assert_eq!(s.check_entry(at(2, 1), false, &cfg), Ok(()));
        s.record_trade(krw(-1), at(3, 0), &cfg);
        let until = at(3, 0) + Duration::hours(24);
        assert_eq!(s.cooldown_until, Some(until));
        assert_eq!(
            s.check_entry(at(3, 1), false, &cfg),
            Err(Refusal::Cooldown(until))
        );
        assert_eq!(
            s.check_entry(until - Duration::minutes(1), false, &cfg),
            Err(Refusal::Cooldown(until))
        );
        assert_eq!(s.check_entry(until, false, &cfg), Ok(()));
    }

    #[test]
    fn a_win_resets_the_streak_and_zero_does_not() {
        let cfg = RiskConfig::default();
        let mut s = RiskState::new(at(1, 0), krw(10_000_000));
        s.record_trade(krw(-1), at(1, 0), &cfg);
        s.record_trade(krw(-1), at(1, 1), &cfg);
        s.record_trade(krw(0), at(1, 2), &cfg);
        assert_eq!(s.loss_streak, 2);
        s.record_trade(krw(1), at(1, 3), &cfg);
        assert_eq!(s.loss_streak, 0);
        s.record_trade(krw(-1), at(1, 4), &cfg);
        assert_eq!(s.cooldown_until, None);
    }

    #[test]
    fn loss_small_win_loss_trips_the_daily_loss_limit() {
        let cfg = RiskConfig::default();
        // Limit: 5 % of 1,000,000 = 50,000 KRW.
        let mut s = RiskState::new(at(1, 0), krw(1_000_000));
        s.record_trade(krw(-30_000), at(1, 0), &cfg);
        s.record_trade(krw(1_000), at(2, 0), &cfg);
        s.record_trade(krw(-20_999), at(3, 0), &cfg);
        assert_eq!(s.realized_pnl_today, krw(-49_999));
        assert_eq!(
            s.check_entry(at(3, 1), false, &cfg),
            Ok(()),
            "not yet at −5 %"
        );
        s.record_trade(krw(-1), at(3, 2), &cfg);
        assert!(matches!(
            s.check_entry(at(3, 3), false, &cfg),
            Err(Refusal::DailyLossLimit { .. })
        ));
        assert_eq!(s.cooldown_until, None, "the streak was broken by the win");
    }

    #[test]
    fn daily_reset_happens_at_seoul_midnight() {
        let cfg = RiskConfig::default();
        let mut s = RiskState::new(at(10, 0), krw(1_000_000));
        s.record_trade(krw(-60_000), at(10, 0), &cfg);
        s.record_trade(krw(-1), at(11, 0), &cfg);
        s.record_entry_fill();
        // 14:59 UTC is 23:59 in Seoul: the same day.
        assert!(!s.roll_day(at(14, 59), krw(940_000)));
        assert!(s.check_entry(at(14, 59), false, &cfg).is_err());
        // 15:00 UTC is 00:00 Asia/Seoul: a new day.
        assert!(s.roll_day(at(15, 0), krw(939_999)));
        assert_eq!(s.day, NaiveDate::from_ymd_opt(2025, 9, 2).unwrap());
        assert_eq!((s.realized_pnl_today, s.entries_today), (Krw::ZERO, 0));
        assert_eq!(s.day_start_equity, krw(939_999));
        assert_eq!(s.loss_streak, 2, "the streak does not reset at midnight");
        assert_eq!(s.check_entry(at(15, 0), false, &cfg), Ok(()));
    }

    #[test]
    fn max_entries_halt_and_open_position_refuse_entries() {
        let cfg = RiskConfig::default();
        let mut s = RiskState::new(at(1, 0), krw(1_000_000));
        assert_eq!(
            s.check_entry(at(1, 0), true, &cfg),
            Err(Refusal::PositionOpen)
        );
        for _ in 0..10 {
            s.record_entry_fill();
        }
        assert_eq!(
            s.check_entry(at(1, 0), false, &cfg),
            Err(Refusal::MaxEntries(10))
        );
        s.entries_today = 9;
        s.halted = true;
        assert_eq!(s.check_entry(at(1, 0), false, &cfg), Err(Refusal::Halted));
    }
}
