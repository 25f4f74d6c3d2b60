//! The cluster listener's door. It serves the other brokers two things:
//! every Raft group's RPCs, and the two client methods a broker forwards to
//! a partition's leader (`Produce`, `GetOffsets`; `partition::forward`).
//!
//! - Raft RPCs pass through as they come: with cluster TLS, only a peer
//!   whose certificate the cluster CA signed completes the handshake; without
//!   it, the cluster link is as open as its network.
//! - A forwarded call is the broker's own ([`super::BROKER_PRINCIPAL`]) when
//!   it came over cluster TLS (the handshake proved the peer), or when it
//!   carries the cluster secret; else it is authenticated like any client's.
//! - Every other client method is refused: the cluster port is not a
//!   second way in.

use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::http;

use super::access::Caller;
use super::methods;
use super::{Authenticator, Credentials, Principal, BROKER_PRINCIPAL};

/// The path prefix of the internal Raft service.
const RAFT_PATHS: &str = "/sluice.internal.v1.Raft/";

/// The client methods one broker calls at another.
const FORWARDED_METHODS: [&str; 2] = ["/sluice.v1.Producer/Produce", "/sluice.v1.Consumer/GetOffsets"];

/// Wraps each service of the cluster listener in [`PeerDoor`].
#[derive(Clone)]
pub struct PeerLayer {
    auth: Arc<Authenticator>,
    mutual_tls: bool,
}

impl PeerLayer {
    /// The door of a cluster listener authenticating with `auth`;
    /// `mutual_tls` when its handshake already requires a peer certificate.
    pub fn new(auth: Arc<Authenticator>, mutual_tls: bool) -> PeerLayer {
        PeerLayer { auth, mutual_tls }
    }
}

impl<S> tower_layer::Layer<S> for PeerLayer {
    type Service = PeerDoor<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PeerDoor { inner, layer: self.clone() }
    }
}

/// A service of the cluster listener behind its door.
#[derive(Clone)]
pub struct PeerDoor<S> {
    inner: S,
    layer: PeerLayer,
}

impl PeerLayer {
    /// Who is calling `path` with `authorization`, or why not.
    fn caller(&self, path: &str, authorization: Option<&[u8]>) -> Result<Option<Caller>, tonic::Status> {
        if path.starts_with(RAFT_PATHS) {
            return Ok(None);
        }
        if !FORWARDED_METHODS.contains(&path) {
            return Err(tonic::Status::unimplemented(format!(
                "the cluster port serves brokers only ({path} is not a call one broker makes at another); \
                 clients use the broker's client port"
            )));
        }
        let (method, access) = methods::grpc(path);
        let principal = if self.mutual_tls {
            Principal { name: BROKER_PRINCIPAL.into(), roles: Vec::new() }
        } else {
            self.auth.authenticate(Credentials { authorization, certificate: None }, "cluster")?
        };
        Ok(Some(Caller { principal: Arc::new(principal), method, access }))
    }
}

impl<S, B> tower_service::Service<http::Request<B>> for PeerDoor<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::Either<S::Future, std::future::Ready<Result<Self::Response, Self::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let authorization = request.headers().get(http::header::AUTHORIZATION).map(|v| v.as_bytes());
        match self.layer.caller(request.uri().path(), authorization) {
            Ok(caller) => {
                if let Some(caller) = caller {
                    request.extensions_mut().insert(caller);
                }
                futures::future::Either::Left(self.inner.call(request))
            }
            Err(status) => futures::future::Either::Right(std::future::ready(Ok(status.into_http()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(mutual_tls: bool) -> PeerLayer {
        PeerLayer::new(Arc::new(Authenticator::open().with_cluster_secret(|| "s3cret".into())), mutual_tls)
    }

    #[test]
    fn raft_passes_forwarded_calls_are_the_broker_others_are_refused() {
        let mtls = layer(true);
        assert!(matches!(mtls.caller("/sluice.internal.v1.Raft/Call", None), Ok(None)));
        let caller = mtls.caller(FORWARDED_METHODS[0], None).ok().flatten().map(|c| c.principal.name.clone());
        assert_eq!(caller.as_deref(), Some(BROKER_PRINCIPAL));
        for path in ["/sluice.v1.Admin/DeleteTopic", "/sluice.v1.Consumer/Pull", "/grpc.health.v1.Health/Check"] {
            let refused = mtls.caller(path, None).err().map(|s| s.code());
            assert_eq!(refused, Some(tonic::Code::Unimplemented), "{path}");
        }
        // An open broker without cluster TLS: the caller is anonymous (no rules apply).
        let plain = layer(false);
        let caller = plain.caller(FORWARDED_METHODS[1], None).ok().flatten().map(|c| c.principal.name.clone());
        assert_eq!(caller.as_deref(), Some("anonymous"));
    }
}
