//! `make-certs DIR NAME...`: a throwaway CA and certificates for trying TLS
//! (the TLS benchmark, the Compose TLS example): `ca.pem`, `server.pem` and
//! `server.key` for the host names or addresses NAME..., and `client.pem` /
//! `client.key` (common name `sluice-client`) for mutual TLS. Not for
//! production: the CA's key is not kept, and nothing is protected.

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
    println!(
        "wrote ca.pem, server.pem, server.key (for {}), client.pem, client.key to {}",
        names.join(", "),
        dir.display()
    );
    Ok(())
}
