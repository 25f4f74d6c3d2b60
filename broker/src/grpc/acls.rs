//! The permission-rule half of `sluice.v1.Admin`: rules to and from their
//! protobuf form.

use sluice_proto::v1 as pb;

use crate::auth::acl::{Effect, Pattern, Rule, RuleOperation, Subject};
use crate::auth::methods::{Operation, ResourceKind};
use crate::auth::rules::AclEntry;
use crate::error::{Error, Result};

/// The rule an AddAcl request names.
pub fn rule_of(rule: Option<&pb::AclRule>) -> Result<Rule> {
    let r = rule.ok_or_else(|| Error::invalid("rule", "name the rule to add"))?;
    let subject = Subject::parse(&r.subject).map_err(|e| Error::invalid("rule.subject", e))?;
    let resource = match pb::AclResource::try_from(r.resource) {
        Ok(pb::AclResource::Cluster) => ResourceKind::Cluster,
        Ok(pb::AclResource::Topic) => ResourceKind::Topic,
        Ok(pb::AclResource::Group) => ResourceKind::Group,
        Ok(pb::AclResource::Schedule) => ResourceKind::Schedule,
        _ => return Err(Error::invalid("rule.resource", "set one of CLUSTER, TOPIC, GROUP, SCHEDULE")),
    };
    let pattern = Pattern::parse(&r.pattern).map_err(|e| Error::invalid("rule.pattern", e))?;
    let operation = match pb::AclOperation::try_from(r.operation) {
        Ok(pb::AclOperation::Produce) => RuleOperation::One(Operation::Produce),
        Ok(pb::AclOperation::Consume) => RuleOperation::One(Operation::Consume),
        Ok(pb::AclOperation::Describe) => RuleOperation::One(Operation::Describe),
        Ok(pb::AclOperation::Alter) => RuleOperation::One(Operation::Alter),
        Ok(pb::AclOperation::Admin) => RuleOperation::One(Operation::Admin),
        Ok(pb::AclOperation::All) => RuleOperation::All,
        _ => return Err(Error::invalid("rule.operation", "set one of PRODUCE, CONSUME, DESCRIBE, ALTER, ADMIN, ALL")),
    };
    let effect = match pb::AclEffect::try_from(r.effect) {
        Ok(pb::AclEffect::Unspecified | pb::AclEffect::Allow) => Effect::Allow,
        Ok(pb::AclEffect::Deny) => Effect::Deny,
        Err(_) => return Err(Error::invalid("rule.effect", "ALLOW or DENY")),
    };
    let rule = Rule { subject, resource, pattern, operation, effect };
    rule.check()?;
    Ok(rule)
}

/// The protobuf form of a stored rule.
pub fn entry_to_pb(entry: &AclEntry) -> pb::AclRule {
    let r = &entry.rule;
    let resource = match r.resource {
        ResourceKind::Cluster => pb::AclResource::Cluster,
        ResourceKind::Topic => pb::AclResource::Topic,
        ResourceKind::Group => pb::AclResource::Group,
        ResourceKind::Schedule => pb::AclResource::Schedule,
    };
    let operation = match r.operation {
        RuleOperation::All => pb::AclOperation::All,
        RuleOperation::One(Operation::Produce) => pb::AclOperation::Produce,
        RuleOperation::One(Operation::Consume) => pb::AclOperation::Consume,
        RuleOperation::One(Operation::Describe) => pb::AclOperation::Describe,
        RuleOperation::One(Operation::Alter) => pb::AclOperation::Alter,
        RuleOperation::One(Operation::Admin) => pb::AclOperation::Admin,
    };
    let effect = match r.effect {
        Effect::Allow => pb::AclEffect::Allow,
        Effect::Deny => pb::AclEffect::Deny,
    };
    pb::AclRule {
        id: entry.id,
        subject: r.subject.to_string(),
        resource: resource as i32,
        pattern: r.pattern.to_string(),
        operation: operation as i32,
        effect: effect as i32,
        created_ms: entry.created_ms,
    }
}

/// The subject a ListAcls request filters on (`None`: all rules).
pub fn subject_filter(text: &str) -> Result<Option<Subject>> {
    if text.is_empty() {
        return Ok(None);
    }
    Subject::parse(text).map(Some).map_err(|e| Error::invalid("subject", e))
}
