//! Leaf certificates for the hosts egress intercepts, signed by the
//! per-bottle CA. The CA itself (generation, files, loading) is in
//! `bottle_host::ca`, re-exported here.

pub use bottle_host::ca::{current_year, generate_ca, load, LoadedCa, CERT_FILE, KEY_FILE};

use std::io;

use rcgen::{CertificateParams, DistinguishedName, DnType, Issuer, KeyPair, KeyUsagePurpose};

/// Signs and caches one TLS server config per intercepted host.
///
/// Leaf certificates carry exactly the CONNECT host (a DNS name, or an IP
/// address SAN for IP literals), are signed by the per-bottle CA and share
/// one per-process leaf key (the CA key itself never serves TLS).
pub struct LeafSigner {
    issuer: Issuer<'static, KeyPair>,
    leaf_key: KeyPair,
    provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
    cache:
        std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<rustls::ServerConfig>>>,
}

impl std::fmt::Debug for LeafSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafSigner").finish_non_exhaustive()
    }
}

/// Cached leaf configs kept at most (the cache is cleared when full).
const LEAF_CACHE: usize = 1024;

impl LeafSigner {
    /// A signer for `ca` using `provider` for the TLS server side.
    pub fn new(ca: LoadedCa, provider: rustls::crypto::CryptoProvider) -> io::Result<Self> {
        Ok(Self {
            issuer: ca.issuer,
            leaf_key: KeyPair::generate().map_err(io::Error::other)?,
            provider: std::sync::Arc::new(provider),
            cache: Default::default(),
        })
    }

    /// The server config (ALPN h2 + http/1.1) for `host` (normalised, no
    /// brackets).
    pub fn server_config(&self, host: &str) -> io::Result<std::sync::Arc<rustls::ServerConfig>> {
        if let Some(cfg) = self.lock().get(host) {
            return Ok(cfg.clone());
        }
        let mut params = CertificateParams::new(vec![host.to_owned()]).map_err(io::Error::other)?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, host);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(rcgen::SerialNumber::from(rand::random::<u64>()));
        let year = current_year();
        params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
        params.not_after = rcgen::date_time_ymd(year + 1, 12, 31);
        let cert = params
            .signed_by(&self.leaf_key, &self.issuer)
            .map_err(io::Error::other)?;
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(
            rustls::pki_types::PrivatePkcs8KeyDer::from(self.leaf_key.serialize_der()),
        );
        let mut cfg = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .map_err(io::Error::other)?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let cfg = std::sync::Arc::new(cfg);
        let mut cache = self.lock();
        if cache.len() >= LEAF_CACHE {
            cache.clear();
        }
        cache.insert(host.to_owned(), cfg.clone());
        Ok(cfg)
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::HashMap<String, std::sync::Arc<rustls::ServerConfig>>,
    > {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}
