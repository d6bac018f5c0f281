//! A small, fast JSON writer for the matrix and path answers: a 300-member
//! matrix is 90,000 cells, and generic serialization of that many small
//! objects costs more than the whole rest of the request.

use std::fmt::Write as _;

/// Appends `s` as a JSON string.
pub fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends an integer.
pub fn int(out: &mut String, v: impl itoa::Integer) {
    out.push_str(itoa::Buffer::new().format(v));
}

/// Appends `v` rounded to three decimals without trailing zeros (`12.5`,
/// `0.031`, `3`), or `null` when it is not finite.
pub fn num(out: &mut String, v: f64) {
    if !v.is_finite() || v.abs() >= 1e15 {
        out.push_str("null");
        return;
    }
    let milli = (v * 1000.0).round() as i64;
    if milli < 0 {
        out.push('-');
    }
    let m = milli.unsigned_abs();
    int(out, m / 1000);
    let frac = m % 1000;
    if frac != 0 {
        let digits = [
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ];
        let len = 3 - digits.iter().rev().take_while(|d| **d == b'0').count();
        out.push('.');
        for d in &digits[..len] {
            out.push(char::from(*d));
        }
    }
}

/// Appends `v` or `null`.
pub fn opt_num(out: &mut String, v: Option<f64>) {
    match v {
        Some(v) => num(out, v),
        None => out.push_str("null"),
    }
}

/// Appends `"key":` (after a comma unless `first`).
pub fn key(out: &mut String, first: bool, k: &str) {
    if !first {
        out.push(',');
    }
    string(out, k);
    out.push(':');
}

/// Appends `[a,b,…]` of the items written by `each`.
pub fn array<T>(
    out: &mut String,
    items: impl IntoIterator<Item = T>,
    mut each: impl FnMut(&mut String, T),
) {
    out.push('[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        each(out, item);
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_valid_json() {
        let mut out = String::new();
        for v in [0.0, 12.5, 0.0314, -1.0005, 3.0, f64::NAN, 1e20, 99.9996] {
            num(&mut out, v);
            out.push(' ');
        }
        assert_eq!(out, "0 12.5 0.031 -1.001 3 null null 100 ");
        let mut s = String::new();
        string(&mut s, "a\"b\\c\n\u{1}é");
        assert_eq!(s, r#""a\"b\\c\n\u0001é""#);
        let back: String = serde_json::from_str(&s).unwrap();
        assert_eq!(back, "a\"b\\c\n\u{1}é");
    }
}
