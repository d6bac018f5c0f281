//! Validation of `POST /api/v1/register` bodies (docs/server-api.md): every schema violation
//! becomes a 400 naming the field, including the JSON syntax errors
//! (`NaN`, `Infinity`) that a parser reports only by position.

use std::{net::IpAddr, sync::Arc};

use serde_json::{Map, Value};

use crate::{
    entry::{Probe, REQUIRED_TAGS, Tags},
    error::ApiError,
    settings::Limits,
};

/// Tag pairs as registered.
pub type TagPairs = Vec<(Box<str>, Box<str>)>;

/// A registration after validation, before defaults are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub ip: Option<IpAddr>,
    pub port: u16,
    pub keepalive: Option<f64>,
    pub group: Option<String>,
    pub tags: TagPairs,
}

impl Registration {
    /// Parses and validates a request body.
    pub fn parse(body: &[u8], limits: &Limits) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| syntax_error(body, &e))?;
        let Value::Object(obj) = value else {
            return Err(ApiError::field("body", "must be a JSON object"));
        };
        let port = port(&obj)?;
        let ip = match obj.get("ip") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(parse_ip(s)?),
            Some(_) => {
                return Err(ApiError::field(
                    "ip",
                    "must be a string holding an IP address",
                ));
            }
        };
        let keepalive = match obj.get("keepalive") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_f64() {
                Some(k) if k.is_finite() && k > limits.max_keepalive => {
                    return Err(ApiError::field(
                        "keepalive",
                        format!(
                            "longer than {} seconds (limit max_keepalive)",
                            limits.max_keepalive
                        ),
                    ));
                }
                Some(k) if k.is_finite() && k > 0.0 => Some(k),
                _ => return Err(ApiError::field("keepalive", "must be a positive number")),
            },
            Some(_) => return Err(ApiError::field("keepalive", "must be a number (seconds)")),
        };
        let group = match obj.get("group") {
            None | Some(Value::Null) => None,
            Some(Value::String(g)) => Some(check_group(g, limits)?.to_owned()),
            Some(_) => return Err(ApiError::field("group", "must be a string")),
        };
        let tags = tags(obj.get("tags"), limits)?;
        Ok(Registration {
            ip,
            port,
            keepalive,
            group,
            tags,
        })
    }

    /// Applies the defaults and the client's address.
    pub fn into_probe(self, client: IpAddr, group: &str, keepalive: f64) -> Probe {
        let ip = self.ip.unwrap_or(client).to_canonical();
        let group: Arc<str> = self.group.as_deref().unwrap_or(group).into();
        let keepalive = self.keepalive.unwrap_or(keepalive);
        Probe::new(
            (ip, self.port).into(),
            group,
            keepalive,
            Tags::new(self.tags),
        )
    }
}

/// Parses an IP, accepting `[v6]` and IPv4-mapped IPv6 (stored as IPv4, so
/// one agent has one id whichever way it reached us).
pub fn parse_ip(s: &str) -> Result<IpAddr, ApiError> {
    let bare = s
        .trim()
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s.trim());
    bare.parse::<IpAddr>()
        .map(|ip| ip.to_canonical())
        .map_err(|_| ApiError::field("ip", format!("'{}' is not an IP address", clip(s))))
}

/// Checks a group name: non-empty, within the limit, and addressable as a
/// path segment of `/api/v1/config/<group>`.
pub fn check_group<'a>(g: &'a str, limits: &Limits) -> Result<&'a str, ApiError> {
    if g.is_empty() {
        return Err(ApiError::field("group", "must not be empty"));
    }
    if g.len() > limits.max_group_len {
        return Err(ApiError::field(
            "group",
            format!(
                "longer than {} bytes (limit max_group_len)",
                limits.max_group_len
            ),
        ));
    }
    if g.chars().any(|c| c.is_control() || c == '/') {
        return Err(ApiError::field(
            "group",
            "must not contain '/' or control characters",
        ));
    }
    Ok(g)
}

fn port(obj: &Map<String, Value>) -> Result<u16, ApiError> {
    const RANGE: &str = "must be an integer between 1 and 65535";
    match obj.get("port") {
        None | Some(Value::Null) => Err(ApiError::field("port", "is required")),
        Some(Value::Number(n)) => {
            if let Some(p) = n.as_u64() {
                return u16::try_from(p)
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| ApiError::field("port", RANGE));
            }
            // JSON allows `8100.0`; the original's schema ("number") did too.
            match n.as_f64() {
                Some(f) if f.fract() == 0.0 && (1.0..=65535.0).contains(&f) => Ok(f as u16),
                _ => Err(ApiError::field("port", RANGE)),
            }
        }
        Some(_) => Err(ApiError::field("port", "must be a number")),
    }
}

