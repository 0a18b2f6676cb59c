use super::*;

#[test]
fn dates_are_civil_dates() {
    assert_eq!(date(0), "1970-01-01");
    assert_eq!(date(951_782_400), "2000-02-29");
    assert_eq!(date(1_796_256_000), "2026-12-03");
    assert_eq!(date(-86_400), "1969-12-31");
}

#[test]
fn days_are_whole_days_rounded_down() {
    assert_eq!(days_between(0, 86_399), 0);
    assert_eq!(days_between(0, 86_400), 1);
    assert_eq!(days_between(86_400, 0), -1);
    assert_eq!(days(1), "1 day");
    assert_eq!(days(3), "3 days");
}
