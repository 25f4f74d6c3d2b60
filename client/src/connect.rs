//! Channels to a broker. Connections are lazy and re-established by tonic
//! after a broker restart, so clients ride through restarts with retries.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};

/// A channel to the broker at `addr` (e.g. `http://127.0.0.1:50051`).
pub fn channel(addr: &str) -> Result<Channel> {
    let addr = if addr.contains("://") { addr.to_owned() } else { format!("http://{addr}") };
    let endpoint =
        Endpoint::from_shared(addr.clone()).map_err(|source| Error::Address { addr: addr.clone(), source })?;
    Ok(endpoint
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true)
        .connect_lazy())
}
