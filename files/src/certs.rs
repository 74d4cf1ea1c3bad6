//! Certificates for a small cluster: one CA, then one certificate per node,
//! operator and client, signed by it (ECDSA P-256). Used by `raft-admin
//! certs` and by the tests; a cluster may just as well use certificates made
//! by any other tool.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::path::PathBuf;

use rcgen::BasicConstraints;
use rcgen::CertificateParams;
use rcgen::DnType;
use rcgen::ExtendedKeyUsagePurpose;
use rcgen::IsCa;
use rcgen::Issuer;
use rcgen::KeyPair;
use rcgen::KeyUsagePurpose;
use rcgen::SanType;
use time::Duration;
use time::OffsetDateTime;

/// Why a certificate could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused the parameters or could not parse the CA.
    #[error("{0}")]
    Certificate(#[from] rcgen::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file to be written exists already; nothing is overwritten.
    #[error("{0} exists already: remove it or write elsewhere")]
    Exists(PathBuf),
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// What to put in a leaf certificate.
#[derive(Debug, Clone, Default)]
pub struct Leaf {
    /// The subject's common name: it decides the role (`node`, `admin`, or
    /// any other name for a key-value client).
    pub common_name: String,
    /// IP addresses the holder is reached at (subject alternative names).
    pub ips: Vec<IpAddr>,
    /// DNS names the holder is reached at (subject alternative names).
    pub dns: Vec<String>,
    /// Days of validity from now.
    pub days: u32,
}

/// A CA able to sign leaf certificates.
pub struct Authority {
    /// The CA's own certificate and key.
    pub issued: Issued,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

/// Validity from an hour ago (clocks of small devices drift) to `days` from now.
fn validity(params: &mut CertificateParams, days: u32) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(i64::from(days.max(1)));
}

impl Authority {
    /// A new self-signed CA named `common_name`, valid for `days`.
    pub fn new(common_name: &str, days: u32) -> Result<Authority, CertError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, days);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let issued = Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        Ok(Authority {
            issued,
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA whose certificate and key are in these PEM files.
    pub fn load(cert: &Path, key: &Path) -> Result<Authority, CertError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| CertError::Io {
                path: path.to_path_buf(),
                source,
            })
        };
        let issued = Issued {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        };
        let key = KeyPair::from_pem(&issued.key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&issued.cert_pem, key)?;
        Ok(Authority { issued, issuer })
    }

    /// A new key and a certificate for it, signed by this CA. It is good
    /// for both ends of a connection (serverAuth and clientAuth): a node
    /// serves with it and presents it when it dials its peers.
    pub fn issue(&self, leaf: &Leaf) -> Result<Issued, CertError> {
        let mut params = CertificateParams::new(leaf.dns.clone())?;
        params
            .subject_alt_names
            .extend(leaf.ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params
            .distinguished_name
            .push(DnType::CommonName, leaf.common_name.as_str());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, leaf.days);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Writes `issued` as `<dir>/<name>.crt` (mode 0644) and `<dir>/<name>.key`
/// (mode 0600), creating `dir` if needed; refuses to overwrite either file.
/// Returns the two paths.
pub fn write_pair(
    dir: &Path,
    name: &str,
    issued: &Issued,
) -> Result<(PathBuf, PathBuf), CertError> {
    std::fs::create_dir_all(dir).map_err(|source| CertError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    for path in [&cert, &key] {
        if path.exists() {
            return Err(CertError::Exists(path.clone()));
        }
    }
    write_new(&key, &issued.key_pem, 0o600)?;
    write_new(&cert, &issued.cert_pem, 0o644)?;
    Ok((cert, key))
}

fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), CertError> {
    let io = |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => CertError::Exists(path.to_path_buf()),
            _ => io(e),
        })?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_written_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::new("raftkv test CA", 1).unwrap();
        let (cert, key) = write_pair(dir.path(), "ca", &ca.issued).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&cert), 0o644);
        assert!(matches!(
            write_pair(dir.path(), "ca", &ca.issued),
            Err(CertError::Exists(_))
        ));
        // The written CA signs again once loaded back.
        let loaded = Authority::load(&cert, &key).unwrap();
        let leaf = Leaf {
            common_name: "node".into(),
            ips: vec!["127.0.0.1".parse().unwrap()],
            days: 1,
            ..Leaf::default()
        };
        let issued = loaded.issue(&leaf).unwrap();
        assert!(issued.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(issued.key_pem.contains("PRIVATE KEY"));
    }
}
