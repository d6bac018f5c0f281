//! The YAML as written: serde mirrors of the original Go structs
//! (`CollectorConfig`, `LegacyCollectorConfig`), plus format detection.
//!
//! Numbers are read as `i64`/`f64` rather than their final types so that an
//! out-of-range value (a port of 70000, a negative tos) reaches validation and
//! gets an error naming the key, instead of a generic serde overflow message.
//! Missing keys take the Go zero value, as yaml.v2 gave the original.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::{ConfigError, DEFAULT_CONFIG_YAML, Format, LoadOptions};

/// Top-level keys of the full format. A file with any of them is full
/// format; otherwise it is the legacy map of addresses to tags.
const FULL_KEYS: [&str; 7] = [
    "summarization",
    "api",
    "ports",
    "port_groups",
    "rate_limits",
    "tests",
    "targets",
];

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawConfig {
    pub summarization: RawSummarization,
    pub api: RawApi,
    pub ports: BTreeMap<String, RawPort>,
    pub port_groups: BTreeMap<String, Vec<RawPortGroupEntry>>,
    pub rate_limits: BTreeMap<String, RawRateLimit>,
    pub tests: Vec<RawTest>,
    pub targets: BTreeMap<String, Vec<RawTarget>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawSummarization {
    pub interval: i64,
    pub handlers: i64,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawApi {
    pub bind: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawPort {
    pub ip: String,
    pub port: i64,
    pub tos: i64,
    pub timeout: i64,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawPortGroupEntry {
    pub port: String,
    pub count: i64,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRateLimit {
    pub cps: f64,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawTest {
    pub targets: String,
    pub port_group: String,
    pub rate_limit: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawTarget {
    pub ip: String,
    pub port: i64,
    /// Tag values may be any YAML scalar (yaml.v2 read `version: 1` into a
    /// string); they are stringified during resolution.
    pub tags: BTreeMap<String, Value>,
}

fn yaml_err(e: serde_yaml_ng::Error) -> ConfigError {
    ConfigError::Yaml(e.to_string())
}

/// Parses `text`, detecting its format. A legacy file becomes the original
/// default configuration with its targets replaced, exactly as the Go
/// collector's `ToDefaultCollectorConfig` did.
pub fn parse(text: &str, opts: &LoadOptions) -> Result<(Format, RawConfig), ConfigError> {
    let value: Value = serde_yaml_ng::from_str(text).map_err(yaml_err)?;
    let map = match value {
        Value::Null => return Err(ConfigError::Empty),
        Value::Mapping(map) => map,
        other => {
            return Err(ConfigError::Yaml(format!(
                "the top level must be a map, found {}",
                kind(&other)
            )));
        }
    };
    let is_full = map
        .keys()
        .any(|k| k.as_str().is_some_and(|k| FULL_KEYS.contains(&k)));
    if is_full {
        // Deserialise from the text, not the Value, so errors carry the key
        // path and line.
        let raw = serde_yaml_ng::from_str(text).map_err(yaml_err)?;
        return Ok((Format::Full, raw));
    }
    let mut raw: RawConfig = serde_yaml_ng::from_str(DEFAULT_CONFIG_YAML).map_err(yaml_err)?;
    let mut targets = Vec::with_capacity(map.len());
    for (key, tags) in map {
        let key = scalar_string(&key).ok_or_else(|| {
            ConfigError::Yaml(format!(
                "legacy format: key {} is not an address",
                kind(&key)
            ))
        })?;
        let tags = match tags {
            Value::Null => BTreeMap::new(),
            Value::Mapping(tags) => {
                let mut out = BTreeMap::new();
                for (k, v) in tags {
                    let k = scalar_string(&k).ok_or_else(|| ConfigError::BadTag {
                        context: key.clone(),
                        tag: format!("{k:?}"),
                    })?;
                    out.insert(k, v);
                }
                out
            }
            _ => return Err(ConfigError::LegacyNotAMap { key }),
        };
        targets.push(RawTarget {
            ip: key,
            port: i64::from(opts.legacy_port),
            tags,
        });
    }
    raw.targets = BTreeMap::from([("default".to_owned(), targets)]);
    Ok((Format::Legacy, raw))
}

/// The text of a YAML scalar (`None` for sequences and maps).
pub fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        Value::Tagged(t) => scalar_string(&t.value),
        Value::Sequence(_) | Value::Mapping(_) => None,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a map",
        Value::Tagged(_) => "a tagged value",
    }
}
