//! TLS for the admin API, with rustls (ring), as for registries and
//! downloads.
//!
//! The admin API carries a bearer token and new code for the app, so on
//! any address but loopback it speaks TLS only (see
//! [`AdminOptions::check`](super::AdminOptions::check)). The certificate
//! chain and key are read from PEM files once, at startup, and a file that
//! cannot be read or parsed stops `up` with the file's name. The handshake
//! runs on each accepted socket inside `server::serve`, bounded like a
//! request header, so a client that connects and says nothing holds a
//! connection no longer than on a plain listener.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use tokio_rustls::TlsAcceptor;

/// `--admin-tls-cert` and `--admin-tls-key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, PEM: the server's certificate first.
    pub cert: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why the admin API's TLS could not be set up; `up` does not start.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("--admin-tls-cert {}: cannot read a PEM certificate: {reason}", path.display())]
    Cert { path: PathBuf, reason: String },
    #[error("--admin-tls-key {}: cannot read a PEM private key: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error(
        "--admin-tls-cert {} and --admin-tls-key {} do not make a TLS server: {reason}",
        files.cert.display(),
        files.key.display()
    )]
    Config { files: TlsFiles, reason: String },
}

impl TlsFiles {
    /// Reads the files and makes the acceptor the admin listener runs on
    /// every connection. It speaks HTTP/1.1 only, as the listener does.
    pub fn acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        let certs = read_certs(&self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| TlsError::Key {
            path: self.key.clone(),
            reason: pem_reason(e),
        })?;
        let config_error = |e: rustls::Error| TlsError::Config {
            files: self.clone(),
            reason: e.to_string(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(config_error)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// Every certificate in the PEM file at `path`; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let error = |reason: String| TlsError::Cert {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(pem_reason(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(pem_reason(e)))?;
    if certs.is_empty() {
        return Err(error("it holds no `BEGIN CERTIFICATE` section".to_owned()));
    }
    Ok(certs)
}

fn pem_reason(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            "it holds no PEM section of that kind".to_owned()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(files: &TlsFiles) -> String {
        match files.acceptor() {
            Ok(_) => panic!("{files:?} made a TLS server"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn unreadable_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let files = TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        };
        let missing = refusal(&files);
        assert!(
            missing.starts_with("--admin-tls-cert ") && missing.contains("cert.pem"),
            "{missing}"
        );

        std::fs::write(&cert, "not a certificate\n").unwrap();
        let empty = refusal(&files);
        assert!(
            empty.contains("cert.pem") && empty.contains("no `BEGIN CERTIFICATE`"),
            "{empty}"
        );

        // A certificate section (its content is not checked until the
        // key is read), and no key.
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(&key, "no key here\n").unwrap();
        let no_key = refusal(&files);
        assert!(
            no_key.starts_with("--admin-tls-key ") && no_key.contains("key.pem"),
            "{no_key}"
        );
    }
}
