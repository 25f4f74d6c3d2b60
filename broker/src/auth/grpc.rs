//! The gRPC door's authentication: a layer in front of every service that
//! looks the method up in [`super::methods`], authenticates the request's
//! `authorization` metadata, and puts the [`Principal`] in the request's
//! extensions for the services (and later, permission checks) to read.
//! Refused requests never reach a service.

use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::http;

use super::methods::{self, Access};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use super::access::Caller;
use super::{Authenticator, Credentials, Principal};

/// Wraps each service in [`Authenticated`].
#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
}

impl AuthLayer {
    /// The layer of `auth`.
    pub fn new(auth: Arc<Authenticator>) -> AuthLayer {
        AuthLayer { auth }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated { inner, auth: self.auth.clone() }
    }
}

/// A service that admits only authenticated requests (and anonymous
/// methods).
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

impl<S, B> tower_service::Service<http::Request<B>> for Authenticated<S>
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
        let (method, access) = methods::grpc(request.uri().path());
        let principal = match access {
            Access::Anonymous => Ok(Principal::anonymous()),
            Access::Authenticated | Access::Checked(..) => {
                let certificates =
                    request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>().and_then(|info| info.peer_certs());
                let credentials = Credentials {
                    authorization: request.headers().get(http::header::AUTHORIZATION).map(|v| v.as_bytes()),
                    certificate: certificates.as_ref().and_then(|c| c.first()).map(|c| c.as_ref()),
                };
                self.auth.authenticate(credentials, "grpc")
            }
        };
        match principal {
            Ok(principal) => {
                request.extensions_mut().insert(Caller { principal: Arc::new(principal), method, access });
                futures::future::Either::Left(self.inner.call(request))
            }
            Err(e) => {
                let status = tonic::Status::from(e);
                futures::future::Either::Right(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}
