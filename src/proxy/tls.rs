//! `wss://` upstreams.
//!
//! The proxy speaks TLS to the upstream with rustls and bridges the
//! decrypted stream to one end of a loopback TCP pair; the handshake and the
//! relay then use the other end like any plain upstream socket, so every
//! toxic and abrupt-end rule applies unchanged. A reset on either side is
//! passed on as a reset.
//!
//! Certificates are verified against the Mozilla roots (webpki-roots) plus
//! every PEM certificate in the file named by `SSL_CERT_FILE`, if set (the
//! usual way to trust a private CA in a test stack).

use std::io;
use std::sync::{Arc, OnceLock};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

fn connector() -> &'static TlsConnector {
    static CONNECTOR: OnceLock<TlsConnector> = OnceLock::new();
    CONNECTOR.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Ok(path) = std::env::var("SSL_CERT_FILE") {
            match CertificateDer::pem_file_iter(&path) {
                Ok(certs) => {
                    for cert in certs.flatten() {
                        if let Err(err) = roots.add(cert) {
                            tracing::warn!(file = %path, error = %err, "SSL_CERT_FILE: certificate skipped");
                        }
                    }
                }
                Err(err) => tracing::warn!(file = %path, error = %err, "SSL_CERT_FILE unreadable"),
            }
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth())
            .unwrap_or_else(|err| {
                // Only reachable if ring lacks every default protocol version.
                panic!("TLS client configuration: {err}")
            });
        TlsConnector::from(Arc::new(config))
    })
}

/// Connects to `authority` (`host:port`) over TLS and returns a plain
/// loopback socket that carries the decrypted stream.
pub async fn connect(authority: &str) -> io::Result<TcpStream> {
    let host = authority
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
        .unwrap_or(authority);
    let server_name = ServerName::try_from(host.to_string()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("TLS server name {host:?}: {e}"),
        )
    })?;
    let tcp = TcpStream::connect(authority).await?;
    let _ = tcp.set_nodelay(true);
    let tls = connector().connect(server_name, tcp).await?;

    bridge(tls, |t| t.get_ref().0).await
}

/// Hands a TLS stream's decrypted bytes to a loopback TCP pair: returns the
/// near end, while a task copies between the TLS stream and the far end.
/// `raw` finds the TLS stream's own socket (to reset it when the copy fails).
pub(super) async fn bridge<S>(tls: S, raw: fn(&S) -> &TcpStream) -> io::Result<TcpStream>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (local, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let local = local?;
    let (inner, _) = accepted?;
    let _ = local.set_nodelay(true);
    let _ = inner.set_nodelay(true);
    tokio::spawn(pump(tls, inner, raw));
    Ok(local)
}

/// Copies both ways until both sides end; an error (a reset) on either
/// side resets the other.
async fn pump<S>(mut tls: S, mut inner: TcpStream, raw: fn(&S) -> &TcpStream)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if tokio::io::copy_bidirectional(&mut tls, &mut inner)
        .await
        .is_err()
    {
        let _ = inner.set_zero_linger();
        let _ = raw(&tls).set_zero_linger();
    }
}
