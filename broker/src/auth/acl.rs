//! Permission rules and how they decide: a rule says that a subject (a
//! principal, a role, or every authenticated principal) may, or may not,
//! perform an operation on the resources of one kind whose names match a
//! pattern (a literal name, or a prefix).
//!
//! # Correctness
//! - A matching deny wins over every allow; nothing matching denies.
//! - Allowing produce, consume or alter on a resource also allows describe
//!   on it (a producer may see the topic it writes to), unless describe is
//!   denied there: the describe right is never wider than what is granted.
//! - Rules name resources, not their existence: a decision is the same for
//!   a resource that exists and one that does not, so a refusal reveals
//!   nothing about what exists.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::methods::{Operation, ResourceKind};
use super::Principal;
use crate::error::{Error, Result};

/// Who a rule is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Subject {
    /// One principal, by name.
    Principal(String),
    /// Every principal whose credentials grant this role.
    Role(String),
    /// Every authenticated principal (`principal:*`).
    Anyone,
}

impl Subject {
    /// Parses `principal:<name>`, `role:<name>` or `principal:*`.
    pub fn parse(text: &str) -> std::result::Result<Subject, String> {
        let invalid =
            |why: &str| format!("subject `{text}`: {why}; write principal:<name>, role:<name> or principal:*");
        let (kind, name) = text.split_once(':').ok_or_else(|| invalid("no kind"))?;
        if name.is_empty() || name.len() > 256 || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(invalid("the name must be 1-256 visible characters"));
        }
        match (kind, name) {
            ("principal", "*") => Ok(Subject::Anyone),
            ("principal", _) => Ok(Subject::Principal(name.to_owned())),
            ("role", "*") => Err(invalid("roles have no wildcard")),
            ("role", _) => Ok(Subject::Role(name.to_owned())),
            _ => Err(invalid("unknown kind")),
        }
    }

    /// Whether `principal` is this subject.
    pub fn covers(&self, principal: &Principal) -> bool {
        match self {
            Subject::Principal(name) => principal.name == *name,
            Subject::Role(role) => principal.roles.iter().any(|r| r == role),
            Subject::Anyone => true,
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Principal(name) => write!(f, "principal:{name}"),
            Subject::Role(role) => write!(f, "role:{role}"),
            Subject::Anyone => f.write_str("principal:*"),
        }
    }
}

impl TryFrom<String> for Subject {
    type Error = String;
    fn try_from(text: String) -> std::result::Result<Subject, String> {
        Subject::parse(&text)
    }
}

impl From<Subject> for String {
    fn from(s: Subject) -> String {
        s.to_string()
    }
}

/// Which names of a kind a rule covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Pattern {
    /// Exactly this name.
    Literal(String),
    /// Every name starting with this (`orders.*` → `orders.`; `*` → every name).
    Prefix(String),
}

impl Pattern {
    /// Parses a literal name, or a prefix ending in `*`.
    pub fn parse(text: &str) -> std::result::Result<Pattern, String> {
        let checked = |name: &str| {
            crate::name::check("pattern", name).map_err(|e| format!("pattern `{text}`: {e}"))?;
            Ok::<String, String>(name.to_owned())
        };
        match text.strip_suffix('*') {
            Some("") => Ok(Pattern::Prefix(String::new())),
            Some(prefix) if prefix.contains('*') => {
                Err(format!("pattern `{text}`: `*` may only end a pattern (a prefix)"))
            }
            Some(prefix) => Ok(Pattern::Prefix(checked(prefix)?)),
            None if text.contains('*') => Err(format!("pattern `{text}`: `*` may only end a pattern (a prefix)")),
            None => Ok(Pattern::Literal(checked(text)?)),
        }
    }

