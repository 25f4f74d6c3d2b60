//! The vote fence of a broker that lost its data.
//!
//! Raft's safety rests on a voter never forgetting a vote it granted or an
//! entry it acknowledged. A broker restarted on an empty data dir of a
//! cluster that exists has forgotten both, yet the other replicas still
//! list it as a voter until `sluice cluster replace` runs: granting a vote
//! then could elect a replica that lacks entries the lost disk helped
//! commit (with one other broker down, that replica and the empty one are
//! a majority). So such a broker refuses every vote and pre-vote request of
//! its groups until the replacement made it a voter of that group again,
//! holding the log; the driver then lifts the fence group by group
//! ([`crate::membership`]). Refusing a vote is always safe (it costs only
//! liveness); the fence is stored, so it survives a restart in the middle
//! of the replacement.
//!
//! A fenced replica does not campaign either (its own vote is one it may
//! have granted to another before), nor does it take a leadership handed to
//! it: its Raft's elections are switched off while fenced
//! ([`Fence::govern`]), its broker refuses transfer-leader requests for it,
//! and leaders ask a target's standing before they hand a shard over.
//!
//! Entries are still accepted while fenced: a leader sends them only from
//! the start of its log (a new leader) or not at all (an old one expects
//! entries the replica lacks and gets refusals), so the replica never holds
//! anything but the group's own committed prefix.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use sluice_storage::raft::{self as keys, GroupId, HardState};
use sluice_storage::{AtomicWrite, Store, WriterHandle};

use crate::codec::{decode, encode, io_error};
use crate::meta::META_GROUP;

/// Which of this broker's groups may not vote yet; shared by the RPC
/// service (which refuses their votes), the set-up at start (which fences)
/// and the replacement driver's admission (which lifts).
#[derive(Clone)]
pub struct Fence {
    writer: WriterHandle,
    state: Arc<Mutex<State>>,
    /// Held across each durable write, which stores the state as it is
    /// then: writes never land out of order.
    writing: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Default)]
struct State {
    /// Stored: groups waiting to be added back.
    fenced: BTreeSet<u64>,
    /// Not yet known whether this broker's empty data dir starts a new
    /// cluster or replaces a lost broker: every group refuses votes until
    /// the set-up decides.
    undecided: bool,
    /// Per group: switches its Raft's elections on or off.
    elections: HashMap<u64, ElectionSwitch>,
}

/// Turns one group's Raft elections on (`true`) or off.
type ElectionSwitch = Box<dyn Fn(bool) + Send + Sync>;

impl State {
    fn is_fenced(&self, group: u64) -> bool {
        self.undecided || self.fenced.contains(&group)
    }

    /// Switches every governed group's elections to match the fence.
    fn apply(&self) {
        for (group, switch) in &self.elections {
            switch(!self.is_fenced(*group));
        }
    }
}

impl Fence {
    /// The fence stored in `store`; `undecided` when the broker's metadata
    /// replica is empty on disk (a new cluster, or a lost disk: not known
    /// yet).
    pub(crate) fn open(store: &Store, writer: WriterHandle, undecided: bool) -> io::Result<Fence> {
        let fenced = match store.raft_hard_state(META_GROUP, HardState::Fenced).map_err(io_error)? {
            Some(bytes) => decode(&bytes, "fenced groups")?,
            None => BTreeSet::new(),
        };
        let state = Arc::new(Mutex::new(State { fenced, undecided, elections: HashMap::new() }));
        Ok(Fence { writer, state, writing: Default::default() })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every change is one assignment or set operation: a panic cannot
        // leave it half done, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `group`'s replica may not vote now.
    pub fn is_fenced(&self, group: GroupId) -> bool {
        self.state().is_fenced(group.0)
    }

    /// Lets the fence switch `group`'s Raft elections (`switch(true)`: on):
    /// off while it is fenced, on once lifted. Switched at once.
    pub(crate) fn govern(&self, group: GroupId, switch: impl Fn(bool) + Send + Sync + 'static) {
        let mut state = self.state();
        switch(!state.is_fenced(group.0));
        state.elections.insert(group.0, Box::new(switch));
    }

    /// Forgets `group`'s election switch (its Raft stopped).
    pub(crate) fn release(&self, group: GroupId) {
        self.state().elections.remove(&group.0);
    }

    /// How many groups are fenced (stored; not counting an undecided start).
    pub fn fenced_groups(&self) -> usize {
        self.state().fenced.len()
    }

    /// Whether this broker waits to be added back to any group.
    pub fn waiting(&self) -> bool {
        let state = self.state();
        state.undecided || !state.fenced.is_empty()
    }

    /// Whether the set-up has decided (or there was nothing to decide): a
    /// broker registers in the catalog only then, since being registered is
    /// how an empty broker learns it ran in the cluster before.
    pub fn decided(&self) -> bool {
        !self.state().undecided
    }

    /// The set-up found a new cluster: nothing to fence.
    pub(crate) fn decided_new(&self) {
        let mut state = self.state();
        state.undecided = false;
        state.apply();
    }

    /// Fences `groups` (durably) until their replacement lifts it.
    pub async fn fence(&self, groups: impl IntoIterator<Item = GroupId>) -> io::Result<()> {
        {
            let mut state = self.state();
            state.fenced.extend(groups.into_iter().map(|g| g.0));
            state.undecided = false;
            state.apply();
        }
        self.store().await
    }

    /// Lets `group` vote again (durably): its replacement made this broker
    /// a voter holding the log. A no-op for a group not fenced.
    pub async fn lift(&self, group: GroupId) -> io::Result<()> {
        {
            let mut state = self.state();
            if !state.fenced.remove(&group.0) {
                return Ok(());
            }
            state.apply();
        }
        tracing::info!(group = group.0, "replaced: this broker's replica votes again");
        self.store().await
    }

    async fn store(&self) -> io::Result<()> {
        let _writing = self.writing.lock().await;
        let fenced = self.state().fenced.clone();
        let mut write = AtomicWrite::new();
        if fenced.is_empty() {
            keys::delete_hard_state(&mut write, META_GROUP, HardState::Fenced);
        } else {
            keys::put_hard_state(&mut write, META_GROUP, HardState::Fenced, encode(&fenced)?);
        }
        self.writer.write(write).await.map_err(io_error)
    }
}
