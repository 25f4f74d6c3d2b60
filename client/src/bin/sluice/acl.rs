//! `sluice acl add|list|remove`: the permission rules that say who may
//! produce, consume, describe, alter or administer which topics, groups,
//! schedules, and the cluster.

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use sluice_client::proto as pb;
use sluice_client::Admin;

#[derive(Subcommand)]
pub enum AclCommand {
    /// Add a rule (one per operation named): `sluice acl add principal:alice produce,consume topic 'orders.*'`.
    Add(AddArgs),
    /// List the rules (of one subject with --subject).
    List {
        /// Only the rules of this subject, e.g. principal:alice.
        #[arg(long)]
        subject: Option<String>,
    },
    /// Remove rules by id (see `sluice acl list`).
    Remove {
        /// The rules' ids.
        #[arg(required = true)]
        ids: Vec<u64>,
    },
}

#[derive(Args)]
pub struct AddArgs {
    /// Who: principal:NAME, role:NAME, or principal:* (every authenticated principal).
    subject: String,
    /// What, comma-separated: produce, consume, describe, alter, admin, all.
    operations: String,
    /// The kind of resource: cluster, topic, group or schedule.
    resource: String,
    /// Which: a name, a prefix ending in `*` (orders.*), or `*` for all [default: *].
    #[arg(default_value = "*")]
    pattern: String,
    /// Deny instead of allow (a matching deny wins over every allow).
    #[arg(long)]
    deny: bool,
}

fn operation(name: &str) -> anyhow::Result<pb::AclOperation> {
    Ok(match name.trim() {
        "produce" => pb::AclOperation::Produce,
        "consume" => pb::AclOperation::Consume,
        "describe" => pb::AclOperation::Describe,
        "alter" => pb::AclOperation::Alter,
        "admin" => pb::AclOperation::Admin,
        "all" => pb::AclOperation::All,
        other => bail!("unknown operation {other:?}: use produce, consume, describe, alter, admin or all"),
    })
}

fn resource(name: &str) -> anyhow::Result<pb::AclResource> {
    Ok(match name {
        "cluster" => pb::AclResource::Cluster,
        "topic" => pb::AclResource::Topic,
        "group" => pb::AclResource::Group,
        "schedule" => pb::AclResource::Schedule,
        other => bail!("unknown resource {other:?}: use cluster, topic, group or schedule"),
    })
}

/// The lower-case name of a protobuf enum value (`ACL_OPERATION_PRODUCE` → `produce`).
fn word(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_lowercase()
}

/// A rule as `--output json` prints it.
pub fn to_json(r: &pb::AclRule) -> Value {
    let operation =
        pb::AclOperation::try_from(r.operation).map_or("?".into(), |o| word(o.as_str_name(), "ACL_OPERATION_"));
    let resource = pb::AclResource::try_from(r.resource).map_or("?".into(), |k| word(k.as_str_name(), "ACL_RESOURCE_"));
    let effect = if r.effect == pb::AclEffect::Deny as i32 { "deny" } else { "allow" };
    json!({
        "id": r.id, "effect": effect, "subject": r.subject, "operation": operation,
        "resource": resource, "pattern": r.pattern, "created_ms": r.created_ms,
    })
}

fn line(r: &pb::AclRule) -> String {
    let v = to_json(r);
    let text = |k: &str| v[k].as_str().unwrap_or("?").to_owned();
    format!("{}\t{}\t{}\t{}\t{}\t{}", r.id, text("effect"), r.subject, text("operation"), text("resource"), r.pattern)
}

/// Runs `sluice acl …`.
pub async fn run(admin: Admin, cmd: AclCommand, format: super::Format) -> anyhow::Result<()> {
    let json = format == super::Format::Json;
    match cmd {
        AclCommand::Add(args) => {
            let kind = resource(&args.resource)?;
            let effect = if args.deny { pb::AclEffect::Deny } else { pb::AclEffect::Allow };
            let mut added = Vec::new();
            for name in args.operations.split(',') {
                let rule = pb::AclRule {
                    subject: args.subject.clone(),
                    resource: kind as i32,
                    pattern: args.pattern.clone(),
                    operation: operation(name)? as i32,
                    effect: effect as i32,
                    ..Default::default()
                };
                let answer = admin.add_acl(rule).await?;
                added.push((answer.rule.unwrap_or_default(), answer.created));
            }
            if json {
                super::output::print(Value::Array(added.iter().map(|(r, _)| to_json(r)).collect()))?;
            } else {
                for (r, created) in &added {
                    outln!("{} rule {}", if *created { "added" } else { "already present:" }, line(r))?;
                }
            }
        }
        AclCommand::List { subject } => {
            let rules = admin.list_acls(subject.as_deref().unwrap_or("")).await?;
            if json {
                super::output::print(Value::Array(rules.iter().map(to_json).collect()))?;
            } else {
                outln!("ID\tEFFECT\tSUBJECT\tOPERATION\tRESOURCE\tPATTERN")?;
                for r in &rules {
                    outln!("{}", line(r))?;
                }
            }
        }
        AclCommand::Remove { ids } => {
            for id in ids {
                admin.remove_acl(id).await?;
                outln!("removed rule {id}")?;
            }
        }
    }
    Ok(())
}
