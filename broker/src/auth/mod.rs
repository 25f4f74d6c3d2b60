//! Who is calling: every request at every door (the gRPC port, the HTTP
//! gateway) becomes a [`Principal`] here before it reaches the domain.
//!
//! With no credentials configured the broker is open: every caller is the
//! anonymous principal (`make run` on 127.0.0.1). With a credentials file
//! every request must carry `authorization: Bearer <token>` of a listed
//! token, or come over a connection whose verified client certificate a
//! certificate rule maps to a principal,
//! except the few methods [`methods`] marks anonymous (health checks);
//! anything else is answered `UNAUTHENTICATED` / `401` with a message that
//! says what was wrong with the credentials and nothing about the resource.

pub mod access;
pub mod acl;
pub mod grpc;
pub mod jwt;
pub mod methods;
pub mod peer;
pub mod rules;
pub mod tokens;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use crate::error::Error;
use jwt::JwtRules;
use tokens::Tokens;

/// Longest `authorization` header value accepted; longer ones are refused
/// before any work is done on them.
pub const MAX_CREDENTIAL_BYTES: usize = 8 << 10;

/// The principal of a broker calling another's client port with the
/// cluster secret: it may do everything. Reserved: a credentials file may
/// not name it.
pub const BROKER_PRINCIPAL: &str = "sluice:broker";

/// A fresh random secret (256 bits, hex).
pub fn random_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An authenticated caller: its name and the roles its credentials grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The principal's name (from the token file, later certificates and JWT claims).
    pub name: String,
    /// Roles, which permission rules may name instead of principals.
    pub roles: Vec<String>,
}

impl Principal {
    /// The caller of a broker without authentication.
    pub fn anonymous() -> Principal {
        Principal { name: "anonymous".into(), roles: Vec::new() }
    }
}

/// What a request presents: the `authorization` header's value, and the
/// leaf certificate (DER) the client presented in the TLS handshake, which
/// the listener verified against `tls-client-ca`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// The `authorization` header, if sent.
    pub authorization: Option<&'a [u8]>,
    /// The verified client certificate, if any.
    pub certificate: Option<&'a [u8]>,
}

/// Turns credentials into principals; cheap to share (one per broker).
pub struct Authenticator {
    tokens: Option<Watched<Tokens>>,
    jwt: Option<(JwtRules, Watched<jwt::Keys>)>,
    /// The cluster secret, in a cluster (empty until set).
    cluster_secret: Option<Box<dyn Fn() -> String + Send + Sync>>,
}

/// A file read again when it changes (or on SIGHUP).
struct Watched<T> {
    path: PathBuf,
    what: &'static str,
    load: fn(&Path) -> Result<T, String>,
    current: RwLock<Arc<T>>,
    loaded: Mutex<Option<SystemTime>>,
}

impl<T> Watched<T> {
    fn open(path: PathBuf, what: &'static str, load: fn(&Path) -> Result<T, String>) -> Result<Self, String> {
        let loaded = modified(&path);
        let current = RwLock::new(Arc::new(load(&path)?));
        tracing::info!(file = %path.display(), "{what} loaded");
        Ok(Watched { path, what, load, current, loaded: Mutex::new(loaded) })
    }

    fn get(&self) -> Arc<T> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads the file again if `force` or it changed; keeps the current
    /// contents if it does not load.
    fn reload(&self, force: bool) {
        let stamp = modified(&self.path);
        {
            let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
            if !force && *loaded == stamp {
                return;
            }
            *loaded = stamp;
        }
        match (self.load)(&self.path) {
            Ok(value) => {
                tracing::info!(file = %self.path.display(), "{} reloaded", self.what);
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(value);
            }
            Err(e) => tracing::error!(error = %e, "the {} changed but do not load; the previous ones stay", self.what),
        }
    }
}

impl Authenticator {
    /// No authentication: every caller is anonymous.
    pub fn open() -> Authenticator {
        Authenticator { tokens: None, jwt: None, cluster_secret: None }
    }

    /// Bearer tokens and certificate rules from `path` (see [`tokens`] for
    /// the format); the message says what is wrong with the file.
    pub fn with_tokens(path: PathBuf) -> Result<Authenticator, String> {
        Authenticator::open().and_tokens(path)
    }

    /// Also the tokens and certificate rules of the file at `path`.
    pub fn and_tokens(mut self, path: PathBuf) -> Result<Authenticator, String> {
        self.tokens = Some(Watched::open(path, "credentials", Tokens::load)?);
        Ok(self)
    }

    /// Also JWTs signed by a key of the JWKS file at `jwks`, under `rules`.
    pub fn and_jwt(mut self, jwks: PathBuf, rules: JwtRules) -> Result<Authenticator, String> {
        self.jwt = Some((rules, Watched::open(jwks, "JWT keys", jwt::Keys::load)?));
        Ok(self)
    }

