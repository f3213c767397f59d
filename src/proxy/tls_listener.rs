//! `wss://` on a proxy's listener (docs/reference.md#tls-on-the-listener).
//!
//! `tls: {cert, key}` loads PEM files; `tls: self-signed` makes a
//! certificate at start (rcgen) for `localhost`, `127.0.0.1` and the listen
//! host. An accepted connection does its TLS handshake on the relay worker
//! that will serve it; the decrypted stream is then bridged to a loopback
//! TCP pair (as for `wss://` upstreams, [`super::tls`]), so the handshake,
//! the relay and every toxic see a plain socket.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsSetting;

/// How long a client may take to finish its TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener's TLS: the acceptor and the certificate it presents.
pub struct ListenerTls {
    acceptor: TlsAcceptor,
    /// The certificate chain, PEM (served at `/proxies/{p}/certificate`).
    pub cert_pem: String,
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerTls").finish_non_exhaustive()
    }
}

impl ListenerTls {
    /// Loads the files, or makes a self-signed certificate for `listen`'s
    /// host. The error names the file and what is wrong with it.
    pub fn load(setting: &TlsSetting, listen: &str) -> Result<ListenerTls, String> {
        let (certs, key, cert_pem) = match setting {
            TlsSetting::SelfSigned => self_signed(listen)?,
            TlsSetting::Files { cert, key } => {
                let cert_pem = std::fs::read_to_string(cert)
                    .map_err(|e| format!("tls.cert {cert}: cannot read the file: {e}"))?;
                let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("tls.cert {cert}: not a PEM certificate: {e}"))?;
                if certs.is_empty() {
                    return Err(format!(
                        "tls.cert {cert}: no certificate in the file (expected PEM `-----BEGIN CERTIFICATE-----`)"
                    ));
                }
                let key_pem = std::fs::read(key)
                    .map_err(|e| format!("tls.key {key}: cannot read the file: {e}"))?;
                let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                    format!("tls.key {key}: not a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}")
                })?;
                (certs, key_der, cert_pem)
            }
        };
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| match setting {
                TlsSetting::Files { cert, key } => {
                    format!("tls.key {key}: does not fit the certificate in {cert} ({e})")
                }
                TlsSetting::SelfSigned => format!("tls: self-signed certificate: {e}"),
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ListenerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            cert_pem,
        })
    }

    /// Does the TLS handshake on `tcp` and returns a plain socket carrying
    /// the decrypted stream.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<TcpStream> {
        let tls = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, self.acceptor.accept(tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        super::tls::bridge(tls, |t| t.get_ref().0).await
    }
}

/// A certificate for `localhost`, `127.0.0.1`, `::1` and the listen host.
fn self_signed(
    listen: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, String), String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let host = listen
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
        .unwrap_or(listen);
    let unspecified = host
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified());
    if !host.is_empty() && !unspecified && !names.iter().any(|n| n == host) {
        names.push(host.to_string());
    }
    let certified = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("tls: cannot make a self-signed certificate: {e}"))?;
    let cert_pem = certified.cert.pem();
    let key = PrivateKeyDer::try_from(certified.signing_key.serialize_der())
        .map_err(|e| format!("tls: self-signed key: {e}"))?;
    Ok((vec![certified.cert.der().clone()], key, cert_pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_names_the_listen_host() {
        let tls = ListenerTls::load(&TlsSetting::SelfSigned, "proxy.internal:8443").unwrap();
        assert!(tls.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let (certs, _, _) = self_signed("0.0.0.0:8443").unwrap();
        assert_eq!(certs.len(), 1);
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem").display().to_string();
        let setting = |cert: &str, key: &str| TlsSetting::Files {
            cert: cert.into(),
            key: key.into(),
        };
        let err = ListenerTls::load(&setting(&missing, &missing), "127.0.0.1:0").unwrap_err();
        assert!(
            err.starts_with(&format!("tls.cert {missing}: cannot read")),
            "{err}"
        );

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "hello\n").unwrap();
        let garbage = garbage.display().to_string();
        let err = ListenerTls::load(&setting(&garbage, &missing), "127.0.0.1:0").unwrap_err();
        assert!(
            err.contains(&format!("tls.cert {garbage}: no certificate")),
            "{err}"
        );

        // Two self-signed certificates: the key of one does not fit the other.
        let a = rcgen::generate_simple_self_signed(vec!["a".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b".into()]).unwrap();
        let cert = dir.path().join("a.pem");
        let key = dir.path().join("b.key");
        let key_a = dir.path().join("a.key");
        std::fs::write(&cert, a.cert.pem()).unwrap();
        std::fs::write(&key, b.signing_key.serialize_pem()).unwrap();
        std::fs::write(&key_a, a.signing_key.serialize_pem()).unwrap();
        let (cert, key, key_a) = (
            cert.display().to_string(),
            key.display().to_string(),
            key_a.display().to_string(),
        );
        let err = ListenerTls::load(&setting(&cert, &key), "127.0.0.1:0").unwrap_err();
        assert!(
            err.contains(&format!(
                "tls.key {key}: does not fit the certificate in {cert}"
            )),
            "{err}"
        );
        let err = ListenerTls::load(&setting(&cert, &cert), "127.0.0.1:0").unwrap_err();
        assert!(err.contains("not a PEM private key"), "{err}");
        assert!(ListenerTls::load(&setting(&cert, &key_a), "127.0.0.1:0").is_ok());
    }
}
