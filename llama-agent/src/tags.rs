//! User tags (`-t/--tags`, `LLAMA_TAGS`): parsing of the two accepted forms.
//!
//! The original llama-client took tags as `[location: Las Vegas, src_name: Office]`:
//! brackets, `key: value` pairs separated by commas, values free text with
//! spaces. Existing deployments pass exactly that string in their environment,
//! so it must keep working; a JSON object is accepted as well because it can
//! express values the bracket form cannot (commas).

use std::collections::BTreeMap;

/// Tag keys the agent sets itself in every registration (docs/server-api.md). A user
/// tag with one of these names would silently fight the agent's own value, so
/// it is refused with a pointer to the flag that sets it.
pub const RESERVED: [(&str, &str); 3] = [
    ("version", "it is always the agent's version"),
    ("probe_name", "set --probe-name / PROBE_NAME instead"),
    (
        "probe_shortname",
        "set --probe-shortname / PROBE_SHORTNAME instead",
    ),
];

/// Why a tags string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A comma-separated item has no `:` between key and value.
    #[error("tag {item:?} has no ':' (expected `key: value`, e.g. `[location: Las Vegas]`)")]
    MissingColon { item: String },
    /// A pair with nothing before the `:`.
    #[error("tag {item:?} has an empty key")]
    EmptyKey { item: String },
    /// The same key given twice (which one was meant is unknowable).
    #[error("tag key {key:?} is given more than once")]
    Duplicate { key: String },
    /// An opening `[` without its `]` (or the reverse): almost always a quoting
    /// mistake in a shell or compose file, so better refused than half-parsed.
    #[error("unbalanced brackets in tags {input:?}")]
    Brackets { input: String },
    /// Text that starts like JSON but is not a valid JSON object.
    #[error("tags look like JSON but do not parse: {0}")]
    Json(String),
    /// A JSON value that has no sensible string form (null, array, object).
    #[error("JSON tag {key:?} must be a string, number or boolean, not {kind}")]
    JsonValue { key: String, kind: &'static str },
    /// A key the agent owns (see [`RESERVED`]).
    #[error("tag {key:?} is reserved: {why}")]
    Reserved { key: String, why: &'static str },
}

/// Parsed user tags, ordered by key (deterministic registration payloads).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tags(pub BTreeMap<String, String>);

impl Tags {
    /// True when no tags were given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterate over `(key, value)` in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl std::str::FromStr for Tags {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

/// Parse either form. Blank input (or `[]`, `{}`) means no tags.
pub fn parse(input: &str) -> Result<Tags, Error> {
    let trimmed = input.trim();
    let tags = if trimmed.starts_with('{') {
        parse_json(trimmed)?
    } else {
        parse_brackets(trimmed)?
    };
    for (key, why) in RESERVED {
        if tags.0.contains_key(key) {
            return Err(Error::Reserved {
                key: key.to_owned(),
                why,
            });
        }
    }
    Ok(tags)
}

/// The original form: `[k: v, k2: v two]`, brackets optional.
fn parse_brackets(input: &str) -> Result<Tags, Error> {
    let inner = match (input.strip_prefix('['), input.ends_with(']')) {
        (Some(rest), true) => &rest[..rest.len() - 1],
        (None, false) => input,
        _ => {
            return Err(Error::Brackets {
                input: input.to_owned(),
            });
        }
    };
    let mut map = BTreeMap::new();
    for item in inner.split(',') {
        let item = item.trim();
        // Tolerate a trailing comma or doubled commas: they carry no meaning
        // and are easy to produce when editing a list by hand.
        if item.is_empty() {
            continue;
        }
        // Split at the FIRST colon only, so values may contain colons
        // (`url: http://x`, `time: 10:30`).
        let (key, value) = item.split_once(':').ok_or_else(|| Error::MissingColon {
            item: item.to_owned(),
        })?;
        let key = unquote(key.trim());
        if key.is_empty() {
            return Err(Error::EmptyKey {
                item: item.to_owned(),
            });
        }
        let value = unquote(value.trim());
        if map.insert(key.to_owned(), value.to_owned()).is_some() {
            return Err(Error::Duplicate {
                key: key.to_owned(),
            });
        }
    }
    Ok(Tags(map))
}

/// Strip one pair of matching surrounding quotes: people quote values with
/// spaces out of habit (`location: "Las Vegas"`) and mean the bare text.
fn unquote(s: &str) -> &str {
    for q in ['"', '\''] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return &s[1..s.len() - 1];
        }
    }
    s
}

