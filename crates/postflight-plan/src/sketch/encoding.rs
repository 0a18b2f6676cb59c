//! A strict reader of the sketch encoding, run before the library's decoder sees bytes from a
//! probe or the database.
//!
//! The format is DataDog's DDSketch binary encoding: a sequence of flag bytes, each followed
//! by its payload. [`LatencySketch::to_bytes`](super::LatencySketch::to_bytes) writes only a
//! few of its flags (count, min, max, sum, the logarithmic index mapping, the zero count and
//! the positive store as index deltas and counts); anything else cannot come from a postflight
//! probe and is refused. What is accepted is bounded so that decoding and every later merge
//! stay within range: at most [`MAX_BINS`](super::MAX_BINS) strictly increasing keys of
//! bounded size, whole counts that cannot overflow, and finite extremes with `min ≤ max`.

use sketches_ddsketch::Config;

use super::{MAX_BINS, MAX_LATENCY_MS, MIN_VALUE, RELATIVE_ACCURACY};

const FLAG_INDEX_MAPPING_LOG: u8 = 0x02;
const FLAG_ZERO_COUNT: u8 = 0x04;
const FLAG_POSITIVE_DELTAS_AND_COUNTS: u8 = 0x05;
const FLAG_SUM: u8 = 0x84;
const FLAG_MIN: u8 = 0x88;
const FLAG_MAX: u8 = 0x8C;
const FLAG_COUNT: u8 = 0xA0;

/// The most values one sketch may hold (2⁴⁰): far above any check's requests, far below
/// where adding counts of many sketches could overflow.
const MAX_VALUES: u64 = 1 << 40;
/// Keys of values between [`MIN_VALUE`] and [`MAX_LATENCY_MS`] lie within ±2,100; the bound
/// leaves room and keeps every key arithmetic of the library inside `i32`.
const MAX_KEY: i64 = 1 << 16;

/// The index mapping's base of our configuration, computed once.
static GAMMA: std::sync::LazyLock<f64> =
    std::sync::LazyLock::new(|| Config::new(RELATIVE_ACCURACY, MAX_BINS, MIN_VALUE).gamma);

/// What the reader learned about a well-formed encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Shape {
    /// Values held: the zero count plus every bin's count.
    pub count: u64,
}

/// Checks that `bytes` is an encoding our encoder could have written.
pub(super) fn check(bytes: &[u8]) -> Result<Shape, String> {
    let mut r = Reader { bytes, at: 0 };
    // The decoder skips a leading version byte; read the same bytes it will.
    if bytes.len() >= 2 && bytes[0] == 0x02 && is_version_prefix_follower(bytes[1]) {
        r.at = 1;
    }
    let mut seen: Vec<u8> = Vec::new();
    let mut declared: Option<u64> = None;
    let (mut min, mut max) = (None, None);
    let mut zeros = 0u64;
    let mut binned = 0u64;
    while r.at < bytes.len() {
        let at = r.at;
        let flag = r.byte()?;
        if seen.contains(&flag) {
            return Err(format!("flag 0x{flag:02x} appears twice (byte {at})"));
        }
        seen.push(flag);
        match flag {
            FLAG_COUNT => declared = Some(r.count("count")?),
            FLAG_ZERO_COUNT => zeros = r.count("zero count")?,
            FLAG_MIN => min = Some(r.latency("min")?),
            FLAG_MAX => max = Some(r.latency("max")?),
            FLAG_SUM => {
                let sum = r.f64()?;
                if !(sum.is_finite() && sum >= 0.0) {
                    return Err(format!("sum {sum} is not a finite, non-negative number"));
                }
            }
            FLAG_INDEX_MAPPING_LOG => {
                let gamma = r.f64()?;
                let _offset = r.f64()?;
                let ours = *GAMMA;
                if gamma != ours {
                    return Err(format!(
                        "made with another accuracy (gamma {gamma}, postflight uses {ours})"
                    ));
                }
            }
            FLAG_POSITIVE_DELTAS_AND_COUNTS => binned = r.bins()?,
            other => {
                return Err(format!(
                    "flag 0x{other:02x} at byte {at} is not written by postflight"
                ));
            }
        }
    }
    let count = zeros
        .checked_add(binned)
        .filter(|c| *c <= MAX_VALUES)
        .ok_or("holds too many values")?;
    if count == 0 {
        return Ok(Shape { count });
    }
    if declared != Some(count) {
        return Err(match declared {
            Some(d) => format!("it says {d} values but its bins hold {count}"),
            None => format!("its bins hold {count} values but it has no count"),
        });
    }
    match (min, max) {
        (Some(min), Some(max)) if min <= max => Ok(Shape { count }),
        (Some(min), Some(max)) => Err(format!("min {min} is above max {max}")),
        _ => Err("a sketch with values has no min or max".to_owned()),
    }
}

