//! Technical indicators in `f64`, following TA-Lib's arithmetic operation for operation
//! (SPEC B2: 1e-9 relative on every row of `data/reference/`). SMA, the middle band and the
//! volume ratio equal TA-Lib 0.8.2's to the bit; its RSI multiplies by `1/n` where this one
//! divides by `n` (TA-Lib's classic order), so RSI agrees within ~2.4e-15 relative, not
//! to the bit (docs/BENCHMARKS.md has the measurement). Each indicator has a batch form over a slice (TA-Lib's loop) and an
//! O(1)-per-candle incremental form for live use; the tests pin the two to equal bits.
//!
//! Why the exact operation order matters: TA-Lib keeps running sums (`total += new; out =
//! total / n; total -= oldest`) and a running sum of squares for the Bollinger deviation.
//! A "cleaner" two-pass mean or Welford variance drifts from TA-Lib by more than 1e-9 on
//! prices near 1.5e8 KRW, so we copy TA-Lib's order instead.

/// TA-Lib's `TA_IS_ZERO`: |v| < 1e-8 counts as zero in the RSI denominator.
fn ta_is_zero(v: f64) -> bool {
    -0.000_000_01 < v && v < 0.000_000_01
}

/// TA-Lib's `TA_IS_ZERO_OR_NEG` for the variance: below 1e-8 the deviation is 0.
fn ta_is_zero_or_neg(v: f64) -> bool {
    v < 0.000_000_01
}

/// Simple moving average, batch: `None` for the first `period - 1` values.
///
/// The SMA and Bollinger batch forms fill their output with `extend` over zipped slices (no bounds checks,
/// no second pass over a pre-filled vector): the same operations in the same order as the
/// indexed loop they replace, so every value is unchanged to the bit.
pub fn sma(values: &[f64], period: usize) -> Vec<Option<f64>> {
    if period == 0 || values.len() < period {
        return vec![None; values.len()];
    }
    let n = period as f64;
    let mut out = Vec::with_capacity(values.len());
    out.resize(period - 1, None);
    let mut total: f64 = values[..period - 1].iter().sum();
    // Value i enters the sum, the output is taken, value i + 1 - period leaves.
    out.extend(values[period - 1..].iter().zip(values).map(|(&x, &old)| {
        total += x;
        let v = total / n;
        total -= old;
        Some(v)
    }));
    out
}

/// A fixed window of the last `period` values, the state of the running sums.
#[derive(Debug, Clone)]
struct Window {
    buf: Vec<f64>,
    head: usize,
    len: usize,
}

impl Window {
    fn new(period: usize) -> Self {
        Window {
            buf: vec![0.0; period.max(1)],
            head: 0,
            len: 0,
        }
    }

    /// Stores `x`; returns whether the window is full (then `oldest()` is the value that
    /// leaves the sum after this step's output).
    fn push(&mut self, x: f64) -> bool {
        self.buf[self.head] = x;
        // A compare instead of `%`: the division was the step's single largest cost.
        self.head += 1;
        if self.head == self.buf.len() {
            self.head = 0;
        }
        if self.len < self.buf.len() {
            self.len += 1;
        }
        self.len == self.buf.len()
    }

    fn oldest(&self) -> f64 {
        self.buf[self.head]
    }
}

/// Simple moving average, incremental.
#[derive(Debug, Clone)]
pub struct Sma {
    window: Window,
    total: f64,
    n: f64,
}

impl Sma {
    pub fn new(period: usize) -> Self {
        Sma {
            window: Window::new(period),
            total: 0.0,
            n: period.max(1) as f64,
        }
    }

    pub fn update(&mut self, x: f64) -> Option<f64> {
        self.total += x;
        if !self.window.push(x) {
            return None;
        }
        let out = self.total / self.n;
        self.total -= self.window.oldest();
        Some(out)
    }
}

/// Wilder's RSI, batch, TA-Lib convention: averages seeded with the simple mean of the
/// first `period` changes, first value at index `period`. Kept as an indexed loop into a
/// pre-filled vector: the `extend` form of the other batch functions measured 30 % slower
/// here (the loop is bound by the multiply-add-divide chain of the averages, and the
/// rewrite lost the branch's speculation; see [`add_change`]).
pub fn rsi(values: &[f64], period: usize) -> Vec<Option<f64>> {
    let mut out = vec![None; values.len()];
    if period == 0 || values.len() <= period {
        return out;
    }
    let n = period as f64;
    let (mut gain, mut loss) = (0.0, 0.0);
    for i in 1..=period {
        add_change(values[i] - values[i - 1], &mut gain, &mut loss);
    }
    loss /= n;
    gain /= n;
    out[period] = Some(rsi_value(gain, loss));
    for i in period + 1..values.len() {
        loss *= n - 1.0;
        gain *= n - 1.0;
        add_change(values[i] - values[i - 1], &mut gain, &mut loss);
        loss /= n;
        gain /= n;
        out[i] = Some(rsi_value(gain, loss));
    }
    out
}

