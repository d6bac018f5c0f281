//! Wall-clock formatting: the original's `create_date`
//! (`%Y-%m-%dT%H:%M:%S.%f`, here always UTC) and the HTTP date Flask's
//! `jsonify` used for datetimes in `/metrics.json`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;

/// Seconds since the Unix epoch (0 for times before it).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// Times before the epoch (a clock set far back) print as the epoch, as
/// `unix_secs` counts them.
fn clamp(t: SystemTime) -> SystemTime {
    t.max(UNIX_EPOCH)
}

/// `2021-11-04T12:30:05.123456`: the original's `create_date` format.
pub fn create_date(t: SystemTime) -> String {
    let d = OffsetDateTime::from(clamp(t));
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}",
        d.year(),
        u8::from(d.month()),
        d.day(),
        d.hour(),
        d.minute(),
        d.second(),
        d.microsecond()
    )
}

/// `Thu, 04 Nov 2021 12:30:05 GMT` (RFC 9110 IMF-fixdate).
pub fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(clamp(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        let t = UNIX_EPOCH + Duration::new(1_636_029_005, 123_456_789);
        assert_eq!(create_date(t), "2021-11-04T12:30:05.123456");
        assert_eq!(http_date(t), "Thu, 04 Nov 2021 12:30:05 GMT");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(create_date(leap), "2000-02-29T00:00:00.000000");
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        let before = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(create_date(before), "1970-01-01T00:00:00.000000");
    }
}
