//! JSON Web Tokens as bearer credentials: signed by an identity provider
//! whose keys are in a JWKS file (`auth-jwks`; HMAC `oct`, RSA and EC keys),
//! checked for signature, `exp`, `nbf`, `iss` and `aud`, and mapped to a
//! principal (a claim, `sub` by default) and roles (a claim holding a list
//! or a space-separated string, `roles` by default).
//!
//! # Correctness
//! - The key is chosen by the token's `kid` (or is the only key), and the
//!   token's algorithm must be the key's own (`alg` in the JWKS) or at
//!   least of its family, so an RSA public key is never used as an HMAC
//!   secret; `none` is never accepted.
//! - `exp` is required; `exp` and `nbf` are checked with 30 s of leeway.

use std::path::Path;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, Validation};

use super::Principal;

/// Clock skew tolerated on `exp` and `nbf`, seconds.
const LEEWAY_S: u64 = 30;

/// What a token must say and where its principal and roles are.
#[derive(Debug, Clone)]
pub struct JwtRules {
    /// The required `iss`.
    pub issuer: String,
    /// The required `aud` (one of the token's audiences).
    pub audience: String,
    /// The claim naming the principal.
    pub principal_claim: String,
    /// The claim holding the roles.
    pub roles_claim: String,
}

/// The signing keys, as loaded from a JWKS file.
pub struct Keys {
    keys: Vec<(Option<String>, Option<Algorithm>, DecodingKey)>,
}

impl Keys {
    /// The keys of the JWKS file at `path`; the message says what is wrong.
    pub fn load(path: &Path) -> Result<Keys, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let set: JwkSet = serde_json::from_str(&text).map_err(|e| format!("{}: not a JWKS: {e}", path.display()))?;
        let mut keys = Vec::with_capacity(set.keys.len());
        for (i, jwk) in set.keys.iter().enumerate() {
            let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("{}: key {}: {e}", path.display(), i + 1))?;
            keys.push((jwk.common.key_id.clone(), algorithm(jwk), key));
        }
        if keys.is_empty() {
            return Err(format!("{}: the JWKS holds no keys", path.display()));
        }
        Ok(Keys { keys })
    }

    /// The principal of `token` under `rules`, or why it is refused: a
    /// reason for the metric and a message for the caller.
    pub fn verify(&self, token: &str, rules: &JwtRules) -> Result<Principal, (&'static str, String)> {
        let refuse = |reason: &'static str, message: String| Err((reason, message));
        let header = match jsonwebtoken::decode_header(token) {
            Ok(h) => h,
            Err(_) => return refuse("malformed_jwt", "the bearer token is not a well-formed JWT".into()),
        };
        let key = match &header.kid {
            Some(kid) => self.keys.iter().find(|(k, _, _)| k.as_deref() == Some(kid.as_str())),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        };
        let Some((_, declared, key)) = key else {
            return refuse("unknown_key", "the JWT's key id (kid) names no key this broker trusts".into());
        };
        if declared.is_some_and(|alg| alg != header.alg) {
            return refuse(
                "wrong_algorithm",
                format!("the JWT is signed with {:?}, not its key's algorithm", header.alg),
            );
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_S;
        validation.validate_nbf = true;
        validation.set_issuer(&[rules.issuer.as_str()]);
        validation.set_audience(&[rules.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let claims = match jsonwebtoken::decode::<serde_json::Value>(token, key, &validation) {
            Ok(data) => data.claims,
            Err(e) => {
                let (reason, why) = match e.kind() {
                    ErrorKind::ExpiredSignature => ("expired_jwt", "has expired"),
                    ErrorKind::ImmatureSignature => ("immature_jwt", "is not valid yet (nbf)"),
                    ErrorKind::InvalidAudience => ("wrong_audience", "is for another audience (aud)"),
                    ErrorKind::InvalidIssuer => ("wrong_issuer", "is from another issuer (iss)"),
                    ErrorKind::InvalidSignature => ("bad_signature", "has a signature that does not verify"),
                    ErrorKind::MissingRequiredClaim(_) => ("missing_claim", "lacks exp, iss or aud"),
                    ErrorKind::InvalidAlgorithm => {
                        ("wrong_algorithm", "is signed with an algorithm its key does not use")
                    }
                    _ => ("malformed_jwt", "is not a well-formed JWT"),
                };
                return refuse(reason, format!("the JWT {why}"));
            }
        };
        let name = claims.get(&rules.principal_claim).and_then(|v| v.as_str()).unwrap_or_default();
        if name.is_empty() || name.starts_with("sluice:") || name.len() > 256 {
            let claim = &rules.principal_claim;
            return refuse("missing_claim", format!("the JWT's `{claim}` claim names no principal"));
        }
        let roles = match claims.get(&rules.roles_claim) {
            Some(serde_json::Value::Array(list)) => list.iter().filter_map(|r| r.as_str().map(str::to_owned)).collect(),
            Some(serde_json::Value::String(text)) => text.split_whitespace().map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        Ok(Principal { name: name.to_owned(), roles })
    }
}

/// The algorithm a JWK declares, if any.
fn algorithm(jwk: &Jwk) -> Option<Algorithm> {
    use jsonwebtoken::jwk::KeyAlgorithm as K;
    Some(match jwk.common.key_algorithm? {
        K::HS256 => Algorithm::HS256,
        K::HS384 => Algorithm::HS384,
        K::HS512 => Algorithm::HS512,
        K::ES256 => Algorithm::ES256,
        K::ES384 => Algorithm::ES384,
        K::RS256 => Algorithm::RS256,
        K::RS384 => Algorithm::RS384,
        K::RS512 => Algorithm::RS512,
        K::PS256 => Algorithm::PS256,
        K::PS384 => Algorithm::PS384,
        K::PS512 => Algorithm::PS512,
        K::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}
