//! HTTPS: the certificate chain and private key, read from PEM files, with
//! ALPN offering `h2` then `http/1.1`.
//!
//! [`Tls`] holds the configuration new connections get. [`Tls::reload`]
//! reads the files again and swaps it in; connections already open keep the
//! one they were made with, and a file that does not load leaves the current
//! certificate in place.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// The ALPN id of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// The ALPN id of HTTP/1.1.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls-cert {}: {message}", path.display())]
    Cert { path: PathBuf, message: String },
    #[error("tls-key {}: {message}", path.display())]
    Key { path: PathBuf, message: String },
    #[error("tls-cert {} with tls-key {}: {message}", cert.display(), key.display())]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
}

/// Reads and checks the certificate chain and key, and builds the server
/// configuration from them: TLS 1.2 and 1.3 with the `ring` provider, ALPN
/// `h2` and `http/1.1`, no client certificates.
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let cert_error = |message: String| TlsError::Cert {
        path: cert.to_owned(),
        message,
    };
    let key_error = |message: String| TlsError::Key {
        path: key.to_owned(),
        message,
    };
    let cert_pem = std::fs::read(cert).map_err(|e| cert_error(e.to_string()))?;
    let key_pem = std::fs::read(key).map_err(|e| key_error(e.to_string()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(cert_error(
            "no certificate in it (expected a PEM `CERTIFICATE` block)".to_owned(),
        ));
    }
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        key_error(format!(
            "no private key in it (expected a PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or \
             `EC PRIVATE KEY` block): {e}"
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| {
            builder
                .with_no_client_auth()
                .with_single_cert(chain, private_key)
        })
        .map_err(|e| TlsError::Pair {
            cert: cert.to_owned(),
            key: key.to_owned(),
            message: e.to_string(),
        })?;
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    Ok(config)
}

/// The TLS side of a listener: where the files are and the configuration
/// that new connections get.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the certificate chain and key.
    pub fn load(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        let config = server_config(cert, key)?;
        Ok(Tls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Arc::new(config)),
        })
    }

    /// Reads both files again and, if they load, makes them the
    /// configuration of every connection accepted from now on. Connections
    /// already open are not touched. On error nothing changes.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = Arc::new(server_config(&self.cert, &self.key)?);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
        Ok(())
    }

    /// An acceptor with the current configuration, for one connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        TlsAcceptor::from(config)
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert
    }

    pub fn key_path(&self) -> &Path {
        &self.key
    }
}