/// A JSON object; scalar values are converted to their string form because
/// the server's tags are strings (they end up as InfluxDB tags).
fn parse_json(input: &str) -> Result<Tags, Error> {
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(input).map_err(|e| Error::Json(e.to_string()))?;
    let mut map = BTreeMap::new();
    for (key, value) in object {
        if key.trim().is_empty() {
            return Err(Error::EmptyKey {
                item: input.to_owned(),
            });
        }
        let text = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Null => return Err(Error::JsonValue { key, kind: "null" }),
            serde_json::Value::Array(_) => {
                return Err(Error::JsonValue {
                    key,
                    kind: "an array",
                });
            }
            serde_json::Value::Object(_) => {
                return Err(Error::JsonValue {
                    key,
                    kind: "an object",
                });
            }
        };
        map.insert(key, text);
    }
    Ok(Tags(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(t: &Tags) -> Vec<(&str, &str)> {
        t.iter().collect()
    }

    #[test]
    fn original_form_with_spaces() {
        let t = parse("[location: Las Vegas, src_name: Office]").unwrap();
        assert_eq!(
            pairs(&t),
            vec![("location", "Las Vegas"), ("src_name", "Office")]
        );
    }

    #[test]
    fn original_form_from_the_readme_with_inner_spaces() {
        let t = parse("[ source: some_github_source, hostname: somehostname ]").unwrap();
        assert_eq!(
            pairs(&t),
            vec![
                ("hostname", "somehostname"),
                ("source", "some_github_source")
            ]
        );
    }

    #[test]
    fn brackets_are_optional_and_whitespace_is_trimmed() {
        let t = parse("  location :   Las  Vegas  ,rack:r1 ").unwrap();
        assert_eq!(pairs(&t), vec![("location", "Las  Vegas"), ("rack", "r1")]);
    }

    #[test]
    fn values_keep_colons_after_the_first() {
        let t = parse("[url: http://example.com:8080/x, at: 10:30]").unwrap();
        assert_eq!(
            pairs(&t),
            vec![("at", "10:30"), ("url", "http://example.com:8080/x")]
        );
    }

    #[test]
    fn quotes_around_values_are_dropped() {
        let t = parse(r#"[location: "Las Vegas", 'room': 'B 2']"#).unwrap();
        assert_eq!(pairs(&t), vec![("location", "Las Vegas"), ("room", "B 2")]);
    }

    #[test]
    fn empty_inputs_mean_no_tags() {
        for s in ["", "   ", "[]", "[ ]", "{}", "[ , ]"] {
            assert!(parse(s).unwrap().is_empty(), "{s:?}");
        }
    }

    #[test]
    fn empty_value_is_allowed() {
        let t = parse("[note:]").unwrap();
        assert_eq!(pairs(&t), vec![("note", "")]);
    }

    #[test]
    fn pair_without_colon_is_refused_naming_it() {
        let e = parse("[location: Las Vegas, Office]").unwrap_err();
        assert_eq!(
            e,
            Error::MissingColon {
                item: "Office".into()
            }
        );
        assert!(e.to_string().contains("\"Office\" has no ':'"), "{e}");
    }

    #[test]
    fn empty_key_duplicate_and_brackets_are_refused() {
        assert!(matches!(parse("[: x]"), Err(Error::EmptyKey { .. })));
        assert_eq!(
            parse("[a: 1, a: 2]"),
            Err(Error::Duplicate { key: "a".into() })
        );
        assert!(matches!(parse("[a: 1"), Err(Error::Brackets { .. })));
        assert!(matches!(parse("a: 1]"), Err(Error::Brackets { .. })));
    }

    #[test]
    fn json_object_with_scalars() {
        let t = parse(r#"{"location": "Las Vegas", "rack": 12, "ipv6": true, "w": 1.5}"#).unwrap();
        assert_eq!(
            pairs(&t),
            vec![
                ("ipv6", "true"),
                ("location", "Las Vegas"),
                ("rack", "12"),
                ("w", "1.5")
            ]
        );
    }

    #[test]
    fn json_value_may_contain_commas() {
        let t = parse(r#"{"site": "Las Vegas, NV"}"#).unwrap();
        assert_eq!(pairs(&t), vec![("site", "Las Vegas, NV")]);
    }

    #[test]
    fn json_non_scalar_and_broken_json_are_refused() {
        assert_eq!(
            parse(r#"{"a": null}"#),
            Err(Error::JsonValue {
                key: "a".into(),
                kind: "null"
            })
        );
        assert!(matches!(
            parse(r#"{"a": [1]}"#),
            Err(Error::JsonValue {
                kind: "an array",
                ..
            })
        ));
        assert!(matches!(
            parse(r#"{"a": {}}"#),
            Err(Error::JsonValue {
                kind: "an object",
                ..
            })
        ));
        assert!(matches!(parse(r#"{"a": "x""#), Err(Error::Json(_))));
        assert!(matches!(parse(r#"{"": "x"}"#), Err(Error::EmptyKey { .. })));
    }

    #[test]
    fn reserved_keys_are_refused_in_both_forms() {
        assert!(matches!(parse("[version: 1]"), Err(Error::Reserved { .. })));
        let e = parse(r#"{"probe_name": "x"}"#).unwrap_err();
        assert!(e.to_string().contains("PROBE_NAME"), "{e}");
    }
}
