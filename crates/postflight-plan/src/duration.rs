//! Durations as plans write them: `250ms`, `30s`, `5m`, `24h`, `7d`, or combined like `1m30s`.
//!
//! Plans are read by people under pressure, so the unit is mandatory: a bare `30` is an error
//! rather than a guess between seconds and milliseconds.

use std::fmt;
use std::time::Duration;

/// Why a duration text was rejected; the message is shown to the plan's author as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DurationError(String);

const UNITS: &[(&str, u128)] = &[
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
];

/// Parses a duration such as `250ms`, `1.5s`, `5m`, `24h`, `7d` or `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    let hint = "a duration like 250ms, 30s, 5m, 24h or 7d";
    if trimmed.is_empty() {
        return Err(DurationError(format!(
            "expected {hint}, got an empty value"
        )));
    }
    let mut rest = trimmed;
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return Err(DurationError(format!("expected {hint}, got `{trimmed}`")));
        }
        let (number, after) = rest.split_at(number_len);
        let after = after.trim_start();
        let unit_len = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, after_unit) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(DurationError(format!(
                "`{trimmed}` has no unit; expected {hint}"
            )));
        }
        let Some(&(_, unit_nanos)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(DurationError(format!(
                "unknown unit `{unit}` in `{trimmed}`; use ms, s, m, h or d"
            )));
        };
        total_nanos = total_nanos
            .checked_add(scale(number, unit_nanos, trimmed)?)
            .ok_or_else(|| DurationError(format!("`{trimmed}` is too long a duration")))?;
        rest = after_unit.trim_start();
    }
    let nanos = u64::try_from(total_nanos)
        .map_err(|_| DurationError(format!("`{trimmed}` is too long a duration")))?;
    Ok(Duration::from_nanos(nanos))
}

/// Multiplies a decimal number text by a unit in nanoseconds, exactly (no float rounding).
fn scale(number: &str, unit_nanos: u128, whole: &str) -> Result<u128, DurationError> {
    let invalid = || DurationError(format!("`{whole}` is not a valid duration"));
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
        return Err(invalid());
    }
    let int: u128 = if int_part.is_empty() {
        0
    } else {
        int_part.parse().map_err(|_| invalid())?
    };
    let mut nanos = int.checked_mul(unit_nanos).ok_or_else(invalid)?;
    let mut place = unit_nanos;
    for digit in frac_part.chars() {
        place /= 10;
        let d = u128::from(digit.to_digit(10).ok_or_else(invalid)?);
        nanos = nanos.checked_add(d * place).ok_or_else(invalid)?;
    }
    Ok(nanos)
}

/// Formats a duration in the plan syntax, exactly and as short as possible (`90s` → `1m30s`;
/// below a millisecond as a decimal of milliseconds, `999.985189ms`).
pub fn format_duration(duration: Duration) -> String {
    let mut nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    // Whole seconds and up; the rest (under a second) is written in milliseconds below.
    for &(name, unit) in UNITS.iter().rev().filter(|(name, _)| *name != "ms") {
        if nanos >= unit {
            let count = nanos / unit;
            nanos %= unit;
            out.push_str(&format!("{count}{name}"));
        }
    }
    if nanos > 0 {
        let (ms, fraction) = (nanos / 1_000_000, nanos % 1_000_000);
        if fraction == 0 {
            out.push_str(&format!("{ms}ms"));
        } else {
            let digits = format!("{fraction:06}");
            out.push_str(&format!("{ms}.{}ms", digits.trim_end_matches('0')));
        }
    }
    out
}

/// Formats a measured duration for people: `850 µs`, `12.3 ms`, `3.41 s`, `2m05s`.
pub fn human_duration(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs < 0.001 {
        format!("{:.0} µs", secs * 1e6)
    } else if secs < 0.1 {
        format!("{:.1} ms", secs * 1e3)
    } else if secs < 1.0 {
        format!("{:.0} ms", secs * 1e3)
    } else if secs < 60.0 {
        format!("{secs:.2} s")
    } else {
        let whole = duration.as_secs();
        format!("{}m{:02}s", whole / 60, whole % 60)
    }
}

/// A duration that prints in plan syntax, for messages that quote a plan's threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanDuration(pub Duration);

impl fmt::Display for PlanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_every_unit_of_the_contract() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration(" 2s "), Ok(Duration::from_secs(2)));
    }

    #[test]
    fn rejects_what_is_not_a_duration_with_a_reason() {
        let err = |t: &str| parse_duration(t).unwrap_err().to_string();
        assert_eq!(
            err("30"),
            "`30` has no unit; expected a duration like 250ms, 30s, 5m, 24h or 7d"
        );
        assert_eq!(
            err("5 minutes"),
            "unknown unit `minutes` in `5 minutes`; use ms, s, m, h or d"
        );
        assert_eq!(
            err("fast"),
            "expected a duration like 250ms, 30s, 5m, 24h or 7d, got `fast`"
        );
        assert_eq!(
            err(""),
            "expected a duration like 250ms, 30s, 5m, 24h or 7d, got an empty value"
        );
        assert_eq!(err("1.2.3s"), "`1.2.3s` is not a valid duration");
        assert!(err("99999999999999999999d").contains("too long"));
    }

    #[test]
    fn formats_shortest_exact_form() {
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_secs(86_400 * 7)), "7d");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        // A remaining time measured to the nanosecond stays one valid duration.
        assert_eq!(
            format_duration(Duration::from_nanos(999_985_189)),
            "999.985189ms"
        );
        assert_eq!(format_duration(Duration::from_nanos(1_500)), "0.0015ms");
        assert_eq!(
            format_duration(Duration::from_nanos(61_000_000_001)),
            "1m1s0.000001ms"
        );
    }

    #[test]
    fn human_form_picks_a_readable_unit() {
        assert_eq!(human_duration(Duration::from_micros(850)), "850 µs");
        assert_eq!(human_duration(Duration::from_micros(12_345)), "12.3 ms");
        assert_eq!(human_duration(Duration::from_millis(3410)), "3.41 s");
        assert_eq!(human_duration(Duration::from_secs(125)), "2m05s");
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(ms in 0u64..10_000_000_000) {
            let d = Duration::from_millis(ms);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }

        #[test]
        fn format_then_parse_is_identity_to_the_nanosecond(nanos in 0u64..100_000_000_000_000) {
            let d = Duration::from_nanos(nanos);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}