    /// Also accepts the cluster secret `secret` reads (brokers calling
    /// each other's client ports) as [`BROKER_PRINCIPAL`].
    pub fn with_cluster_secret(mut self, secret: impl Fn() -> String + Send + Sync + 'static) -> Authenticator {
        self.cluster_secret = Some(Box::new(secret));
        self
    }

    /// Whether requests must carry credentials.
    pub fn enabled(&self) -> bool {
        self.tokens.is_some() || self.jwt.is_some()
    }

    /// The principal behind a request's `credentials`: its bearer token (a
    /// listed token, a JWT, or the cluster secret) if it sent one, else its
    /// verified client certificate (mTLS) if a certificate rule names it;
    /// `door` labels the failure metric.
    pub fn authenticate(&self, credentials: Credentials<'_>, door: &'static str) -> Result<Principal, Error> {
        if !self.enabled() {
            return Ok(Principal::anonymous());
        }
        let refuse = |reason: &'static str, message: &str| {
            metrics::counter!(crate::metrics::AUTH_FAILURES, "door" => door, "reason" => reason).increment(1);
            Err(Error::Unauthenticated(message.to_owned()))
        };
        let Some(value) = credentials.authorization else {
            if let (Some(der), Some(tokens)) = (credentials.certificate, &self.tokens) {
                return match tokens.get().certificate(&tokens::certificate_names(der)) {
                    Some(principal) => Ok(principal),
                    None => refuse(
                        "unknown_certificate",
                        "the client certificate maps to no principal (no certificate rule matches its names)",
                    ),
                };
            }
            return refuse(
                "missing",
                "this broker requires credentials: send a bearer token (`authorization: Bearer <token>`; \
                 sluice --token or SLUICE_TOKEN) or a client certificate its credentials file names",
            );
        };
        if value.len() > MAX_CREDENTIAL_BYTES {
            return refuse("too_long", "the authorization header is longer than 8 KiB");
        }
        // The scheme is case-insensitive (RFC 9110, 11.1): `BEARER x` is a bearer token too.
        let token = match value.split_at_checked(7) {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case(b"bearer ") && !t.is_empty() => t,
            _ => return refuse("malformed", "the authorization header must be `Bearer <token>`"),
        };
        if let Some(secret) = self.cluster_secret.as_ref().map(|s| s()).filter(|s| !s.is_empty()) {
            if bool::from(subtle::ConstantTimeEq::ct_eq(secret.as_bytes(), token)) {
                return Ok(Principal { name: BROKER_PRINCIPAL.into(), roles: Vec::new() });
            }
        }
        if let (Some((rules, keys)), Some(jwt)) = (&self.jwt, looks_like_jwt(token)) {
            return match keys.get().verify(jwt, rules) {
                Ok(principal) => Ok(principal),
                Err((reason, message)) => refuse(reason, &message),
            };
        }
        match self.tokens.as_ref().and_then(|t| t.get().find(token)) {
            Some(principal) => Ok(principal),
            None => refuse("unknown_token", "the bearer token is not valid here (unknown, revoked or mistyped)"),
        }
    }
}

/// `token` as text if it has a JWT's shape (three base64url parts).
fn looks_like_jwt(token: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(token).ok()?;
    let shaped = text.split('.').count() == 3
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    shaped.then_some(text)
}

impl crate::reload::Reload for Authenticator {
    fn reload(&self, force: bool) {
        if let Some(tokens) = &self.tokens {
            tokens.reload(force);
        }
        if let Some((_, keys)) = &self.jwt {
            keys.reload(force);
        }
    }
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(value: &[u8]) -> Result<String, String> {
        // Credentials are required once a token file is given (this one lists none).
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("tokens.toml");
        std::fs::write(&path, "").map_err(|e| e.to_string())?;
        let auth = Authenticator::with_tokens(path)?.with_cluster_secret(|| "s3cret".into());
        let credentials = Credentials { authorization: Some(value), certificate: None };
        auth.authenticate(credentials, "test").map(|p| p.name).map_err(|e| e.to_string())
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_a_token_is_required() {
        for header in [&b"Bearer s3cret"[..], b"bearer s3cret", b"BEARER s3cret", b"bEaReR s3cret"] {
            assert_eq!(with_header(header).as_deref(), Ok(BROKER_PRINCIPAL), "{}", String::from_utf8_lossy(header));
        }
        for header in [&b"Basic s3cret"[..], b"Bearer ", b"Bearer", b"Bearers3cret", b""] {
            let refused = with_header(header).expect_err("refused");
            assert!(refused.contains("must be `Bearer <token>`"), "{}: {refused}", String::from_utf8_lossy(header));
        }
    }
}
