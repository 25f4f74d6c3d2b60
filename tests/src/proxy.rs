//! `FaultProxy`: a TCP proxy on a loopback port in front of one broker's
//! cluster listener, for one direction of one broker-to-broker link (broker i
//! dials broker j through proxy i→j). Tests switch its fault at any time:
//! - `Pass`: bytes flow; with `delay`, each chunk waits that long first;
//! - `Blackhole`: bytes are read and thrown away, both ways, and nothing is
//!   answered, as when a network loses packets; connections stay open, so
//!   peers learn only from their timeouts. Healing closes the connections
//!   that lost bytes (their HTTP/2 framing is broken), so peers reconnect;
//! - `Refuse`: existing connections are closed and new ones closed at once,
//!   as when a host is down.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What the proxy does to traffic now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward, each chunk after `delay`.
    Pass {
        /// Added to every chunk in both directions.
        delay: Duration,
    },
    /// Swallow everything, answer nothing.
    Blackhole,
    /// Close every connection.
    Refuse,
}

impl Fault {
    /// Forward without delay.
    pub const HEALTHY: Fault = Fault::Pass { delay: Duration::ZERO };
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    /// `127.0.0.1:port` to dial instead of the target.
    pub addr: String,
    fault: watch::Sender<Fault>,
    /// Bumped when connections must be closed (after a black hole, on refuse).
    epoch: watch::Sender<u64>,
    stop: CancellationToken,
    last: Mutex<Fault>,
}

impl FaultProxy {
    /// A healthy proxy on a free loopback port forwarding to `target`.
    pub async fn start(target: String) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let (fault, _) = watch::channel(Fault::HEALTHY);
        let (epoch, _) = watch::channel(0u64);
        let stop = CancellationToken::new();
        tokio::spawn(accept(listener, Arc::new(target), fault.subscribe(), epoch.subscribe(), stop.clone()));
        Ok(FaultProxy { addr, fault, epoch, stop, last: Mutex::new(Fault::HEALTHY) })
    }

    /// Switches the fault. Leaving a black hole or entering a refusal closes
    /// the connections open now.
    pub fn set(&self, fault: Fault) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let close = *last == Fault::Blackhole || fault == Fault::Refuse;
        *last = fault;
        self.fault.send_replace(fault);
        if close && fault != Fault::Blackhole {
            self.epoch.send_modify(|e| *e += 1);
        }
    }

    /// The fault now.
    pub fn fault(&self) -> Fault {
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept(
    listener: TcpListener,
    target: Arc<String>,
    fault: watch::Receiver<Fault>,
    epoch: watch::Receiver<u64>,
    stop: CancellationToken,
) {
    loop {
        let inbound = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
        };
        if *fault.borrow() == Fault::Refuse {
            drop(inbound);
            continue;
        }
        let (target, fault, mut epoch, stop) = (target.clone(), fault.clone(), epoch.clone(), stop.clone());
        tokio::spawn(async move {
            epoch.borrow_and_update();
            let now = *fault.borrow();
            if now == Fault::Blackhole {
                // A black-holed dial reaches nothing: hold the client until healed or stopped.
                let mut sink = inbound;
                let mut buf = vec![0u8; 16 * 1024];
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = epoch.changed() => {}
                    _ = async { while matches!(sink.read(&mut buf).await, Ok(n) if n > 0) {} } => {}
                }
                return;
            }
            // The target refusing (not started, killed) closes the client's connection too.
            let Ok(outbound) = TcpStream::connect(target.as_str()).await else { return };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (in_read, in_write) = inbound.into_split();
            let (out_read, out_write) = outbound.into_split();
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = epoch.changed() => {}
                _ = pump(in_read, out_write, fault.clone()) => {}
                _ = pump(out_read, in_write, fault) => {}
            }
        });
    }
}

/// Copies `from` to `to` under the current fault, until either side closes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    fault: watch::Receiver<Fault>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let now = *fault.borrow();
        match now {
            Fault::Blackhole => continue,
            Fault::Refuse => return,
            Fault::Pass { delay } => {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
