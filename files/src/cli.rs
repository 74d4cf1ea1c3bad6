//! The TLS flags every raftkv command-line client shares (etcdctl's names),
//! so raft-admin and hammer spell and check them the same way.

use std::path::PathBuf;

use tonic::transport::ClientTlsConfig;

use raftkv_client::ClientError;
use raftkv_client::TlsFiles;

/// `--cacert`, `--cert`, `--key`, `--tls-server-name`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// CA certificate (PEM) that signed the nodes' certificates. With --cert
    /// and --key, every connection uses mutual TLS.
    #[arg(
        id = "tls_cacert",
        long = "cacert",
        global = true,
        env = "RAFTKV_CACERT",
        value_name = "FILE"
    )]
    pub cacert: Option<PathBuf>,

    /// This client's certificate (PEM), signed by the cluster's CA. Its
    /// common name decides what it may do: the admin name (default `admin`)
    /// for raftkv.Admin, any other for raftkv.KV only.
    #[arg(
        id = "tls_cert",
        long = "cert",
        global = true,
        env = "RAFTKV_CERT",
        value_name = "FILE"
    )]
    pub cert: Option<PathBuf>,

    /// The private key (PEM) of --cert.
    #[arg(
        id = "tls_key",
        long = "key",
        global = true,
        env = "RAFTKV_KEY",
        value_name = "FILE"
    )]
    pub key: Option<PathBuf>,

    /// Name to verify on the nodes' certificates when the addresses dialled
    /// are not among their subject alternative names.
    #[arg(
        id = "tls_server_name",
        long = "tls-server-name",
        global = true,
        env = "RAFTKV_TLS_SERVER_NAME",
        value_name = "NAME"
    )]
    pub tls_server_name: Option<String>,
}

impl TlsArgs {
    /// The files named, if TLS is asked for: all of --cacert, --cert and
    /// --key, or none of them (then --tls-server-name must be absent too).
    pub fn files(&self) -> Result<Option<TlsFiles>, ClientError> {
        match (&self.cacert, &self.cert, &self.key) {
            (Some(ca), Some(cert), Some(key)) => Ok(Some(TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
                server_name: self.tls_server_name.clone(),
            })),
            (None, None, None) if self.tls_server_name.is_none() => Ok(None),
            _ => Err(ClientError::Tls(
                "mutual TLS needs all of --cacert, --cert and --key".into(),
            )),
        }
    }

    /// The loaded TLS settings, if TLS is asked for.
    pub fn load(&self) -> Result<Option<ClientTlsConfig>, ClientError> {
        self.files()?.map(|files| files.load()).transpose()
    }
}