    /// Whether `name` matches.
    pub fn covers(&self, name: &str) -> bool {
        match self {
            Pattern::Literal(literal) => literal == name,
            Pattern::Prefix(prefix) => name.starts_with(prefix.as_str()),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Literal(name) => f.write_str(name),
            Pattern::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

impl TryFrom<String> for Pattern {
    type Error = String;
    fn try_from(text: String) -> std::result::Result<Pattern, String> {
        Pattern::parse(&text)
    }
}

impl From<Pattern> for String {
    fn from(p: Pattern) -> String {
        p.to_string()
    }
}

/// The operation a rule is about: one, or all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleOperation {
    /// Every operation.
    All,
    /// One operation (written as its name).
    #[serde(untagged)]
    One(Operation),
}

impl RuleOperation {
    /// Whether the rule speaks of `op` itself.
    fn names(self, op: Operation) -> bool {
        match self {
            RuleOperation::All => true,
            RuleOperation::One(o) => o == op,
        }
    }

    /// Whether allowing this allows `op`: itself, or describe through a
    /// right that needs to see the resource.
    fn grants(self, op: Operation) -> bool {
        self.names(op)
            || (op == Operation::Describe
                && matches!(self, RuleOperation::One(Operation::Produce | Operation::Consume | Operation::Alter)))
    }
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Effect {
    /// Grants the operation.
    Allow,
    /// Refuses it, whatever else allows it.
    Deny,
}

/// One permission rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Rule {
    /// Who it is about.
    pub subject: Subject,
    /// The kind of resource.
    pub resource: ResourceKind,
    /// Which resources of that kind (for the cluster: `*`).
    pub pattern: Pattern,
    /// What it allows or denies.
    pub operation: RuleOperation,
    /// Allow or deny.
    pub effect: Effect,
}

impl Rule {
    /// Checks what one rule alone can get wrong: the cluster is one
    /// resource, so its pattern is `*`.
    pub fn check(&self) -> Result<()> {
        if self.resource == ResourceKind::Cluster && self.pattern != Pattern::Prefix(String::new()) {
            return Err(Error::invalid("rule.pattern", "the cluster is one resource: use the pattern `*`"));
        }
        Ok(())
    }

    fn covers(&self, principal: &Principal, kind: ResourceKind, name: &str) -> bool {
        self.resource == kind && self.pattern.covers(name) && self.subject.covers(principal)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let effect = match self.effect {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        };
        let operation = match self.operation {
            RuleOperation::All => "all",
            RuleOperation::One(op) => op.label(),
        };
        write!(f, "{effect} {} {operation} on {} {}", self.subject, self.resource.label(), self.pattern)
    }
}

/// A set of rules with their ids, ready to decide.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<(u64, Rule)>,
}

impl Rules {
    /// The rules `rules`.
    pub fn new(rules: Vec<(u64, Rule)>) -> Rules {
        Rules { rules }
    }

    /// Every rule, by id.
    pub fn iter(&self) -> impl Iterator<Item = &(u64, Rule)> {
        self.rules.iter()
    }

