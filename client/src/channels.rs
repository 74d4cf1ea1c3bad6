//! One lazily connected gRPC channel per node address, shared by every call
//! to that node: HTTP/2 multiplexes them, and a tonic `Channel` reconnects on
//! its own after a failure, so an entry never needs replacing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tonic::transport::Channel;

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
}

impl Default for ChannelOptions {
    fn default() -> ChannelOptions {
        ChannelOptions {
            connect_timeout: Duration::from_secs(3),
            local_ip: None,
            keep_alive: None,
        }
    }
}

/// The channel cache; clones share it.
#[derive(Clone, Default)]
pub struct Channels {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    options: ChannelOptions,
}

impl Channels {
    /// An empty cache whose channels connect with `options`.
    pub fn new(options: ChannelOptions) -> Channels {
        Channels {
            channels: Arc::default(),
            options,
        }
    }

    /// The channel to `address`, created on first use (no I/O happens here).
    pub fn get(&self, address: &str) -> Result<Channel, ClientError> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let mut endpoint = endpoint(address)?
            .connect_timeout(self.options.connect_timeout)
            .tcp_nodelay(true)
            .local_address(self.options.local_ip);
        if let Some((interval, timeout)) = self.options.keep_alive {
            endpoint = endpoint
                .http2_keep_alive_interval(interval)
                .keep_alive_timeout(timeout);
        }
        let channel = endpoint.connect_lazy();
        channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }
}
