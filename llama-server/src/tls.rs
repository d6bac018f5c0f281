//! TLS (rustls with the `ring` provider): the HTTPS listener's certificate,
//! reloaded on SIGHUP, and the trust roots of the server's own HTTPS
//! clients. Builds without the `tls` feature refuse `--tls-cert`.

use std::path::{Path, PathBuf};

use crate::error::Error;

/// The certificate chain and key files the listener serves (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[cfg(feature = "tls")]
pub use enabled::*;

#[cfg(feature = "tls")]
mod enabled {
    use std::sync::{Arc, RwLock};

    use rustls::{
        crypto::CryptoProvider,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
        server::{ClientHello, ResolvesServerCert},
        sign::CertifiedKey,
    };

    use super::*;

    /// ring, not aws-lc-rs: it cross-compiles with zig for every release
    /// target; rustls deprecates it only for lacking post-quantum key
    /// exchange.
    #[allow(deprecated)]
    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn tls_error(what: &str, path: &Path, reason: impl std::fmt::Display) -> Error {
        Error::Tls(format!("{what} {}: {reason}", path.display()))
    }

    /// Reads and checks a certificate chain and its key.
    fn load(files: &TlsFiles) -> Result<CertifiedKey, Error> {
        let certs = CertificateDer::pem_file_iter(&files.cert)
            .map_err(|e| tls_error("--tls-cert", &files.cert, e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls_error("--tls-cert", &files.cert, e))?;
        if certs.is_empty() {
            return Err(tls_error("--tls-cert", &files.cert, "no PEM certificate"));
        }
        let key = PrivateKeyDer::from_pem_file(&files.key)
            .map_err(|e| tls_error("--tls-key", &files.key, e))?;
        let key = provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| tls_error("--tls-key", &files.key, e))?;
        let certified = CertifiedKey::new(certs, key);
        certified.keys_match().map_err(|e| {
            tls_error(
                "--tls-key",
                &files.key,
                format!("does not match the certificate: {e}"),
            )
        })?;
        Ok(certified)
    }

    /// Answers every handshake with the current certificate.
    #[derive(Debug)]
    struct Current(RwLock<Arc<CertifiedKey>>);

    impl ResolvesServerCert for Current {
        fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
        }
    }

    /// The listener's TLS: a rustls config whose certificate [`reload`]
    /// swaps. Handshakes after a reload get the new certificate; open
    /// connections keep theirs.
    ///
    /// [`reload`]: ServerTls::reload
    #[derive(Clone)]
    pub struct ServerTls {
        files: TlsFiles,
        current: Arc<Current>,
        acceptor: tokio_rustls::TlsAcceptor,
    }

    impl std::fmt::Debug for ServerTls {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("ServerTls")
                .field("files", &self.files)
                .finish()
        }
    }

    impl ServerTls {
        /// Loads `files`; a bad file is an error at start-up.
        pub fn load(files: &TlsFiles) -> Result<Self, Error> {
            let current = Arc::new(Current(RwLock::new(Arc::new(load(files)?))));
            let mut config = rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| Error::Tls(e.to_string()))?
                .with_no_client_auth()
                .with_cert_resolver(current.clone());
            // The listener speaks HTTP/1.1 only.
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(ServerTls {
                files: files.clone(),
                current,
                acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            })
        }

        /// Reads the files again; on any error the old certificate stays.
        pub fn reload(&self) -> Result<(), Error> {
            let new = load(&self.files)?;
            *self.current.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
            Ok(())
        }

        pub fn acceptor(&self) -> &tokio_rustls::TlsAcceptor {
            &self.acceptor
        }
    }

    /// Sets up `builder` for `https://` URLs: Mozilla's roots (bundled), or
    /// only the PEM certificates in `ca_cert` (a private CA; `flag` names
    /// it in errors).
    pub fn client_tls(
        builder: reqwest::ClientBuilder,
        ca_cert: Option<&Path>,
        flag: &str,
    ) -> Result<reqwest::ClientBuilder, Error> {
        let mut roots = rustls::RootCertStore::empty();
        match ca_cert {
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| tls_error(flag, path, e))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| tls_error(flag, path, e))?;
                if certs.is_empty() {
                    return Err(tls_error(flag, path, "no PEM certificate"));
                }
                for cert in certs {
                    roots.add(cert).map_err(|e| tls_error(flag, path, e))?;
                }
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(builder.tls_backend_preconfigured(config))
    }
}

/// Without TLS support: refuses certificate files.
#[cfg(not(feature = "tls"))]
#[derive(Debug, Clone)]
pub struct ServerTls;

#[cfg(not(feature = "tls"))]
impl ServerTls {
    pub fn load(_files: &TlsFiles) -> Result<Self, Error> {
        Err(Error::Tls(
            "--tls-cert: this build has no TLS support (the `tls` feature)".into(),
        ))
    }

    pub fn reload(&self) -> Result<(), Error> {
        Ok(())
    }
}

#[cfg(not(feature = "tls"))]
pub fn client_tls(
    builder: reqwest::ClientBuilder,
    ca_cert: Option<&Path>,
    flag: &str,
) -> Result<reqwest::ClientBuilder, Error> {
    match ca_cert {
        Some(_) => Err(Error::Tls(format!(
            "{flag}: this build has no TLS support (the `tls` feature)"
        ))),
        None => Ok(builder),
    }
}
