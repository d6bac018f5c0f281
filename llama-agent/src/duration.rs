//! Human durations for interval flags: `30` (seconds, like the original's
//! numbers), `30s`, `500ms`, `5m`, `1h`.

use std::time::Duration;

/// Parse a duration; `None` when the text is not one of the accepted forms.
pub fn parse(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let ms_per_unit: u64 = match unit.trim() {
        "" | "s" => 1_000,
        "ms" => 1,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    n.checked_mul(ms_per_unit).map(Duration::from_millis)
}

/// Render a duration the way [`parse`] reads it (for log lines and messages).
pub fn display(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        assert_eq!(parse("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse(" 30s "), Some(Duration::from_secs(30)));
        assert_eq!(parse("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("0"), Some(Duration::ZERO));
    }

    #[test]
    fn refused_forms() {
        for s in [
            "",
            "s",
            "-1",
            "1.5s",
            "10 parsecs",
            "1d",
            "99999999999999999999",
        ] {
            assert_eq!(parse(s), None, "{s:?}");
        }
    }

    #[test]
    fn display_round_trips() {
        for d in [Duration::from_secs(60), Duration::from_millis(200)] {
            assert_eq!(parse(&display(d)), Some(d));
        }
    }
}
