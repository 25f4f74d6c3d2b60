//! Permission rules on a single broker: each rule, as the broker encodes
//! it (opaque here), under its id in the metadata column family. A cluster
//! keeps the same rules in its metadata catalog instead.

use crate::engine::{Cf, Mutation};
use crate::keys::TAG_ACL;
use crate::AtomicWrite;

fn key(id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(TAG_ACL);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The id in a rule's key, if it is one.
pub(crate) fn parse_key(key: &[u8]) -> Option<u64> {
    match key {
        [TAG_ACL, id @ ..] => Some(u64::from_be_bytes(id.try_into().ok()?)),
        _ => None,
    }
}

/// The write that stores rule `id`.
pub fn put_acl(id: u64, rule: &serde_json::Value) -> AtomicWrite {
    // Encoding a `Value` cannot fail: its map keys are strings.
    let bytes = serde_json::to_vec(rule).unwrap_or_default();
    AtomicWrite::from(vec![Mutation::Put(Cf::Meta, key(id), bytes)])
}

/// The write that removes rule `id`.
pub fn delete_acl(id: u64) -> AtomicWrite {
    AtomicWrite::from(vec![Mutation::Delete(Cf::Meta, key(id))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_other_tags_are_not_rules() {
        assert_eq!(parse_key(&key(42)), Some(42));
        assert_eq!(parse_key(&[TAG_ACL, 1, 2]), None);
        assert_eq!(parse_key(&[crate::keys::TAG_SCHEDULE, 0, 0, 0, 0, 0, 0, 0, 1]), None);
    }
}
