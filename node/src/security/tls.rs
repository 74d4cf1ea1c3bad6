//! The node's TLS material: its certificate and key (served to callers and
//! presented to peers) and the CA every caller's certificate must chain to.
//!
//! [`Tls::reload`] reads the files again (on SIGHUP): connections accepted
//! from then on use the new material, established ones carry on with what
//! they were accepted with, and broken files change nothing.

use std::sync::Arc;
use std::sync::RwLock;

use raftkv_client::TlsFiles;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::PrivateKeyDer;
use tokio_rustls::rustls;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::RootCertStore;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tonic::transport::ClientTlsConfig;

use crate::security::certificate::common_name;

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file is missing, unreadable or holds no certificate or key.
    #[error(transparent)]
    Files(#[from] raftkv_client::ClientError),
    /// rustls refused the material (the key does not match the certificate,
    /// a CA certificate is invalid, …).
    #[error("{what}: {cause}")]
    Refused { what: String, cause: rustls::Error },
}

/// What was loaded, for the log.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The common name of the node's own certificate.
    pub common_name: Option<String>,
    /// How many CA certificates callers may chain to.
    pub authorities: usize,
}

/// The node's TLS material, swappable while the node runs.
pub struct Tls {
    files: TlsFiles,
    /// What a connection accepted now is handshaken with.
    server: RwLock<Arc<ServerConfig>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

/// The parts read from the files: a server configuration, the client
/// settings for dialling peers, and what they hold.
type Material = (Arc<ServerConfig>, ClientTlsConfig, Loaded);

fn load(files: &TlsFiles) -> Result<Material, TlsError> {
    let refused = |what: String| move |cause| TlsError::Refused { what, cause };
    let ca_pem = raftkv_client::read_certificates(&files.ca)?;
    let cert_pem = raftkv_client::read_certificates(&files.cert)?;
    let key_pem = raftkv_client::read_key(&files.key)?;
    // The readers above checked that these parse.
    let ca: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&ca_pem)
        .filter_map(Result::ok)
        .collect();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| raftkv_client::ClientError::Tls(format!("{}: {e}", files.key.display())))?;
    let mut roots = RootCertStore::empty();
    for certificate in &ca {
        roots
            .add(certificate.clone())
            .map_err(refused(format!("{}: CA certificate", files.ca.display())))?;
    }
    let loaded = Loaded {
        common_name: chain.first().and_then(|c| common_name(c)),
        authorities: ca.len(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Refused {
            what: format!("{}: CA certificates", files.ca.display()),
            cause: rustls::Error::General(e.to_string()),
        })?;
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(refused("TLS protocol versions".into()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(refused(format!(
            "{} with {}",
            files.cert.display(),
            files.key.display()
        )))?;
    // gRPC is HTTP/2 only.
    server.alpn_protocols = vec![b"h2".to_vec()];
    let client = files.load()?;
    Ok((Arc::new(server), client, loaded))
}

impl Tls {
    /// Loads `files`; also returns the client settings a node dials its
    /// peers with (the same certificate, verified against the same CA).
    pub fn load(files: TlsFiles) -> Result<(Tls, ClientTlsConfig, Loaded), TlsError> {
        let (server, client, loaded) = load(&files)?;
        let tls = Tls {
            files,
            server: RwLock::new(server),
        };
        Ok((tls, client, loaded))
    }

    /// Reads the files again and, if they are sound, serves new
    /// connections with them; returns the new client settings. On an
    /// error nothing changes.
    pub fn reload(&self) -> Result<(ClientTlsConfig, Loaded), TlsError> {
        let (server, client, loaded) = load(&self.files)?;
        *self.server.write().unwrap_or_else(|e| e.into_inner()) = server;
        Ok((client, loaded))
    }

    /// The acceptor for a connection accepted now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.server
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}
