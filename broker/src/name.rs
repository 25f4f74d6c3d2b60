//! Topic and group names as types: the one naming rule (1-249 characters of
//! `[A-Za-z0-9._-]`, not `.` or `..`), checked once where a name enters the
//! broker, so every door refuses an invalid name with the same
//! `INVALID_ARGUMENT` before any lookup (never a `NOT_FOUND` that suggests
//! creating what could not be created).

use std::fmt;

use crate::error::{Error, Result};

/// Longest topic or group name.
pub const MAX_NAME: usize = 249;

/// Checks `name`, given in request field `field`, against the naming rule.
pub fn check(field: &'static str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(Error::invalid(
            field,
            format!("names are 1..={MAX_NAME} characters of [A-Za-z0-9._-], got {}", name.len()),
        ));
    }
    if name == "." || name == ".." {
        return Err(Error::invalid(field, "`.` and `..` are not valid names"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(Error::invalid(
            field,
            format!("character {c:?} is not allowed in names; use letters, digits, `.`, `_` and `-`"),
        ));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $ty(String);

        impl $ty {
            /// `name` from request field `field`, if it follows the naming rule.
            pub fn parse(field: &'static str, name: impl Into<String>) -> Result<Self> {
                let name = name.into();
                check(field, &name)?;
                Ok($ty(name))
            }

            /// The name.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $ty {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A valid topic name.
    TopicName
);
name_type!(
    /// A valid consumer-group name.
    GroupName
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_one_rule() {
        assert!(TopicName::parse("topic", "orders.eu-1_v2").is_ok());
        for bad in ["", ".", "..", "a/b", "naïve", &"x".repeat(MAX_NAME + 1)] {
            let e = TopicName::parse("topic", bad).expect_err(bad);
            assert!(matches!(e, Error::InvalidArgument { field: "topic", .. }), "{bad:?}: {e:?}");
            assert!(GroupName::parse("group", bad).is_err());
        }
        assert_eq!(GroupName::parse("group", "g-1").expect("valid").as_str(), "g-1");
    }
}
