//! The credentials file (`auth-tokens`): static bearer tokens, stored as
//! SHA-256 digests so the file does not hold the secrets and compared in
//! constant time, and rules mapping verified client certificates (mTLS) to
//! principals:
//!
//! ```toml
//! [[token]]
//! principal = "orders-service"
//! roles = ["producers"]
//! # printf %s "$TOKEN" | sha256sum
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//!
//! [[certificate]]
//! # The certificate's subject common name, or one of its DNS or URI
//! # subject alternative names; `*` matches any run of characters.
//! subject = "*.billing.svc"
//! principal = "billing"
//! roles = ["consumers"]
//! ```
//!
//! Tokens should be long random strings (32 bytes or more): a plain digest
//! is no defence for a guessable one. Certificate rules are tried in file
//! order; the first whose pattern matches one of the certificate's names
//! names the principal, and a certificate no rule matches authenticates
//! nobody.

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
    #[serde(default)]
    certificate: Vec<CertificateEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateEntry {
    subject: String,
    principal: String,
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    principal: String,
    #[serde(default)]
    roles: Vec<String>,
    sha256: String,
}

/// The tokens and certificate rules of one file.
pub struct Tokens {
    entries: Vec<([u8; 32], Principal)>,
    certificates: Vec<(String, Principal)>,
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
            if entry.principal.is_empty() || entry.principal.starts_with("sluice:") {
                return Err(format!("token {}: the principal is empty or reserved (sluice:…)", i + 1));
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
        let mut certificates = Vec::with_capacity(file.certificate.len());
        for (i, rule) in file.certificate.into_iter().enumerate() {
            if rule.subject.is_empty() || rule.principal.is_empty() || rule.principal.starts_with("sluice:") {
                return Err(format!(
                    "certificate rule {}: subject and principal must not be empty, nor the principal reserved (sluice:…)",
                    i + 1
                ));
            }
            certificates.push((rule.subject, Principal { name: rule.principal, roles: rule.roles }));
        }
        Ok(Tokens { entries, certificates })
    }

    /// The principal of a client certificate whose names (subject common
    /// names, DNS and URI alternative names) are `names`: the first rule
    /// matching any of them.
    pub fn certificate(&self, names: &[String]) -> Option<Principal> {
        let (_, principal) = self.certificates.iter().find(|(pattern, _)| names.iter().any(|n| matches(pattern, n)))?;
        Some(principal.clone())
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

/// Whether `text` matches `pattern`, where each `*` matches any run of characters.
fn matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// The names a certificate (DER) goes by: its subject common names and its
/// DNS and URI subject alternative names. Unparseable: none.
pub fn certificate_names(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return Vec::new() };
    let mut names: Vec<String> =
        cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).map(str::to_owned).collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) | GeneralName::URI(n) => names.push((*n).to_owned()),
                _ => {}
            }
        }
    }
    names
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
    fn certificate_rules_match_names_by_pattern_in_file_order() {
        let text = "[[certificate]]\nsubject = \"*.billing.svc\"\nprincipal = \"billing\"\n\n\
                    [[certificate]]\nsubject = \"spiffe://prod/*/orders\"\nprincipal = \"orders\"\nroles = [\"p\"]\n\n\
                    [[certificate]]\nsubject = \"*\"\nprincipal = \"anyone\"\n";
        let tokens = Tokens::parse(text).expect("parses");
        let name = |names: &[&str]| {
            tokens.certificate(&names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).map(|p| p.name)
        };
        assert_eq!(name(&["api.billing.svc"]).as_deref(), Some("billing"));
        assert_eq!(name(&["x", "spiffe://prod/ns/orders"]).as_deref(), Some("orders"));
        assert_eq!(name(&["billing.svc"]).as_deref(), Some("anyone"), "*.billing.svc needs a dot before it");
        assert_eq!(name(&[]), None);
        assert!(matches("a*b*c", "aXbYc") && matches("a*", "a") && !matches("a*c", "ab") && matches("*", ""));
        assert!(!matches("exact", "exactly") && matches("exact", "exact") && !matches("*a*a", "a"));
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