/// The decoder's rule for "0x02 is a version byte": the next byte must be a flag it knows.
fn is_version_prefix_follower(b: u8) -> bool {
    if matches!(b, 0x04 | 0xA0 | 0x84 | 0x88 | 0x8C | 0x02) {
        return true;
    }
    let sub = b >> 2;
    match b & 0x03 {
        1 | 3 => (1..=3).contains(&sub),
        2 => sub <= 4,
        _ => false,
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let b = *self
            .bytes
            .get(self.at)
            .ok_or_else(|| format!("ends early at byte {}", self.at))?;
        self.at += 1;
        Ok(b)
    }

    fn f64(&mut self) -> Result<f64, String> {
        let end = self.at + 8;
        let raw = self
            .bytes
            .get(self.at..end)
            .ok_or_else(|| format!("ends early at byte {}", self.at))?;
        self.at = end;
        let mut le = [0u8; 8];
        le.copy_from_slice(raw);
        Ok(f64::from_le_bytes(le))
    }

    /// A latency extreme: finite, within `[0, MAX_LATENCY_MS]`.
    fn latency(&mut self, what: &str) -> Result<f64, String> {
        let v = self.f64()?;
        if (0.0..=MAX_LATENCY_MS).contains(&v) {
            Ok(v)
        } else {
            Err(format!(
                "{what} {v} is not a latency in [0, {MAX_LATENCY_MS}] ms"
            ))
        }
    }

    /// Unsigned variable-length integer: seven bits per byte, low bits first; the ninth
    /// byte carries eight bits.
    fn var_u64(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        let mut shift = 0u32;
        loop {
            let b = self.byte()?;
            if b < 0x80 || shift == 56 {
                return Ok(value | (u64::from(b) << shift));
            }
            value |= u64::from(b & 0x7F) << shift;
            shift += 7;
        }
    }

    /// ZigZag-encoded signed variable-length integer.
    fn var_i64(&mut self) -> Result<i64, String> {
        let z = self.var_u64()?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    /// Variable-length double: the bits of `v + 1` minus those of `1`, rotated left by six,
    /// sent high bits first, seven per byte (the ninth byte carries eight).
    fn var_f64(&mut self) -> Result<f64, String> {
        let mut bits = 0u64;
        let mut shift = 57i32;
        loop {
            let b = self.byte()?;
            if shift == 1 {
                bits |= u64::from(b);
                break;
            }
            if b < 0x80 {
                bits |= u64::from(b) << shift;
                break;
            }
            bits |= u64::from(b & 0x7F) << shift;
            shift -= 7;
        }
        let raw = bits.rotate_right(6).wrapping_add(1f64.to_bits());
        Ok(f64::from_bits(raw) - 1.0)
    }

    /// A count: a whole number in `[0, MAX_VALUES]`.
    fn count(&mut self, what: &str) -> Result<u64, String> {
        let v = self.var_f64()?;
        if (0.0..=MAX_VALUES as f64).contains(&v) && v.fract() == 0.0 {
            Ok(v as u64)
        } else {
            Err(format!("{what} {v} is not a whole number of values"))
        }
    }

    /// The positive store as (key delta, count) pairs; returns the values it holds.
    fn bins(&mut self) -> Result<u64, String> {
        let n = self.var_u64()?;
        if n > u64::from(MAX_BINS) {
            return Err(format!("{n} bins, at most {MAX_BINS}"));
        }
        let mut key: Option<i64> = None;
        let mut total = 0u64;
        for _ in 0..n {
            let delta = self.var_i64()?;
            let next = match key {
                None => delta,
                Some(_) if delta <= 0 => return Err("bin keys do not increase".to_owned()),
                Some(k) => k.saturating_add(delta),
            };
            if next.unsigned_abs() > MAX_KEY.unsigned_abs() {
                return Err(format!("bin key {next} is out of range"));
            }
            key = Some(next);
            let count = self.count("bin count")?;
            if count == 0 {
                return Err("an empty bin".to_owned());
            }
            total = total
                .checked_add(count)
                .filter(|t| *t <= MAX_VALUES)
                .ok_or("holds too many values")?;
        }
        Ok(total)
    }
}
