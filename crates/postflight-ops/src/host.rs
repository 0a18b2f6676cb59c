//! The machine and its clock, as every binary sees them: one home for identities in logs and
//! audit records and for the Unix-epoch timestamps stored and sent.

/// This machine's host name, for identities in logs and audit records.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Milliseconds since the Unix epoch (0 for a clock set before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_and_the_name_are_plausible() {
        assert!(now_ms() > 1_700_000_000_000, "after 2023");
        let name = hostname();
        assert!(!name.is_empty() && name.trim() == name, "{name:?}");
    }
}
