//! Push requests that prove Sluice sent them: with `push-jwt-key`, each
//! request carries `authorization: Bearer <JWT>` signed with that key
//! (ES256), its audience the endpoint, valid for five minutes, so a handler
//! verifies the sender with the matching public key and knows the token
//! was made for it. A push config's own `authorization` header, if set,
//! is sent instead.
//!
//! The key file is read again on SIGHUP and when it changes (`crate::reload`),
//! so the key can be rotated without a restart; a file that does not load
//! is logged and the previous key stays in use.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use jsonwebtoken::{Algorithm, EncodingKey, Header};

/// How long a push token is valid, seconds.
pub const TOKEN_TTL_S: i64 = 300;

/// Signs push tokens.
pub struct PushSigner {
    path: PathBuf,
    key: RwLock<Arc<EncodingKey>>,
    /// The key file's modification time when last loaded.
    loaded: Mutex<Option<SystemTime>>,
    key_id: String,
    issuer: String,
}

impl PushSigner {
    /// The signer of the PEM (PKCS#8) P-256 private key at `path`, naming
    /// itself `issuer` and its key `key_id`; the message says what is wrong.
    pub fn load(path: &Path, issuer: &str, key_id: &str) -> Result<PushSigner, String> {
        let loaded = modified(path);
        let key = read_key(path)?;
        let signer = PushSigner {
            path: path.to_owned(),
            key: RwLock::new(Arc::new(key)),
            loaded: Mutex::new(loaded),
            key_id: key_id.to_owned(),
            issuer: issuer.to_owned(),
        };
        Ok(signer)
    }

    /// A token for a request to `audience` (the endpoint), issued at `now_s`.
    pub fn token(&self, audience: &str, now_s: i64) -> Result<String, String> {
        let key = self.key.read().unwrap_or_else(|e| e.into_inner()).clone();
        sign(&key, (&self.issuer, &self.key_id), audience, now_s)
    }
}

impl crate::reload::Reload for PushSigner {
    fn reload(&self, force: bool) {
        let stamp = modified(&self.path);
        {
            let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
            if !force && *loaded == stamp {
                return;
            }
            *loaded = stamp;
        }
        match read_key(&self.path) {
            Ok(key) => {
                *self.key.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
                tracing::info!(file = %self.path.display(), "push signing key reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "the push signing key changed but does not load; the previous one stays")
            }
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The key at `path`, checked to sign ES256 (a key of another curve loads
/// but cannot: found out now, not at the first push).
fn read_key(path: &Path) -> Result<EncodingKey, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let key = EncodingKey::from_ec_pem(&pem)
        .map_err(|e| format!("{}: not a PEM EC (P-256) private key: {e}", path.display()))?;
    sign(&key, ("check", "check"), "https://check.invalid/", 0)
        .map_err(|e| format!("{}: cannot sign ES256 ({e})", path.display()))?;
    Ok(key)
}

/// A token signed with `key` as `issuer` (key id `key_id`) for `audience`, issued at `now_s`.
fn sign(key: &EncodingKey, (issuer, key_id): (&str, &str), audience: &str, now_s: i64) -> Result<String, String> {
    let header = Header { kid: Some(key_id.to_owned()), ..Header::new(Algorithm::ES256) };
    let claims = serde_json::json!({
        "iss": issuer,
        "sub": "sluice-push",
        "aud": audience,
        "iat": now_s,
        "nbf": now_s,
        "exp": now_s + TOKEN_TTL_S,
    });
    jsonwebtoken::encode(&header, &claims, key).map_err(|e| format!("signing the push token: {e}"))
}
