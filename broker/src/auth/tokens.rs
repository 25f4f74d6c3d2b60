//! Static bearer tokens from a TOML file, stored as SHA-256 digests so the
//! file does not hold the secrets, and compared in constant time:
//!
//! ```toml
//! [[token]]
//! principal = "orders-service"
//! roles = ["producers"]
//! # printf %s "$TOKEN" | sha256sum
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! ```
//!
//! Tokens should be long random strings (32 bytes or more): a plain digest
//! is no defence for a guessable one.

use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Principal;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    principal: String,
    #[serde(default)]
    roles: Vec<String>,
    sha256: String,
}

/// The tokens of one file.
pub struct Tokens {
    entries: Vec<([u8; 32], Principal)>,
}

impl Tokens {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("reading the token file {}: {e}", path.display()))?;
        Tokens::parse(&text).map_err(|e| format!("the token file {}: {e}", path.display()))
    }

    /// Parses a token file's text.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let file: TokenFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut entries = Vec::with_capacity(file.token.len());
        for (i, entry) in file.token.into_iter().enumerate() {
            if entry.principal.is_empty() {
                return Err(format!("token {}: the principal is empty", i + 1));
            }
            let digest = decode_hex(&entry.sha256).ok_or_else(|| {
                format!(
                    "token {} ({}): sha256 must be 64 hex digits (printf %s \"$TOKEN\" | sha256sum)",
                    i + 1,
                    entry.principal
                )
            })?;
            entries.push((digest, Principal { name: entry.principal, roles: entry.roles }));
        }
        Ok(Tokens { entries })
    }

    /// How many tokens the file lists.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file lists no token (every request is refused).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The principal of `token`: every entry is compared, each in constant
    /// time, so the answer's timing says nothing about which digest is near.
    pub fn find(&self, token: &[u8]) -> Option<Principal> {
        let digest: [u8; 32] = Sha256::digest(token).into();
        let mut found = None;
        for (stored, principal) in &self.entries {
            if bool::from(stored.ct_eq(&digest)) && found.is_none() {
                found = Some(principal.clone());
            }
        }
        found
    }
}

fn decode_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(token: &str) -> String {
        Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn a_listed_token_is_its_principal_and_others_are_nobody() {
        let text = format!(
            "[[token]]\nprincipal = \"alice\"\nroles = [\"producers\"]\nsha256 = \"{}\"\n\n[[token]]\nprincipal = \"bob\"\nsha256 = \"{}\"\n",
            hex("alice-secret"),
            hex("bob-secret").to_uppercase()
        );
        let tokens = Tokens::parse(&text).expect("parses");
        assert_eq!(tokens.len(), 2);
        let alice = tokens.find(b"alice-secret").expect("alice");
        assert_eq!((alice.name.as_str(), alice.roles.as_slice()), ("alice", &["producers".to_string()][..]));
        assert_eq!(tokens.find(b"bob-secret").map(|p| p.name), Some("bob".into()));
        assert!(tokens.find(b"alice-secreT").is_none());
        assert!(tokens.find(b"").is_none());
    }

    #[test]
    fn a_bad_file_says_what_is_wrong() {
        let short = Tokens::parse("[[token]]\nprincipal = \"a\"\nsha256 = \"abc\"\n").err().unwrap_or_default();
        assert!(short.contains("64 hex digits"), "{short}");
        let unknown = Tokens::parse("[[token]]\nprincipal = \"a\"\nsecret = \"x\"\n").err().unwrap_or_default();
        assert!(unknown.contains("unknown field"), "{unknown}");
        let empty = Tokens::parse(&format!("[[token]]\nprincipal = \"\"\nsha256 = \"{}\"\n", hex("x")));
        assert!(empty.err().unwrap_or_default().contains("principal is empty"));
        assert!(Tokens::parse("").expect("an empty file").is_empty());
    }
}
