//! TLS at start and on SIGHUP: the node's certificate for the calls it
//! accepts, its client settings for the calls it makes to peers.

use std::sync::Arc;

use raftkv_client::Channels;
use tonic::transport::ClientTlsConfig;

use crate::config::NodeConfig;
use crate::security::Tls;
use crate::security::TlsError;

/// The node's TLS (for the calls it accepts) and its peers' (for the calls
/// it makes), when TLS is on.
pub(super) fn load_tls(
    config: &NodeConfig,
    bound: std::net::SocketAddr,
) -> Result<(Option<Arc<Tls>>, Option<ClientTlsConfig>), TlsError> {
    let Some(files) = config.tls_files() else {
        if !bound.ip().is_loopback() {
            tracing::warn!(
                listen = %bound,
                "serving without TLS on a non-loopback address: anyone who reaches it can \
                 read and write every key and change the cluster (set --tls-cert, --tls-key, --tls-ca)"
            );
        }
        return Ok((None, None));
    };
    let (tls, client, loaded) = Tls::load(files)?;
    tracing::info!(
        common_name = ?loaded.common_name,
        authorities = loaded.authorities,
        "mutual TLS on: every caller needs a certificate from the CA"
    );
    Ok((Some(Arc::new(tls)), Some(client)))
}

/// On every SIGHUP, loads the TLS files again: new connections, accepted
/// and dialled, use them; a failed load is logged and changes nothing.
pub(super) async fn reload_on_hangup(tls: Option<Arc<Tls>>, peers: Channels) {
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => signal,
        Err(e) => {
            tracing::warn!(cause = %e, "cannot listen for SIGHUP: certificates reload only on a restart");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        let Some(tls) = &tls else {
            tracing::info!("SIGHUP: TLS is off, nothing to reload");
            continue;
        };
        match tls.reload() {
            Ok((client, loaded)) => {
                peers.set_tls(Some(client));
                tracing::info!(
                    common_name = ?loaded.common_name,
                    authorities = loaded.authorities,
                    "SIGHUP: reloaded the TLS certificate, key and CA; new connections use them"
                );
            }
            Err(e) => tracing::error!(
                cause = %e,
                "SIGHUP: cannot reload the TLS files; keeping the ones loaded before"
            ),
        }
    }
}
