//! TLS for the connections a client opens: the CA that signed the cluster's
//! certificates, this client's own certificate and key (every raftkv node with
//! TLS on asks for one), and optionally the name the nodes' certificates must
//! carry when the addresses dialled are not in them.

use std::path::Path;
use std::path::PathBuf;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::PrivateKeyDer;
use tonic::transport::Certificate;
use tonic::transport::ClientTlsConfig;
use tonic::transport::Identity;

use crate::ClientError;

/// Where a client's TLS material is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificate(s), PEM, that the nodes' certificates must chain to.
    pub ca: PathBuf,
    /// This client's certificate (PEM; the chain may follow it).
    pub cert: PathBuf,
    /// The key of that certificate (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The name to verify on the node's certificate instead of the host
    /// dialled (`None`: the host of each address, an IP or a DNS name).
    pub server_name: Option<String>,
}

impl TlsFiles {
    /// Reads and checks the files; the error names the file and what is
    /// wrong with it, so a typo is reported here rather than as a failed
    /// handshake on every call.
    pub fn load(&self) -> Result<ClientTlsConfig, ClientError> {
        let ca = read_certificates(&self.ca)?;
        let cert = read_certificates(&self.cert)?;
        let key = read_key(&self.key)?;
        let mut config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .identity(Identity::from_pem(cert, key));
        if let Some(name) = &self.server_name {
            config = config.domain_name(name.clone());
        }
        Ok(config)
    }
}

fn bad(path: &Path, what: impl std::fmt::Display) -> ClientError {
    ClientError::Tls(format!("{}: {what}", path.display()))
}

/// The PEM text of `path`, checked to hold at least one certificate.
pub fn read_certificates(path: &Path) -> Result<Vec<u8>, ClientError> {
    let pem = std::fs::read(path).map_err(|e| bad(path, e))?;
    let mut count = 0;
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        certificate.map_err(|e| bad(path, format!("not a PEM certificate: {e}")))?;
        count += 1;
    }
    if count == 0 {
        return Err(bad(path, "holds no PEM certificate"));
    }
    Ok(pem)
}

/// The PEM text of `path`, checked to hold a private key.
pub fn read_key(path: &Path) -> Result<Vec<u8>, ClientError> {
    let pem = std::fs::read(path).map_err(|e| bad(path, e))?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| bad(path, format!("holds no PEM private key: {e}")))?;
    Ok(pem)
}