fn tags(v: Option<&Value>, limits: &Limits) -> Result<TagPairs, ApiError> {
    let obj = match v {
        None | Some(Value::Null) => return Err(ApiError::field("tags", "is required")),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(ApiError::field("tags", "must be an object")),
    };
    if obj.len() > limits.max_tags {
        return Err(ApiError::field(
            "tags",
            format!(
                "{} tags, more than {} (limit max_tags)",
                obj.len(),
                limits.max_tags
            ),
        ));
    }
    for required in REQUIRED_TAGS {
        match obj.get(required) {
            Some(Value::String(s)) if !s.is_empty() => {}
            Some(Value::String(_)) => {
                return Err(ApiError::field(
                    format!("tags.{required}"),
                    "must not be empty",
                ));
            }
            Some(_) => {
                return Err(ApiError::field(
                    format!("tags.{required}"),
                    "must be a string",
                ));
            }
            None => return Err(ApiError::field(format!("tags.{required}"), "is required")),
        }
    }
    let mut out = Vec::with_capacity(obj.len());
    for (k, v) in obj {
        if k.is_empty() || k.len() > limits.max_tag_key_len {
            return Err(ApiError::field(
                format!("tags.{}", clip(k)),
                format!(
                    "tag keys must be 1 to {} bytes long (limit max_tag_key_len)",
                    limits.max_tag_key_len
                ),
            ));
        }
        // InfluxDB tags are strings: numbers and booleans become their text.
        let value = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                return Err(ApiError::field(
                    format!("tags.{k}"),
                    "must be a string, number or boolean",
                ));
            }
        };
        if value.len() > limits.max_tag_value_len {
            return Err(ApiError::field(
                format!("tags.{k}"),
                format!(
                    "value longer than {} bytes (limit max_tag_value_len)",
                    limits.max_tag_value_len
                ),
            ));
        }
        out.push((k.as_str().into(), value.into_boxed_str()));
    }
    Ok(out)
}

