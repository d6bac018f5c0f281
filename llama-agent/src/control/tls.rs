//! TLS of the agent's requests to an `https://` server: rustls with the
//! `ring` provider, verifying the server's certificate against Mozilla's
//! roots (bundled, so an image without `/etc/ssl` works), or, with
//! `--ca-cert`, against that file's certificates only (a private CA).
//! Builds without the `tls` feature speak plain HTTP only.

use std::path::Path;

use super::error::Error;

/// Sets up `builder` for `https://` servers. `ca_cert` is a PEM file of the
/// CA certificates to trust instead of the bundled roots.
#[cfg(feature = "tls")]
pub fn configure(
    builder: reqwest::ClientBuilder,
    ca_cert: Option<&Path>,
) -> Result<reqwest::ClientBuilder, Error> {
    use std::sync::Arc;

    use rustls::pki_types::{CertificateDer, pem::PemObject};

    let mut roots = rustls::RootCertStore::empty();
    match ca_cert {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let bad =
                |reason: String| Error::Client(format!("--ca-cert {}: {reason}", path.display()));
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("no PEM certificate in the file".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| bad(e.to_string()))?;
            }
        }
    }
    // ring, not aws-lc-rs: it cross-compiles with zig for every release
    // target (docs/tls.md); rustls deprecates it only for lacking
    // post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Client(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(builder.tls_backend_preconfigured(config))
}

/// Without TLS support, only a CA file is refused: `https://` URLs are
/// already refused by the settings.
#[cfg(not(feature = "tls"))]
pub fn configure(
    builder: reqwest::ClientBuilder,
    ca_cert: Option<&Path>,
) -> Result<reqwest::ClientBuilder, Error> {
    match ca_cert {
        Some(_) => Err(Error::Client(
            "--ca-cert: this build has no TLS support (the `tls` feature)".into(),
        )),
        None => Ok(builder),
    }
}

/// The TLS failure in an error chain, if that is what failed: a certificate
/// the agent does not trust is a setup problem, not an unreachable server,
/// and the message says what to check.
pub fn tls_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    #[cfg(feature = "tls")]
    {
        let mut cause = Some(e);
        while let Some(c) = cause {
            if let Some(tls) = rustls_error(c) {
                return Some(tls.to_string());
            }
            cause = c.source();
        }
    }
    let _ = e;
    None
}

/// `e` as a rustls error, also when wrapped in (possibly nested) I/O
/// errors, whose `source()` skips the error they wrap.
#[cfg(feature = "tls")]
fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    let mut io = e.downcast_ref::<std::io::Error>()?;
    loop {
        let inner = io.get_ref()?;
        if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        io = inner.downcast_ref::<std::io::Error>()?;
    }
}