    /// Whether `principal` may perform `op` on the resource of `kind`
    /// named `name` (`""` for the cluster): some rule grants it and no
    /// rule denies it.
    pub fn allows(&self, principal: &Principal, kind: ResourceKind, name: &str, op: Operation) -> bool {
        let mut allowed = false;
        for (_, rule) in self.rules.iter().filter(|(_, r)| r.covers(principal, kind, name)) {
            match rule.effect {
                Effect::Deny if rule.operation.names(op) => return false,
                Effect::Allow if rule.operation.grants(op) => allowed = true,
                _ => {}
            }
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Operation::{Admin, Alter, Consume, Describe, Produce};
    use ResourceKind::{Cluster, Group, Topic};

    fn rule(text: &str) -> Rule {
        // "allow principal:alice produce topic orders.*"
        let words: Vec<&str> = text.split(' ').collect();
        let operation = match words[2] {
            "all" => RuleOperation::All,
            op => RuleOperation::One(serde_json::from_value(serde_json::json!(op)).expect("operation")),
        };
        Rule {
            effect: if words[0] == "allow" { Effect::Allow } else { Effect::Deny },
            subject: Subject::parse(words[1]).expect("subject"),
            operation,
            resource: serde_json::from_value(serde_json::json!(words[3])).expect("kind"),
            pattern: Pattern::parse(words[4]).expect("pattern"),
        }
    }

    fn rules(texts: &[&str]) -> Rules {
        Rules::new(texts.iter().enumerate().map(|(i, t)| (i as u64, rule(t))).collect())
    }

    fn alice() -> Principal {
        Principal { name: "alice".into(), roles: vec!["writers".into()] }
    }

    #[test]
    fn nothing_is_allowed_without_a_rule() {
        let none = rules(&[]);
        for op in [Produce, Consume, Describe, Alter, Admin] {
            assert!(!none.allows(&alice(), Topic, "orders", op));
        }
        let bob = rules(&["allow principal:bob all topic *"]);
        assert!(!bob.allows(&alice(), Topic, "orders", Produce), "another principal's rule");
    }

    #[test]
    fn literal_and_prefix_patterns_subjects_and_roles() {
        let r = rules(&["allow principal:alice produce topic orders", "allow role:writers consume topic logs.*"]);
        assert!(r.allows(&alice(), Topic, "orders", Produce));
        assert!(!r.allows(&alice(), Topic, "orders2", Produce), "a literal is the whole name");
        assert!(!r.allows(&alice(), Group, "orders", Produce), "another kind");
        assert!(r.allows(&alice(), Topic, "logs.app", Consume), "through the role, by prefix");
        assert!(!r.allows(&alice(), Topic, "logs", Consume), "the prefix is `logs.`");
        let anyone = rules(&["allow principal:* describe cluster *"]);
        assert!(anyone.allows(&Principal { name: "x".into(), roles: vec![] }, Cluster, "", Describe));
    }

    #[test]
    fn deny_wins_and_describe_follows_other_rights() {
        let r = rules(&["allow principal:alice all topic *", "deny role:writers produce topic secret.*"]);
        assert!(r.allows(&alice(), Topic, "public", Produce));
        assert!(!r.allows(&alice(), Topic, "secret.keys", Produce), "deny wins");
        assert!(r.allows(&alice(), Topic, "secret.keys", Consume), "the deny is of produce only");
        let p = rules(&["allow principal:alice produce topic orders"]);
        assert!(p.allows(&alice(), Topic, "orders", Describe), "a producer may see its topic");
        assert!(!p.allows(&alice(), Topic, "orders", Consume));
        let hidden = rules(&["allow principal:alice produce topic orders", "deny principal:alice describe topic *"]);
        assert!(!hidden.allows(&alice(), Topic, "orders", Describe));
        assert!(hidden.allows(&alice(), Topic, "orders", Produce));
        let admin = rules(&["allow principal:alice admin cluster *"]);
        assert!(!admin.allows(&alice(), Cluster, "", Describe), "admin does not imply describe");
    }

    #[test]
    fn texts_parse_and_print_the_same() {
        for text in ["principal:alice", "role:ops", "principal:*"] {
            assert_eq!(Subject::parse(text).expect(text).to_string(), text);
        }
        for text in ["orders", "orders.*", "*"] {
            assert_eq!(Pattern::parse(text).expect(text).to_string(), text);
        }
        for bad in ["alice", "role:*", "team:x", "principal:", "principal:a b"] {
            assert!(Subject::parse(bad).is_err(), "{bad}");
        }
        for bad in ["a*b", "**", "or ders", ""] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
        let r = rule("deny role:ops all topic orders.*");
        let json = serde_json::to_value(&r).expect("encode");
        assert_eq!(
            json,
            serde_json::json!({"subject": "role:ops", "resource": "topic", "pattern": "orders.*",
                "operation": "all", "effect": "deny"})
        );
        assert_eq!(serde_json::from_value::<Rule>(json).expect("decode"), r);
        let one = serde_json::to_value(rule("allow principal:a produce topic t")).expect("encode");
        assert_eq!(one["operation"], "produce");
        assert!(rule("allow principal:a describe cluster orders").check().is_err());
        assert_eq!(r.to_string(), "deny role:ops all on topic orders.*");
    }
}
