//! `make-certs DIR NAME...`: throwaway CAs and certificates for trying TLS
//! (the TLS benchmark, the Compose TLS example): `ca.pem`, `server.pem` and
//! `server.key` for the host names or addresses NAME..., `client.pem` /
//! `client.key` (common name `sluice-client`) for mutual TLS, and from a
//! second CA (so no client certificate can pass for a broker) `cluster-ca.pem`,
//! `cluster.pem` and `cluster.key` for the links between brokers, for the
//! same names. Not for production: the CAs' keys are not kept, and nothing
//! is protected.

use sluice_tests::pki::{self, TestCa};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((dir, names)) = args.split_first() else {
        anyhow::bail!("usage: make-certs DIR NAME... (host names or IP addresses of the broker)");
    };
    anyhow::ensure!(!names.is_empty(), "give at least one host name or address for the server certificate");
    let dir = std::path::Path::new(dir);
    std::fs::create_dir_all(dir)?;
    let ca = TestCa::new("sluice throwaway CA")?;
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let server = ca.issue("sluice-broker", &names)?;
    let client = ca.issue("sluice-client", &["sluice-client"])?;
    pki::write(dir, "ca.pem", &ca.pem)?;
    pki::write(dir, "server.pem", &server.cert)?;
    pki::write(dir, "server.key", &server.key)?;
    pki::write(dir, "client.pem", &client.cert)?;
    pki::write(dir, "client.key", &client.key)?;
    let cluster_ca = TestCa::new("sluice throwaway cluster CA")?;
    let cluster = cluster_ca.issue("sluice-broker", &names)?;
    pki::write(dir, "cluster-ca.pem", &cluster_ca.pem)?;
    pki::write(dir, "cluster.pem", &cluster.cert)?;
    pki::write(dir, "cluster.key", &cluster.key)?;
    println!(
        "wrote ca.pem, server.pem, server.key (for {}), client.pem, client.key, cluster-ca.pem, cluster.pem, \
         cluster.key to {}",
        names.join(", "),
        dir.display()
    );
    Ok(())
}
