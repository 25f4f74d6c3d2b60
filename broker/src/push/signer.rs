//! Push requests that prove Sluice sent them: with `push-jwt-key`, each
//! request carries `authorization: Bearer <JWT>` signed with that key
//! (ES256), its audience the endpoint, valid for five minutes, so a handler
//! verifies the sender with the matching public key and knows the token
//! was made for it. A push config's own `authorization` header, if set,
//! is sent instead.

use std::path::Path;

use jsonwebtoken::{Algorithm, EncodingKey, Header};

/// How long a push token is valid, seconds.
pub const TOKEN_TTL_S: i64 = 300;

/// Signs push tokens.
pub struct PushSigner {
    key: EncodingKey,
    key_id: String,
    issuer: String,
}

impl PushSigner {
    /// The signer of the PEM (PKCS#8) P-256 private key at `path`, naming
    /// itself `issuer` and its key `key_id`; the message says what is wrong.
    pub fn load(path: &Path, issuer: &str, key_id: &str) -> Result<PushSigner, String> {
        let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let key = EncodingKey::from_ec_pem(&pem)
            .map_err(|e| format!("{}: not a PEM EC (P-256) private key: {e}", path.display()))?;
        let signer = PushSigner { key, key_id: key_id.to_owned(), issuer: issuer.to_owned() };
        // A key of another curve loads but cannot sign ES256: find out now, not at the first push.
        signer.token("https://check.invalid/", 0)?;
        Ok(signer)
    }

    /// A token for a request to `audience` (the endpoint), issued at `now_s`.
    pub fn token(&self, audience: &str, now_s: i64) -> Result<String, String> {
        let header = Header { kid: Some(self.key_id.clone()), ..Header::new(Algorithm::ES256) };
        let claims = serde_json::json!({
            "iss": self.issuer,
            "sub": "sluice-push",
            "aud": audience,
            "iat": now_s,
            "nbf": now_s,
            "exp": now_s + TOKEN_TTL_S,
        });
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| format!("signing the push token: {e}"))
    }
}
