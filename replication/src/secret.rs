//! `Secret`: a string that never shows in logs or debug output.

use serde::{Deserialize, Serialize};

/// A shared secret (the cluster secret brokers present to each other's
/// client ports). Serialized as the plain string it holds, so the catalog's
/// stored form is unchanged; `Debug` prints a placeholder, so a catalog or a
/// command in a log line or an error never carries it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Whether none is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The secret itself, for the one place that presents or checks it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "Secret(unset)" } else { "Secret(..)" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_secret_and_serde_keeps_the_string() {
        let secret = Secret::from("hunter2");
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert_eq!(serde_json::to_string(&secret).expect("encode"), "\"hunter2\"");
        let back: Secret = serde_json::from_str("\"hunter2\"").expect("decode");
        assert_eq!(back.expose(), "hunter2");
    }
}
