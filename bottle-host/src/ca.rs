//! The per-bottle certificate authority egress uses to intercept allowed TLS
//! hosts.
//!
//! The host-side Prepare calls [`generate_ca`] once per bottle; it writes
//! `ca.pem` (the certificate the agent trusts) and `ca.key` (mode 600; only
//! the bundle mounts it). The proxy loads both with [`load`] and signs a leaf
//! certificate per intercepted host (in `bottle-sidecars`).

use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// File name of the CA certificate inside the CA dir.
pub const CERT_FILE: &str = "ca.pem";
/// File name of the CA private key inside the CA dir (mode 600).
pub const KEY_FILE: &str = "ca.key";

/// Write a fresh CA into `dir` (`ca.pem` + `ca.key`, key mode 600), creating
/// the dir if needed. Writes are atomic (temp file + rename).
///
/// If `dir` already holds a CA that loads, it is kept: `resume` must not
/// change the CA the agent already trusts.
pub fn generate_ca(dir: &Path) -> io::Result<()> {
    if load(dir).is_ok() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let key = KeyPair::generate().map_err(io::Error::other)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    let tag: u32 = rand::random();
    dn.push(DnType::CommonName, format!("bottle egress CA {tag:08x}"));
    dn.push(DnType::OrganizationName, "bottle");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let year = current_year();
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
    let cert = params.self_signed(&key).map_err(io::Error::other)?;
    write_atomic(&dir.join(KEY_FILE), key.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(&dir.join(CERT_FILE), cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

/// A loaded CA: the issuer the proxy signs leaf certificates with, and its
/// certificate in PEM.
pub struct LoadedCa {
    /// Signs leaf certificates.
    pub issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM), as the agent trusts it.
    pub cert_pem: String,
}

impl std::fmt::Debug for LoadedCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedCa").finish_non_exhaustive()
    }
}

/// Load `ca.pem` + `ca.key` from `dir`.
pub fn load(dir: &Path) -> io::Result<LoadedCa> {
    let cert_pem = std::fs::read_to_string(dir.join(CERT_FILE))?;
    let key_pem = std::fs::read_to_string(dir.join(KEY_FILE))?;
    let key = KeyPair::from_pem(&key_pem)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{KEY_FILE}: {e}")))?;
    let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{CERT_FILE}: {e}")))?;
    Ok(LoadedCa { issuer, cert_pem })
}

/// The current UTC year (validity windows of the CA and its leaves).
pub fn current_year() -> i32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    1970 + (secs / 31_556_952) as i32
}

fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    // one atomic writer for the sidecars (random temp name, fsync, rename)
    crate::supervise::atomic_write(path, data, Some(mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generates_loadable_ca_with_private_key_mode_600_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        generate_ca(&ca_dir).unwrap();
        let mode = std::fs::metadata(ca_dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let pem = std::fs::read_to_string(ca_dir.join(CERT_FILE)).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let loaded = load(&ca_dir).unwrap();
        assert_eq!(loaded.cert_pem, pem);
        // Second call keeps the existing CA.
        generate_ca(&ca_dir).unwrap();
        assert_eq!(
            std::fs::read_to_string(ca_dir.join(CERT_FILE)).unwrap(),
            pem
        );
        // A broken CA is replaced.
        std::fs::write(ca_dir.join(KEY_FILE), "garbage").unwrap();
        assert!(load(&ca_dir).is_err());
        generate_ca(&ca_dir).unwrap();
        assert!(load(&ca_dir).is_ok());
        assert_ne!(
            std::fs::read_to_string(ca_dir.join(CERT_FILE)).unwrap(),
            pem
        );
    }
}
