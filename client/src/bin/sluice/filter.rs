//! `--filter` for `sluice group create|update`: Knative Eventing's filter
//! dialects, written as `attr=value` (exact), `attr^=value` (prefix),
//! `attr$=value` (suffix), `attr!=value` (not exact), or one filter in
//! Knative's JSON form (`{"any":[{"exact":{"type":"a"}},{"prefix":{"source":"/b"}}]}`).

use anyhow::{bail, Context};
use serde_json::{json, Value};
use sluice_client::proto as pb;

/// Parses one `--filter` argument.
pub fn parse(arg: &str) -> anyhow::Result<pb::EventFilter> {
    let arg = arg.trim();
    if arg.starts_with('{') {
        let value: Value = serde_json::from_str(arg).with_context(|| format!("--filter {arg}: not JSON"))?;
        return from_json(&value);
    }
    let values = |name: &str, value: &str| pb::AttributeValues {
        values: [(name.trim().to_owned(), value.to_owned())].into_iter().collect(),
    };
    use pb::event_filter::Filter as F;
    let filter = if let Some((name, value)) = arg.split_once("^=") {
        F::Prefix(values(name, value))
    } else if let Some((name, value)) = arg.split_once("$=") {
        F::Suffix(values(name, value))
    } else if let Some((name, value)) = arg.split_once("!=") {
        F::Not(Box::new(pb::EventFilter { filter: Some(F::Exact(values(name, value))) }))
    } else if let Some((name, value)) = arg.split_once('=') {
        F::Exact(values(name, value))
    } else {
        bail!("--filter {arg}: write attr=value, attr^=prefix, attr$=suffix, attr!=value or Knative JSON");
    };
    Ok(pb::EventFilter { filter: Some(filter) })
}

/// One filter in Knative's JSON form.
fn from_json(value: &Value) -> anyhow::Result<pb::EventFilter> {
    use pb::event_filter::Filter as F;
    let Some(object) = value.as_object().filter(|o| o.len() == 1) else {
        bail!("a filter is an object with one of exact, prefix, suffix, all, any, not: {value}");
    };
    let (dialect, inner) = object.iter().next().context("one key")?;
    let values = || -> anyhow::Result<pb::AttributeValues> {
        let map = inner.as_object().with_context(|| format!("{dialect} takes an object of attributes: {inner}"))?;
        let mut values = std::collections::HashMap::new();
        for (k, v) in map {
            let v = v.as_str().with_context(|| format!("{dialect}: the value of {k} must be a string"))?;
            values.insert(k.clone(), v.to_owned());
        }
        Ok(pb::AttributeValues { values })
    };
    let list = || -> anyhow::Result<pb::EventFilters> {
        let items = inner.as_array().with_context(|| format!("{dialect} takes a list of filters: {inner}"))?;
        Ok(pb::EventFilters { filters: items.iter().map(from_json).collect::<anyhow::Result<_>>()? })
    };
    let filter = match dialect.as_str() {
        "exact" => F::Exact(values()?),
        "prefix" => F::Prefix(values()?),
        "suffix" => F::Suffix(values()?),
        "all" => F::All(list()?),
        "any" => F::Any(list()?),
        "not" => F::Not(Box::new(from_json(inner)?)),
        other => bail!("unknown filter dialect {other:?}; use exact, prefix, suffix, all, any or not"),
    };
    Ok(pb::EventFilter { filter: Some(filter) })
}

/// Filters in Knative's JSON form (for `--output json`).
pub fn to_json(filters: &[pb::EventFilter]) -> Value {
    use pb::event_filter::Filter as F;
    Value::Array(
        filters
            .iter()
            .map(|f| match &f.filter {
                Some(F::Exact(a)) => json!({ "exact": a.values }),
                Some(F::Prefix(a)) => json!({ "prefix": a.values }),
                Some(F::Suffix(a)) => json!({ "suffix": a.values }),
                Some(F::All(l)) => json!({ "all": to_json(&l.filters) }),
                Some(F::Any(l)) => json!({ "any": to_json(&l.filters) }),
                Some(F::Not(inner)) => {
                    json!({ "not": to_json(std::slice::from_ref(inner)).as_array().and_then(|a| a.first().cloned()) })
                }
                None => Value::Null,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorthand_and_json_give_the_same_filters() {
        let short = parse("type=order.created").expect("exact");
        let long = parse(r#"{"exact":{"type":"order.created"}}"#).expect("json");
        assert_eq!(short, long);
        let nested =
            parse(r#"{"any":[{"prefix":{"source":"/a"}},{"not":{"suffix":{"subject":".png"}}}]}"#).expect("nested");
        assert_eq!(
            to_json(&[nested]),
            json!([{"any":[{"prefix":{"source":"/a"}},{"not":{"suffix":{"subject":".png"}}}]}])
        );
        assert!(parse("nonsense").is_err());
        assert!(parse(r#"{"regex":{"a":"b"}}"#).is_err());
    }
}
