//! One lazily connected gRPC channel per node address, shared by every call
//! to that node: HTTP/2 multiplexes them, and a tonic `Channel` reconnects on
//! its own after a failure, so an entry never needs replacing, except when
//! the TLS settings change (see [`Channels::set_tls`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tonic::transport::Channel;
use tonic::transport::ClientTlsConfig;

use crate::address::endpoint;
use crate::ClientError;

/// How channels connect.
#[derive(Debug, Clone)]
pub struct ChannelOptions {
    /// Longest wait for a TCP connection.
    pub connect_timeout: Duration,
    /// Source address of outgoing connections (`None`: the system's choice).
    pub local_ip: Option<IpAddr>,
    /// HTTP/2 keep-alive pings: interval and how long to wait for the answer
    /// (`None`: no pings). A node uses them to notice a peer that vanished
    /// without closing its connection.
    pub keep_alive: Option<(Duration, Duration)>,
    /// Mutual TLS on every connection (`None`: plain-text HTTP/2).
    pub tls: Option<ClientTlsConfig>,
}

impl Default for ChannelOptions {
    fn default() -> ChannelOptions {
        ChannelOptions {
            connect_timeout: Duration::from_secs(3),
            local_ip: None,
            keep_alive: None,
            tls: None,
        }
    }
}

/// The channel cache; clones share it.
#[derive(Clone, Default)]
pub struct Channels {
    inner: Arc<Mutex<Cache>>,
}

#[derive(Default)]
struct Cache {
    channels: HashMap<String, Channel>,
    options: ChannelOptions,
}

impl Channels {
    /// An empty cache whose channels connect with `options`.
    pub fn new(options: ChannelOptions) -> Channels {
        Channels {
            inner: Arc::new(Mutex::new(Cache {
                channels: HashMap::new(),
                options,
            })),
        }
    }

    /// The channel to `address`, created on first use (no I/O happens here).
    pub fn get(&self, address: &str) -> Result<Channel, ClientError> {
        let mut cache = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = cache.channels.get(address) {
            return Ok(channel.clone());
        }
        let options = &cache.options;
        let mut endpoint = endpoint(address, options.tls.is_some())?
            .connect_timeout(options.connect_timeout)
            .tcp_nodelay(true)
            .local_address(options.local_ip);
        if let Some((interval, timeout)) = options.keep_alive {
            endpoint = endpoint
                .http2_keep_alive_interval(interval)
                .keep_alive_timeout(timeout);
        }
        if let Some(tls) = &options.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| ClientError::Tls(format!("{address}: {e}")))?;
        }
        let channel = endpoint.connect_lazy();
        cache.channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }

    /// Connects with `tls` from now on: every cached channel is forgotten,
    /// so the next call to each address opens a connection with the new
    /// settings, while calls under way finish on the channels they hold.
    pub fn set_tls(&self, tls: Option<ClientTlsConfig>) {
        let mut cache = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        cache.options.tls = tls;
        cache.channels.clear();
    }
}
