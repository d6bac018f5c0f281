//! InfluxDB 1.x output: line protocol encoding and a writer that posts
//! batches to `/write?db=<name>&precision=s`, retrying transient failures
//! until a deadline (the end of the scrape interval).

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use reqwest::{StatusCode, Url};

use crate::{
    error::Error,
    settings::{InfluxAuth, InfluxSettings},
};

/// A field value: agents' numbers are floats (docs/scraper.md); the server's own counters
/// are integers, as the original wrote them (a type change would make
/// InfluxDB refuse the writes into an existing database).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldValue {
    Float(f64),
    Int(i64),
}

/// One point.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub measurement: String,
    pub tags: Vec<(String, String)>,
    pub fields: Vec<(String, FieldValue)>,
    /// Unix seconds.
    pub time: u64,
}

fn escape(out: &mut String, s: &str, special: &[char]) {
    for c in s.chars() {
        match c {
            // Line protocol has no escape for line breaks: write them as the
            // two characters `\n`, which InfluxDB stores verbatim.
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if special.contains(&c) => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
}

impl Point {
    /// Appends the point as one line; returns false (appending nothing) for
    /// a point without any finite field, which InfluxDB would refuse.
    pub fn write_line(&self, out: &mut String) -> bool {
        let fields: Vec<_> = self
            .fields
            .iter()
            .filter(|(k, v)| !k.is_empty() && !matches!(v, FieldValue::Float(f) if !f.is_finite()))
            .collect();
        if fields.is_empty() || self.measurement.is_empty() {
            return false;
        }
        escape(out, &self.measurement, &[',', ' ']);
        let mut tags: Vec<_> = self
            .tags
            .iter()
            .filter(|(k, v)| !k.is_empty() && !v.is_empty())
            .collect();
        // Sorted tags are what InfluxDB stores; sending them so saves it work.
        tags.sort();
        for (k, v) in tags {
            out.push(',');
            escape(out, k, &[',', '=', ' ']);
            out.push('=');
            escape(out, v, &[',', '=', ' ']);
        }
        for (i, (k, v)) in fields.into_iter().enumerate() {
            out.push(if i == 0 { ' ' } else { ',' });
            escape(out, k, &[',', '=', ' ']);
            out.push('=');
            let _ = match v {
                FieldValue::Float(f) => write!(out, "{f:?}"),
                FieldValue::Int(n) => write!(out, "{n}i"),
            };
        }
        let _ = writeln!(out, " {}", self.time);
        true
    }
}

/// Encodes points as line protocol, skipping points InfluxDB would refuse.
pub fn encode(points: &[Point]) -> (String, usize) {
    let mut out = String::with_capacity(points.len() * 160);
    let written = points.iter().filter(|p| p.write_line(&mut out)).count();
    (out, written)
}

/// How a write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Stored, after this many failed attempts.
    Written { retries: u32 },
    /// InfluxDB refused the data itself (4xx): retrying cannot help.
    Refused,
    /// Every attempt failed until the deadline.
    GaveUp { attempts: u32 },
}

/// Posts line protocol to one database.
#[derive(Debug, Clone)]
pub struct InfluxClient {
    client: reqwest::Client,
    /// User and password go with each request; a token is a default header.
    auth: InfluxAuth,
    write_url: Url,
    base: String,
    db: String,
}

impl InfluxClient {
    pub fn new(settings: &InfluxSettings) -> Result<Self, Error> {
        let base = settings.base_url();
        let mut write_url = Url::parse(&format!("{base}/write"))
            .map_err(|e| Error::http(format!("InfluxDB URL {base}"), e))?;
        write_url
            .query_pairs_mut()
            .append_pair("db", &settings.name)
            .append_pair("precision", "s");
        let mut headers = reqwest::header::HeaderMap::new();
        if let InfluxAuth::Token(token) = &settings.auth {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Token {token}"))
                .map_err(|_| Error::http("--influxdb-token", "not a valid header value"))?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .default_headers(headers);
        let client =
            crate::tls::client_tls(builder, settings.ca_cert.as_deref(), "--influxdb-ca-cert")?
                .build()
                .map_err(|e| Error::http("HTTP client", e))?;
        Ok(InfluxClient {
            client,
            auth: settings.auth.clone(),
            write_url,
            base,
            db: settings.name.clone(),
        })
    }

    /// `CREATE DATABASE` (a no-op when it exists), as the original did.
    pub async fn create_database(&self) -> Result<(), Error> {
        let mut url = Url::parse(&format!("{}/query", self.base))
            .map_err(|e| Error::http("InfluxDB URL", e))?;
        let q = format!(
            "CREATE DATABASE \"{}\"",
            self.db.replace('\\', "\\\\").replace('"', "\\\"")
        );
        url.query_pairs_mut().append_pair("q", &q);
        let resp = self
            .authorized(self.client.post(url))
            .send()
            .await
            .map_err(|e| Error::http("InfluxDB", e))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            return Err(Error::http(
                "InfluxDB CREATE DATABASE",
                refusal(status, &body),
            ));
        }
        Ok(())
    }

    async fn write_once(&self, body: &str) -> Result<(), (bool, String)> {
        let resp = self
            .authorized(self.client.post(self.write_url.clone()))
            .body(body.to_owned())
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => {
                let status = r.status();
                // Refused credentials are retried like an outage: the
                // operator may fix them on the InfluxDB side, and the
                // points are kept until the round's deadline.
                let auth = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
                let retry =
                    auth || status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
                let text = r.text().await.unwrap_or_default();
                Err((retry, refusal(status, &text)))
            }
            Err(e) => Err((true, root_cause(&e))),
        }
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            InfluxAuth::Basic { user, pass } => request.basic_auth(user, Some(pass)),
            InfluxAuth::None | InfluxAuth::Token(_) => request,
        }
    }

    /// Writes `body`, retrying with backoff (50 ms doubling, at most 2 s)
    /// while attempts fail transiently and `deadline` is not reached.
    pub async fn write(&self, body: &str, deadline: Instant) -> WriteOutcome {
        let mut attempts = 0u32;
        let mut backoff = Duration::from_millis(50);
        loop {
            attempts += 1;
            match self.write_once(body).await {
                Ok(()) => {
                    return WriteOutcome::Written {
                        retries: attempts - 1,
                    };
                }
                Err((false, why)) => {
                    tracing::warn!(%why, "InfluxDB refused a write");
                    return WriteOutcome::Refused;
                }
                Err((true, why)) => {
                    tracing::debug!(%why, attempts, "InfluxDB write failed");
                    if Instant::now() + backoff >= deadline {
                        tracing::warn!(%why, attempts, "InfluxDB write given up");
                        return WriteOutcome::GaveUp { attempts };
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// An error answer for the log: status, body, and for 401/403 what to check.
fn refusal(status: StatusCode, body: &str) -> String {
    let hint = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            " (InfluxDB refused the credentials: check --influxdb-user/--influxdb-pass or --influxdb-token)"
        }
        _ => "",
    };
    format!("{status}: {}{hint}", body.trim())
}

/// The innermost error ("invalid peer certificate: UnknownIssuer",
/// "connection refused"): reqwest's top level says only "error sending
/// request".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_and_escapes_line_protocol() {
        let p = Point {
            measurement: "raw_stats".into(),
            tags: vec![
                ("src_ip".into(), "::".into()),
                ("dst_name".into(), "a b,c=d\ne".into()),
                ("empty".into(), String::new()),
            ],
            fields: vec![
                ("loss".into(), FieldValue::Float(0.0)),
                ("rtt".into(), FieldValue::Float(0.299736)),
                ("bad".into(), FieldValue::Float(f64::NAN)),
                ("n".into(), FieldValue::Int(3)),
            ],
            time: 1_700_000_000,
        };
        let (text, n) = encode(&[p]);
        assert_eq!(n, 1);
        assert_eq!(
            text,
            "raw_stats,dst_name=a\\ b\\,c\\=d\\ne,src_ip=:: loss=0.0,rtt=0.299736,n=3i 1700000000\n"
        );
    }

    #[test]
    fn skips_points_without_fields() {
        let p = Point {
            measurement: "m".into(),
            tags: vec![],
            fields: vec![],
            time: 1,
        };
        assert_eq!(encode(&[p]), (String::new(), 0));
    }
}
