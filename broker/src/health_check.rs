//! `sluice-broker health`: a gRPC health probe for container health checks,
//! so images need no extra tool.

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Whether the broker at `addr` answers SERVING within a few seconds.
pub async fn probe(addr: &str) -> Result<(), String> {
    let fut = async {
        let channel = tonic::transport::Endpoint::from_shared(addr.to_owned())
            .map_err(|e| format!("bad address {addr}: {e}"))?
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
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