/// A change goes to the gains or (negated) to the losses, as in TA-Lib. A branch, not a
/// select: measured, the branch-free form was 40 % slower, because a predicted branch
/// keeps the add off the critical path of the RSI's dependency chain (multiply, add,
/// divide per candle), and a select puts it on.
fn add_change(change: f64, gain: &mut f64, loss: &mut f64) {
    if change < 0.0 {
        *loss -= change;
    } else {
        *gain += change;
    }
}

fn rsi_value(gain: f64, loss: f64) -> f64 {
    let sum = gain + loss;
    if ta_is_zero(sum) {
        0.0
    } else {
        100.0 * (gain / sum)
    }
}

/// Wilder's RSI, incremental.
#[derive(Debug, Clone)]
pub struct Rsi {
    n: f64,
    period: usize,
    prev: Option<f64>,
    changes: usize,
    gain: f64,
    loss: f64,
}

impl Rsi {
    pub fn new(period: usize) -> Self {
        Rsi {
            n: period.max(1) as f64,
            period: period.max(1),
            prev: None,
            changes: 0,
            gain: 0.0,
            loss: 0.0,
        }
    }

    pub fn update(&mut self, x: f64) -> Option<f64> {
        let prev = self.prev.replace(x)?;
        let change = x - prev;
        self.changes += 1;
        let seeding = self.changes <= self.period;
        if !seeding {
            self.loss *= self.n - 1.0;
            self.gain *= self.n - 1.0;
        }
        add_change(change, &mut self.gain, &mut self.loss);
        if seeding && self.changes < self.period {
            return None;
        }
        self.loss /= self.n;
        self.gain /= self.n;
        Some(rsi_value(self.gain, self.loss))
    }
}

/// One Bollinger value: middle = SMA, upper/lower = middle ± k × population std.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bands {
    pub upper: f64,
    pub middle: f64,
    pub lower: f64,
}

fn bands(middle: f64, mean_sq: f64, k: f64) -> Bands {
    let var = mean_sq - middle * middle;
    let std = if ta_is_zero_or_neg(var) {
        0.0
    } else {
        var.sqrt()
    };
    let dev = std * k;
    Bands {
        upper: middle + dev,
        middle,
        lower: middle - dev,
    }
}

/// Bollinger Bands, batch (TA-Lib `BBANDS` with an SMA and equal up/down deviations).
/// One pass: the SMA's running sum and the running sum of squares side by side, each in
/// the order [`sma`] and the incremental form use.
pub fn bollinger(values: &[f64], period: usize, k: f64) -> Vec<Option<Bands>> {
    if period == 0 || values.len() < period {
        return vec![None; values.len()];
    }
    let n = period as f64;
    let mut out = Vec::with_capacity(values.len());
    out.resize(period - 1, None);
    let head = &values[..period - 1];
    let mut total: f64 = head.iter().sum();
    let mut total_sq: f64 = head.iter().map(|v| v * v).sum();
    out.extend(values[period - 1..].iter().zip(values).map(|(&x, &old)| {
        total += x;
        let middle = total / n;
        total -= old;
        total_sq += x * x;
        let mean_sq = total_sq / n;
        total_sq -= old * old;
        Some(bands(middle, mean_sq, k))
    }));
    out
}

/// Bollinger Bands, incremental.
#[derive(Debug, Clone)]
pub struct Bollinger {
    sma: Sma,
    window: Window,
    total_sq: f64,
    n: f64,
    k: f64,
}

impl Bollinger {
    pub fn new(period: usize, k: f64) -> Self {
        Bollinger {
            sma: Sma::new(period),
            window: Window::new(period),
            total_sq: 0.0,
            n: period.max(1) as f64,
            k,
        }
    }

    pub fn update(&mut self, x: f64) -> Option<Bands> {
        let middle = self.sma.update(x);
        self.total_sq += x * x;
        if !self.window.push(x) {
            return None;
        }
        let mean_sq = self.total_sq / self.n;
        let old = self.window.oldest();
        self.total_sq -= old * old;
        middle.map(|m| bands(m, mean_sq, self.k))
    }
}

/// `volume / SMA(volume, period)`, the current candle included in the average.
pub fn volume_ratio(volume: f64, volume_sma: f64) -> Option<f64> {
    (volume_sma != 0.0).then(|| volume / volume_sma)
}

