//! What a caller may do: every entry point asks here, after it has decoded
//! which resource a request names and before it looks the resource up.
//! A door ([`super::grpc`], the HTTP gateway, the metrics endpoint) puts a
//! [`Caller`] in each request; a service turns it into a [`Guard`] and
//! checks the operation its row in [`super::methods`] names, plus the
//! further rights a few methods need (consuming needs the group and its
//! topic; a redrive reads the dead-letter topic and writes the target).
//!
//! With authentication off every check passes. With it on, superusers
//! (from the configuration) may do everything; anyone else what the
//! permission rules allow ([`super::acl`]). A refusal is `PERMISSION_DENIED`
//! naming the principal, the operation and the resource as asked, whether
//! or not it exists.
//!
//! Audit: every refusal, and every alter or admin operation let through,
//! is logged under the `sluice::audit` target with principal, method,
//! resource and operation as fields (JSON with `log-format = "json"`) and
//! counted in metrics.

use std::sync::Arc;

use super::acl::Subject;
use super::methods::{Access, Operation, ResourceKind};
use super::rules::AclRegistry;
use super::Principal;
use crate::error::{Error, Result};

/// Who calls, through which entry point: put in each request's extensions
/// by the door that authenticated it.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The authenticated principal.
    pub principal: Arc<Principal>,
    /// The entry point (gRPC path or HTTP route), for the audit log.
    pub method: &'static str,
    /// Its row in [`super::methods`].
    pub access: Access,
}

/// Decides what callers may do; one per broker.
pub struct Permissions {
    enabled: bool,
    superusers: Vec<Subject>,
    rules: AclRegistry,
}

impl std::fmt::Debug for Permissions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permissions").field("enabled", &self.enabled).finish_non_exhaustive()
    }
}

impl Permissions {
    /// Checks on (`enabled`: authentication is on) or off; `superusers`
    /// may do everything; everyone else what `rules` allow.
    pub fn new(enabled: bool, superusers: Vec<Subject>, rules: AclRegistry) -> Permissions {
        Permissions { enabled, superusers, rules }
    }

    /// The permission rules.
    pub fn rules(&self) -> &AclRegistry {
        &self.rules
    }

    /// The guard for the request whose extensions are `extensions`. A
    /// request without a [`Caller`] (none of the doors') is nobody's: with
    /// checks on it may do nothing.
    pub fn guard(self: &Arc<Self>, extensions: &tonic::Extensions) -> Guard {
        self.guard_for(extensions.get::<Caller>().cloned())
    }

    /// The guard for `caller`.
    pub fn guard_for(self: &Arc<Self>, caller: Option<Caller>) -> Guard {
        let caller = caller.unwrap_or_else(|| Caller {
            principal: Arc::new(Principal { name: "(none)".into(), roles: Vec::new() }),
            method: "(internal)",
            access: Access::Anonymous,
        });
        let unchecked = !self.enabled
            || caller.principal.name == super::BROKER_PRINCIPAL
            || self.superusers.iter().any(|s| s.covers(&caller.principal));
        Guard { caller, perms: (!unchecked).then(|| self.clone()) }
    }
}

#[derive(Clone)]
/// One request's (or stream's) caller; each check reads the rules in
/// force at that moment, so a rule removed stops an open stream's next
/// request.
pub struct Guard {
    caller: Caller,
    /// `None`: everything is allowed (checks off, or a superuser).
    perms: Option<Arc<Permissions>>,
}

impl Guard {
    /// The caller.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// Checks the operation this entry point's row names, on the resource
    /// named `name` (`""` for the cluster).
    pub fn require(&self, name: &str) -> Result<()> {
        match self.caller.access {
            Access::Checked(kind, op) => self.check(kind, name, op),
            // Health checks name no resource; the others filter what they answer.
            Access::Anonymous | Access::Authenticated => Ok(()),
        }
    }

    /// Checks that the caller may perform `op` on the resource of `kind`
    /// named `name`; an alter or admin operation let through is audited.
    pub fn check(&self, kind: ResourceKind, name: &str, op: Operation) -> Result<()> {
        if !self.allows(kind, name, op) {
            return Err(self.deny(kind, name, op));
        }
        if matches!(op, Operation::Alter | Operation::Admin) {
            metrics::counter!(crate::metrics::AUDITED_OPERATIONS, "operation" => op.label()).increment(1);
            tracing::info!(
                target: "sluice::audit",
                decision = "allowed",
                principal = %self.caller.principal.name,
                method = self.caller.method,
                resource = kind.label(),
                name,
                operation = op.label(),
                "audit"
            );
        }
        Ok(())
    }

    /// Whether the caller may perform `op` on `kind` `name`, without a
    /// refusal or an audit record: for filtering lists.
    pub fn allows(&self, kind: ResourceKind, name: &str, op: Operation) -> bool {
        match &self.perms {
            None => true,
            Some(perms) => perms.rules.rules().allows(&self.caller.principal, kind, name, op),
        }
    }

    fn deny(&self, kind: ResourceKind, name: &str, op: Operation) -> Error {
        let principal = &self.caller.principal.name;
        metrics::counter!(crate::metrics::PERMISSION_DENIALS, "resource" => kind.label(), "operation" => op.label())
            .increment(1);
        tracing::warn!(
            target: "sluice::audit",
            decision = "denied",
            principal = %principal,
            method = self.caller.method,
            resource = kind.label(),
            name,
            operation = op.label(),
            "audit"
        );
        let resource = match kind {
            ResourceKind::Cluster => "the cluster".to_owned(),
            _ => format!("{} `{name}`", kind.label()),
        };
        Error::PermissionDenied(format!(
            "principal `{principal}` may not {} {resource}: no permission rule allows it, or one denies it \
             (an administrator grants it with `sluice acl add`)",
            op.label()
        ))
    }
}
