//! An HTTPS front for the release server: a TLS-terminating proxy on 127.0.0.1 that
//! forwards each connection to a plain HTTP backend (a [`crate::ReleaseServer`]), so every
//! fault of the server also happens over TLS.
//!
//! Owns: a throwaway CA and a certificate for `127.0.0.1` and `localhost` signed by it,
//! made at start (rcgen), and the proxy (tokio-rustls on its own small runtime).
//! Invariants: the CA is new for every front, so a client trusts it only when the test
//! hands it [`TlsFront::ca_pem`]; one TCP connection to the backend per TLS connection,
//! bytes copied both ways until either side closes.
//! Hazards: the backend's absolute URLs (a [`crate::Fault::Redirect`] `Location`) stay
//! plain `http://`: through the front that is a redirect from https to http, which is
//! what the downgrade tests want.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot make the test certificates: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("cannot configure TLS: {0}")]
    Config(#[from] rustls::Error),
    #[error("cannot listen on 127.0.0.1: {0}")]
    Bind(io::Error),
}

/// The HTTPS front. Stops on drop.
pub struct TlsFront {
    addr: SocketAddr,
    backend: SocketAddr,
    ca_pem: String,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for TlsFront {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFront")
            .field("addr", &self.addr)
            .field("backend", &self.backend)
            .finish()
    }
}

impl TlsFront {
    /// Makes a CA and a server certificate, listens on 127.0.0.1 (random port) and
    /// forwards every connection to `backend`.
    pub fn start(backend: SocketAddr) -> Result<TlsFront, TlsError> {
        let (ca_pem, chain, key) = certificates()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tls-front")
            .enable_io()
            .build()
            .map_err(TlsError::Bind)?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(TlsError::Bind)?;
        let addr = listener.local_addr().map_err(TlsError::Bind)?;
        listener.set_nonblocking(true).map_err(TlsError::Bind)?;
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener).map_err(TlsError::Bind)?
        };
        runtime.spawn(serve(listener, acceptor, backend));
        Ok(TlsFront {
            addr,
            backend,
            ca_pem,
            runtime: Some(runtime),
        })
    }

    /// `https://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// `url` of the backend (`http://<backend>/...`) as served through this front.
    pub fn url_of(&self, url: &str) -> String {
        let backend = format!("http://{}", self.backend);
        match url.strip_prefix(&backend) {
            Some(rest) => format!("{}{rest}", self.base_url()),
            None => url.to_string(),
        }
    }

    /// The CA certificate (PEM) that signed the front's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// (CA PEM, server chain, server key): a CA and a certificate for 127.0.0.1/localhost.
type Certs = (String, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn certificates() -> Result<Certs, rcgen::Error> {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "release-fixtures test CA");
    let ca_key = rcgen::KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let mut leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])?;
    leaf.subject_alt_names
        .push(rcgen::SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let leaf_key = rcgen::KeyPair::generate()?;
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    Ok((ca_cert.pem(), vec![leaf_cert.der().clone()], key))
}

async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    backend: SocketAddr,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            // A client that does not trust the CA aborts the handshake: nothing to forward.
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            let Ok(mut up) = tokio::net::TcpStream::connect(backend).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
        });
    }
}
