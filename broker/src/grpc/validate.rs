//! Request validation shared by the services: names, sizes and limits, and the
//! lookups of the topics and groups a request names (name checked first).

use std::sync::Arc;

use crate::error::Result;
use crate::group::{GroupHandle, GroupRegistry};
use crate::topic::{Topic, TopicRegistry};

/// Topic and group names in the request field `field` (`crate::name`'s rule).
pub fn name(field: &'static str, name: &str) -> Result<()> {
    crate::name::check(field, name)
}

/// An optional name (empty = not given): checked only when given.
pub fn optional_name(field: &'static str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Ok(());
    }
    name(field, value)
}

/// The topic named in request field `field`: `INVALID_ARGUMENT` for an invalid
/// name, `NOT_FOUND` for a valid one that does not exist. In a cluster, one
/// this broker has not applied yet is waited for briefly: a client that made
/// it through another broker a moment ago (or was redirected here) finds it.
pub async fn topic(topics: &TopicRegistry, field: &'static str, value: &str) -> Result<Arc<Topic>> {
    name(field, value)?;
    topics.get_or_await(value).await
}

/// The group named in request field `field`, checked and waited for like `topic`.
pub async fn group(groups: &GroupRegistry, field: &'static str, value: &str) -> Result<Arc<GroupHandle>> {
    name(field, value)?;
    groups.get_or_await(value).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(name("name", "orders.v1_eu-west").is_ok());
        for bad in ["", ".", "..", "a/b", "sp ace", "é", &"x".repeat(250)] {
            assert!(name("name", bad).is_err(), "{bad:?} accepted");
        }
    }
}
