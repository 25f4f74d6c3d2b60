//! `sluice-broker health`: a gRPC health probe for container health checks,
//! so images need no extra tool.

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Whether the broker at `addr` answers SERVING within a few seconds; an
/// `https://` address is checked over TLS trusting the PEM CA at `ca` (a
/// health check needs no credentials).
pub async fn probe(addr: &str, ca: Option<&std::path::Path>) -> Result<(), String> {
    let fut = async {
        let mut endpoint =
            tonic::transport::Endpoint::from_shared(addr.to_owned()).map_err(|e| format!("bad address {addr}: {e}"))?;
        if let Some(ca) = ca {
            let pem = std::fs::read(ca).map_err(|e| format!("reading the CA {}: {e}", ca.display()))?;
            let tls =
                tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(pem));
            endpoint = endpoint.tls_config(tls).map_err(|e| format!("TLS to {addr}: {e}"))?;
        }
        let channel = endpoint.connect().await.map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let resp = HealthClient::new(channel)
            .check(HealthCheckRequest { service: String::new() })
            .await
            .map_err(|e| format!("health check failed: {}", e.message()))?;
        match resp.into_inner().status() {
            ServingStatus::Serving => Ok(()),
            other => Err(format!("broker is {other:?}")),
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), fut)
        .await
        .map_err(|_| "health check timed out".to_owned())?
}