/// Shortens user input quoted in an error message.
fn clip(s: &str) -> String {
    if s.len() <= 64 {
        return s.to_owned();
    }
    let mut end = 64;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Turns a JSON syntax error into a 400 naming the field whose value failed
/// to parse (the nearest `"key":` before the error position).
fn syntax_error(body: &[u8], err: &serde_json::Error) -> ApiError {
    let offset = byte_offset(body, err.line(), err.column()).min(body.len());
    let text = String::from_utf8_lossy(&body[..offset]);
    let rest = String::from_utf8_lossy(&body[offset.saturating_sub(1)..]);
    let bad_number = ["NaN", "Infinity", "-Infinity", "+Infinity"]
        .iter()
        .any(|w| rest.trim_start().starts_with(w) || text.trim_end().ends_with(w));
    match (err.classify(), last_key(&text)) {
        (serde_json::error::Category::Eof, _) if body.iter().all(u8::is_ascii_whitespace) => {
            ApiError::field("body", "is empty; expected a JSON object")
        }
        (_, Some(key)) if bad_number => {
            ApiError::field(key, "NaN and Infinity are not numbers in JSON")
        }
        (_, Some(key)) => ApiError::field(key, format!("invalid JSON: {err}")),
        (_, None) => ApiError::field("body", format!("invalid JSON: {err}")),
    }
}

fn byte_offset(body: &[u8], line: usize, column: usize) -> usize {
    let mut offset = 0;
    for (i, l) in body.split(|b| *b == b'\n').enumerate() {
        if i + 1 == line {
            return offset + column;
        }
        offset += l.len() + 1;
    }
    body.len()
}

/// The last object key in `text` (a `"..."` followed by `:`).
fn last_key(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut i = bytes.len();
    while i > 0 {
        i -= 1;
        if bytes[i] != b':' {
            continue;
        }
        let before = text[..i].trim_end();
        if let Some(stripped) = before.strip_suffix('"') {
            let start = stripped.rfind('"')?;
            return Some(stripped[start + 1..].to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Registration, ApiError> {
        Registration::parse(body.as_bytes(), &Limits::default())
    }

    const TAGS: &str = r#""tags":{"version":"1","probe_shortname":"a","probe_name":"A"}"#;

    #[test]
    fn accepts_minimal_and_fills_defaults() {
        let r = parse(&format!(r#"{{"port":8100,{TAGS}}}"#)).unwrap();
        assert_eq!(r.port, 8100);
        let p = r.into_probe("::ffff:10.0.0.1".parse().unwrap(), "default", 86400.0);
        assert_eq!(p.id.to_string(), "10.0.0.1:8100");
        assert_eq!(&*p.group, "default");
        assert_eq!(p.keepalive, 86400.0);
    }

    #[test]
    fn names_the_field_of_every_violation() {
        let cases = [
            (format!(r#"{{{TAGS}}}"#), "port"),
            (format!(r#"{{"port":"8100",{TAGS}}}"#), "port"),
            (format!(r#"{{"port":-1,{TAGS}}}"#), "port"),
            (format!(r#"{{"port":81.5,{TAGS}}}"#), "port"),
            (format!(r#"{{"port":70000,{TAGS}}}"#), "port"),
            (format!(r#"{{"port":NaN,{TAGS}}}"#), "port"),
            (
                format!(r#"{{"port":8100,"keepalive":Infinity,{TAGS}}}"#),
                "keepalive",
            ),
            (
                format!(r#"{{"port":8100,"keepalive":0,{TAGS}}}"#),
                "keepalive",
            ),
            (
                format!(r#"{{"port":8100,"keepalive":-5,{TAGS}}}"#),
                "keepalive",
            ),
            (
                format!(r#"{{"port":8100,"ip":"host.example",{TAGS}}}"#),
                "ip",
            ),
            (format!(r#"{{"port":8100,"group":5,{TAGS}}}"#), "group"),
            (format!(r#"{{"port":8100,"group":"a/b",{TAGS}}}"#), "group"),
            (r#"{"port":8100}"#.to_owned(), "tags"),
            (r#"{"port":8100,"tags":[]}"#.to_owned(), "tags"),
            (
                r#"{"port":8100,"tags":{"version":"1","probe_name":"A"}}"#.to_owned(),
                "tags.probe_shortname",
            ),
            (
                r#"{"port":8100,"tags":{"version":1,"probe_shortname":"a","probe_name":"A"}}"#
                    .to_owned(),
                "tags.version",
            ),
            ("[1]".to_owned(), "body"),
            ("".to_owned(), "body"),
        ];
        for (body, field) in cases {
            let err = parse(&body).expect_err(&body);
            assert_eq!(err.status, 400, "{body}");
            assert_eq!(err.field.as_deref(), Some(field), "{body}: {}", err.message);
            assert!(err.message.starts_with(field), "{}", err.message);
        }
    }

    #[test]
    fn enforces_limits() {
        let limits = Limits {
            max_tags: 4,
            max_tag_key_len: 16,
            max_tag_value_len: 8,
            max_group_len: 4,
            ..Limits::default()
        };
        let base = r#""version":"1","probe_shortname":"a","probe_name":"A""#;
        let cases = [
            (
                format!(r#"{{"port":1,"tags":{{{base},"x":"1","y":"2"}}}}"#),
                "tags",
            ),
            (
                format!(r#"{{"port":1,"tags":{{{base},"xxxxxxxxxxxxxxxxx":"1"}}}}"#),
                "tags.xxxxxxxxxxxxxxxxx",
            ),
            (
                format!(r#"{{"port":1,"tags":{{{base},"x":"123456789"}}}}"#),
                "tags.x",
            ),
            (
                format!(r#"{{"port":1,"group":"abcde","tags":{{{base}}}}}"#),
                "group",
            ),
            (
                format!(r#"{{"port":1,"keepalive":1e300,"tags":{{{base}}}}}"#),
                "keepalive",
            ),
            (
                format!(r#"{{"port":1,"keepalive":604801,"tags":{{{base}}}}}"#),
                "keepalive",
            ),
        ];
        for (body, field) in cases {
            let err = Registration::parse(body.as_bytes(), &limits).expect_err(&body);
            assert_eq!(err.field.as_deref(), Some(field), "{}", err.message);
            assert!(err.message.contains("limit max_"), "{}", err.message);
        }
    }

    #[test]
    fn accepts_ipv6_and_bracketed_ips() {
        let r = parse(&format!(r#"{{"port":8100,"ip":"[2001:db8::1]",{TAGS}}}"#)).unwrap();
        assert_eq!(r.ip, Some("2001:db8::1".parse().unwrap()));
        let p = r.into_probe("127.0.0.1".parse().unwrap(), "g", 1.0);
        assert_eq!(p.id.to_string(), "[2001:db8::1]:8100");
    }
}
