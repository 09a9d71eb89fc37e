//! Unix time to and from calendar dates (proleptic Gregorian, UTC), for access-log timestamps,
//! certificate validity and operator output, without a date crate. Howard Hinnant's algorithms.

/// Days since 1970-01-01 of a date (`month` 1-12).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `(year, month 1-12, day)` of a day counted from 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Unix seconds as `(year, month, day, hour, minute, second)`.
pub fn from_unix(unix: i64) -> (i64, i64, i64, i64, i64, i64) {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    (year, month, day, secs / 3600, secs % 3600 / 60, secs % 60)
}

/// Unix seconds as RFC 3339 in UTC: `2026-12-03T14:00:00Z`; clamped to the years 1 to 9999,
/// since the value may come from the store (a replica's record) and be anything.
pub fn rfc3339(unix: i64) -> String {
    let (y, mo, d, h, mi, s) = from_unix(unix.clamp(-62_135_596_800, 253_402_300_799));
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// Now, in Unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_across_eras_and_leap_days() {
        for (y, m, d) in [(1970, 1, 1), (2000, 2, 29), (2026, 3, 1), (2051, 5, 31), (1969, 12, 31), (2400, 2, 29)] {
            assert_eq!(civil_from_days(days_from_civil(y, m, d)), (y, m, d));
        }
        assert_eq!(days_from_civil(2026, 3, 1) * 86_400, 1_772_323_200);
        assert_eq!(from_unix(2_569_104_000 + 3_661), (2051, 5, 31, 1, 1, 1));
        assert_eq!(rfc3339(2_569_104_000 + 3_661), "2051-05-31T01:01:01Z");
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(i64::MIN), "0001-01-01T00:00:00Z");
    }
}
