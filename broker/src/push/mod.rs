//! Push subscriptions: groups whose messages the broker POSTs to an HTTP
//! endpoint as CloudEvents ([`request`]), settling each from the answer
//! ([`outcome`]), through a client that connects only where the broker's
//! allowlist allows ([`allowlist`], [`client`]). One [`dispatcher`] per
//! pushing group, kept in step with the group registry by [`supervise`].

pub mod allowlist;
pub mod client;
pub mod dispatcher;
pub mod outcome;
pub mod request;
pub mod signer;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use allowlist::Allowlist;
pub use client::PushClient;

use crate::group::{GroupHandle, GroupRegistry};

/// How often the supervisor looks at the groups even without a change signal.
const RECHECK: Duration = Duration::from_secs(1);

/// Runs a dispatcher for every group with a push config until `stop`:
/// starts one when a group gets a push config (or is recreated), and stops
/// it when the group goes or stops pushing.
pub async fn supervise(groups: Arc<GroupRegistry>, client: PushClient, stop: CancellationToken) {
    let mut changes = groups.watch_changes();
    let mut running: HashMap<String, (Arc<GroupHandle>, CancellationToken, JoinHandle<()>)> = HashMap::new();
    loop {
        let pushing: HashMap<String, Arc<GroupHandle>> =
            groups.list().into_iter().filter(|g| g.settings().push.is_some()).map(|g| (g.name.clone(), g)).collect();
        running.retain(|name, (handle, token, join)| {
            let keep = !join.is_finished() && pushing.get(name).is_some_and(|g| Arc::ptr_eq(g, handle));
            if !keep {
                token.cancel();
            }
            keep
        });
        for (name, group) in pushing {
            if running.contains_key(&name) {
                continue;
            }
            let token = stop.child_token();
            let dispatcher =
                dispatcher::Dispatcher { group: group.clone(), client: client.clone(), stop: token.clone() };
            running.insert(name, (group, token, tokio::spawn(dispatcher.run())));
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = changes.changed() => {}
            _ = tokio::time::sleep(RECHECK) => {}
        }
    }
    for (_, (_, token, join)) in running {
        token.cancel();
        let _ = join.await;
    }
}
