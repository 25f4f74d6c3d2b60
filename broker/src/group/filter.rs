//! Filters on a group's events, in Knative Eventing's dialects (`exact`,
//! `prefix`, `suffix`, `all`, `any`, `not`) over CloudEvents attributes. A
//! group's filters must all match for a message to be delivered; one that
//! does not is settled (acked) without delivery and counted, for pull and
//! push alike. Stored as Knative writes them in JSON:
//! `[{"exact":{"type":"order.created"}},{"not":{"prefix":{"source":"/test"}}}]`.
//!
//! A record's attributes are those `event::read_event` gives: its `ce_*`
//! headers, `datacontenttype` from its content type, and for a plain message
//! the event made for it (so `type` is `dev.sluice.message`). An attribute the
//! event lacks matches no `exact`, `prefix` or `suffix`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::ReadEvent;

/// Most filter nodes in one group (every dialect counts one).
pub const MAX_FILTER_NODES: usize = 100;
/// Deepest nesting of `all`, `any` and `not`.
pub const MAX_FILTER_DEPTH: usize = 8;

/// One filter expression.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filter {
    /// Every named attribute equals its value.
    Exact(BTreeMap<String, String>),
    /// Every named attribute starts with its value.
    Prefix(BTreeMap<String, String>),
    /// Every named attribute ends with its value.
    Suffix(BTreeMap<String, String>),
    /// Every filter matches.
    All(Vec<Filter>),
    /// At least one filter matches.
    Any(Vec<Filter>),
    /// The filter does not match.
    Not(Box<Filter>),
}

/// The attributes a filter looks at.
pub struct Attributes<'a>(&'a ReadEvent);

impl<'a> Attributes<'a> {
    /// The attributes of `event`.
    pub fn of(event: &'a ReadEvent) -> Self {
        Attributes(event)
    }

    fn get(&self, name: &str) -> Option<&'a str> {
        if name == "datacontenttype" {
            return self.0.content_type.as_deref();
        }
        self.0.attributes.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

impl Filter {
    /// Whether the event with `attributes` matches.
    pub fn matches(&self, attributes: &Attributes<'_>) -> bool {
        let each = |pairs: &BTreeMap<String, String>, test: fn(&str, &str) -> bool| {
            pairs.iter().all(|(name, want)| attributes.get(name).is_some_and(|have| test(have, want)))
        };
        match self {
            Filter::Exact(pairs) => each(pairs, |have, want| have == want),
            Filter::Prefix(pairs) => each(pairs, |have, want| have.starts_with(want)),
            Filter::Suffix(pairs) => each(pairs, |have, want| have.ends_with(want)),
            Filter::All(filters) => filters.iter().all(|f| f.matches(attributes)),
            Filter::Any(filters) => filters.iter().any(|f| f.matches(attributes)),
            Filter::Not(filter) => !filter.matches(attributes),
        }
    }

    /// Checks one filter (Knative's rules: attribute maps not empty, names
    /// lower-case letters and digits, prefix and suffix values not empty),
    /// counting its nodes into `nodes`.
    fn check(&self, depth: usize, nodes: &mut usize) -> std::result::Result<(), String> {
        *nodes += 1;
        if depth > MAX_FILTER_DEPTH {
            return Err(format!("nested deeper than {MAX_FILTER_DEPTH}"));
        }
        if *nodes > MAX_FILTER_NODES {
            return Err(format!("more than {MAX_FILTER_NODES} expressions"));
        }
        let pairs = |dialect: &str, pairs: &BTreeMap<String, String>, empty_values: bool| {
            if pairs.is_empty() {
                return Err(format!("{dialect} names no attribute"));
            }
            for (name, value) in pairs {
                let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
                if !valid {
                    return Err(format!("{dialect}: attribute {name:?} must be lower-case letters and digits"));
                }
                if value.is_empty() && !empty_values {
                    return Err(format!("{dialect}: the value for {name} is empty (it would match everything)"));
                }
            }
            Ok(())
        };
        match self {
            Filter::Exact(p) => pairs("exact", p, true),
            Filter::Prefix(p) => pairs("prefix", p, false),
            Filter::Suffix(p) => pairs("suffix", p, false),
            Filter::All(filters) | Filter::Any(filters) => {
                if filters.is_empty() {
                    return Err("all/any needs at least one filter".into());
                }
                filters.iter().try_for_each(|f| f.check(depth + 1, nodes))
            }
            Filter::Not(filter) => filter.check(depth + 1, nodes),
        }
    }
}

/// Whether an event passes every filter of a group (none: everything passes).
pub fn passes(filters: &[Filter], event: &ReadEvent) -> bool {
    let attributes = Attributes::of(event);
    filters.iter().all(|f| f.matches(&attributes))
}

/// Checks a group's filters, naming `field` in the error.
pub fn validate(field: &'static str, filters: &[Filter]) -> Result<()> {
    let mut nodes = 0;
    for filter in filters {
        filter.check(1, &mut nodes).map_err(|reason| Error::invalid(field, reason))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(pairs: &[(&str, &str)]) -> ReadEvent {
        ReadEvent {
            attributes: pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            content_type: Some("application/json".into()),
            data: Default::default(),
        }
    }

    fn parse(json: &str) -> Vec<Filter> {
        serde_json::from_str(json).expect("Knative filter JSON")
    }

    #[test]
    fn knative_dialects_match_as_documented() {
        let e = event(&[("type", "order.created"), ("source", "/shop/eu"), ("subject", "img.png")]);
        let cases = [
            (r#"[{"exact":{"type":"order.created"}}]"#, true),
            (r#"[{"exact":{"type":"order.created","source":"/shop"}}]"#, false),
            (r#"[{"prefix":{"source":"/shop/"}}]"#, true),
            (r#"[{"suffix":{"subject":".png"}}]"#, true),
            (r#"[{"exact":{"missing":""}}]"#, false),
            (r#"[{"not":{"exact":{"missing":"x"}}}]"#, true),
            (r#"[{"any":[{"exact":{"type":"a"}},{"prefix":{"type":"order."}}]}]"#, true),
            (r#"[{"all":[{"exact":{"type":"order.created"}},{"suffix":{"source":"/us"}}]}]"#, false),
            (r#"[{"exact":{"datacontenttype":"application/json"}}]"#, true),
            (r#"[{"prefix":{"type":"order"}},{"not":{"suffix":{"subject":".png"}}}]"#, false),
            ("[]", true),
        ];
        for (json, expected) in cases {
            assert_eq!(passes(&parse(json), &e), expected, "{json}");
        }
    }

    #[test]
    fn invalid_filters_are_refused() {
        for json in [
            r#"[{"exact":{}}]"#,
            r#"[{"prefix":{"type":""}}]"#,
            r#"[{"exact":{"Type":"x"}}]"#,
            r#"[{"any":[]}]"#,
            r#"[{"not":{"not":{"not":{"not":{"not":{"not":{"not":{"not":{"exact":{"a":"b"}}}}}}}}}}]"#,
        ] {
            assert!(validate("filters", &parse(json)).is_err(), "{json}");
        }
        assert!(validate("filters", &parse(r#"[{"exact":{"type":""}}]"#)).is_ok(), "exact may match an empty value");
    }
}
