//! Loopback ports for test brokers. A broker restarted by a test binds the
//! same ports again, so they must stay free while it is down: a port from the
//! kernel's ephemeral range (what binding port 0 gives) can be taken meanwhile
//! by any outgoing connection (a client, a proxy, a peer dialling out), and
//! the restart fails with "address in use". These ports come from below that
//! range, at random, never twice in one test process, and free when handed out.

use std::collections::HashSet;
use std::sync::Mutex;

use rand::Rng;

/// Lowest port handed out.
const LOWEST: u16 = 10_000;

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// The first port of the kernel's ephemeral range (32768 when unknown).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        .filter(|p| *p > LOWEST + 1000)
        .unwrap_or(32_768)
}

/// A free loopback port below the ephemeral range, not handed out before in
/// this process.
pub fn reserve() -> anyhow::Result<u16> {
    let end = ephemeral_start();
    let mut rng = rand::rng();
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed = handed.get_or_insert_with(HashSet::new);
    for _ in 0..1000 {
        let port = rng.random_range(LOWEST..end);
        if handed.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed.insert(port);
            return Ok(port);
        }
    }
    anyhow::bail!("no free loopback port in {LOWEST}..{end}")
}

/// `127.0.0.1:<port>` with a port from [`reserve`].
pub fn reserve_addr() -> anyhow::Result<String> {
    Ok(format!("127.0.0.1:{}", reserve()?))
}