/// Regime distance d = (SMA fast − SMA slow) / SMA slow on hourly closes (SPEC B3).
pub fn regime_distance(fast: f64, slow: f64) -> Option<f64> {
    (slow != 0.0).then(|| (fast - slow) / slow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(n: usize) -> Vec<f64> {
        // A deterministic walk with flat stretches (zero changes, zero variance) and
        // price-sized values, the cases where a different operation order would show.
        let mut x = 150_000_000.0;
        (0..n)
            .map(|i| {
                let step = match i % 37 {
                    0..=4 => 0.0,
                    k => ((k as f64 * 7919.0) % 211.0 - 105.0) * 1000.0,
                };
                x += step;
                x
            })
            .collect()
    }

    fn same(a: Option<f64>, b: Option<f64>) -> bool {
        a.map(f64::to_bits) == b.map(f64::to_bits)
    }

    #[test]
    fn incremental_equals_batch_bit_for_bit() {
        let xs = series(2_000);
        for period in [1, 2, 7, 14, 20, 50, 200] {
            let mut s = Sma::new(period);
            let mut r = Rsi::new(period);
            let mut b = Bollinger::new(period, 2.0);
            let (bs, br, bb) = (
                sma(&xs, period),
                rsi(&xs, period),
                bollinger(&xs, period, 2.0),
            );
            for (i, &x) in xs.iter().enumerate() {
                assert!(same(s.update(x), bs[i]), "sma{period} at {i}");
                assert!(same(r.update(x), br[i]), "rsi{period} at {i}");
                assert_eq!(b.update(x), bb[i], "bb{period} at {i}");
            }
        }
    }

    /// The shipped sample of real candles (`data/`, 5,760 KRW-BTC minutes): the batch
    /// forms at the strategy's periods equal the incremental forms, which the TA-Lib
    /// reference test pins, bit for bit on every row.
    #[test]
    fn batch_equals_incremental_on_real_candles() {
        let text = include_str!("../../data/upbit_KRW-BTC_1m_2025-09-20_2025-09-23.csv");
        let candles = crate::domain::candle_csv::parse_candles(
            "sample",
            text,
            crate::domain::candle::Interval::M1,
        )
        .unwrap();
        let f = crate::domain::indicator_table::to_f64;
        let closes: Vec<f64> = candles.iter().map(|c| f(c.close)).collect();
        let volumes: Vec<f64> = candles.iter().map(|c| f(c.volume)).collect();
        assert!(closes.len() > 5_000);
        let (r14, r7, ma, bb, vol) = (
            rsi(&closes, 14),
            rsi(&closes, 7),
            sma(&closes, 200),
            bollinger(&closes, 20, 2.0),
            sma(&volumes, 20),
        );
        let (mut i14, mut i7, mut ima) = (Rsi::new(14), Rsi::new(7), Sma::new(200));
        let (mut ibb, mut ivol) = (Bollinger::new(20, 2.0), Sma::new(20));
        for (i, (&x, &v)) in closes.iter().zip(&volumes).enumerate() {
            assert!(same(i14.update(x), r14[i]), "rsi14 at {i}");
            assert!(same(i7.update(x), r7[i]), "rsi7 at {i}");
            assert!(same(ima.update(x), ma[i]), "sma200 at {i}");
            assert!(same(ivol.update(v), vol[i]), "vol sma20 at {i}");
            let (a, b) = (ibb.update(x), bb[i]);
            let bits = |b: Option<Bands>| b.map(|b| [b.upper, b.middle, b.lower].map(f64::to_bits));
            assert_eq!(bits(a), bits(b), "bollinger at {i}");
        }
    }

    #[test]
    fn rsi_starts_at_index_n_with_the_simple_mean_seed() {
        let xs = [1.0, 2.0, 1.0, 2.0, 3.0];
        let r = rsi(&xs, 2);
        assert_eq!(r[1], None);
        // changes +1, −1 → gain 0.5, loss 0.5 → 50
        assert_eq!(r[2], Some(50.0));
        // Wilder: gain (0.5·1 + 1)/2 = 0.75, loss 0.25 → 75
        assert_eq!(r[3], Some(75.0));
    }

    #[test]
    fn flat_prices_give_zero_deviation_and_zero_rsi() {
        let xs = [5.0; 30];
        let b = bollinger(&xs, 20, 2.0);
        assert_eq!(b[19].map(|b| b.upper), Some(5.0));
        assert_eq!(rsi(&xs, 14)[14], Some(0.0));
    }
}
