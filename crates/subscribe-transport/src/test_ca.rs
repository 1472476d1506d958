//! A certificate authority made for a test, so TLS is tested as it runs against WeChat: the
//! client checks the server's certificate against a root it was told to trust.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// How many authorities this process made: each one's name is its own.
static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A fresh authority and a server certificate it signed for `localhost` and `127.0.0.1`
/// (ECDSA P-256 keys, rcgen's default dates). Give the transport
/// [`ca_pem`](Self::ca_pem) (`add_root_certificates_pem`) and the server
/// [`server_config`](Self::server_config) (with `tokio_rustls::TlsAcceptor`, say).
///
/// ```
/// let ca = subscribe_transport::test_util::TestAuthority::new();
/// // The client side: `ReqwestTransport::builder().add_root_certificates_pem(ca.ca_pem())`,
/// // or the same on `HyperTransport::builder()`.
/// assert!(ca.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
/// // The server side: `tokio_rustls::TlsAcceptor::from(ca.server_config())`.
/// assert_eq!(ca.server_config().alpn_protocols, [b"http/1.1".to_vec()]);
/// ```
pub struct TestAuthority {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TestAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestAuthority").finish_non_exhaustive()
    }
}

impl Default for TestAuthority {
    fn default() -> Self {
        Self::new()
    }
}

impl TestAuthority {
    /// Makes the authority and the server's certificate.
    ///
    /// # Panics
    /// If the key or a certificate cannot be made (not expected).
    #[must_use]
    pub fn new() -> Self {
        Self::for_names(&["localhost", "127.0.0.1"])
    }

    /// An authority whose server certificate names `names` (DNS names or IP addresses) instead:
    /// a server reached under another name must be refused.
    ///
    /// # Panics
    /// If the key or a certificate cannot be made (a name rcgen refuses, say).
    #[must_use]
    #[allow(clippy::unwrap_used)] // a test helper: its failure is the test's
    pub fn for_names(names: &[&str]) -> Self {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        // A name of its own: two authorities of one name (one in a system store, one added)
        // would be taken for each other when a chain is built (OpenSSL does).
        let serial = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ca_params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("subscribe-transport test CA {}-{serial}", std::process::id()),
        );
        ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap()).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names.clone()).unwrap();
        if let Some(first) = names.first() {
            params.distinguished_name.push(rcgen::DnType::CommonName, first.as_str());
        }
        let leaf = params.signed_by(&key, &ca).unwrap();
        let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone(), ca.der().clone()];
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .unwrap();
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self { ca_pem: ca.pem(), server: Arc::new(server) }
    }

    /// The authority's certificate, PEM: what a client is told to trust.
    #[must_use]
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A rustls server configuration with the signed certificate (ALPN `http/1.1`).
    #[must_use]
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.server)
    }
}
