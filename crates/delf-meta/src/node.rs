//! The Raft driver: one thread owns the `RawNode` and runs the loop raft-rs expects (tick every `meta.tick_ms`,
//! step incoming messages, then handle the Ready: send, install snapshots, apply committed entries, persist
//! entries and hard state with fsync before sending what depends on them, advance). Everything else talks to it
//! through [`RaftHandle`]: proposals (leader only; the service forwards), read index, membership changes.
//! It takes a snapshot every `meta.snapshot_every` applied entries and drops the log it covers.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, Entry, EntryType};
use raft::{RawNode, SnapshotStatus, StateRole};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::MetaConfig;
use crate::error::MetaError;
use crate::handle::{RaftHandle, RaftView, Reply, Request, Shared};
use crate::state::{Applied, Command, MetaState};
use crate::storage::DiskStorage;
use crate::transport::Transport;

/// Entry payload of a proposal: the command and who is waiting for it.
#[derive(Serialize, Deserialize)]
struct Proposal {
    id: u64,
    command: Command,
}

/// Context of a membership change entry.
#[derive(Serialize, Deserialize)]
struct MemberChange {
    id: u64,
    address: String,
}

/// Opens (or bootstraps) the Raft state in `dir` and starts the driver thread. The transport is built by
/// `transport` from the handle (it reports snapshot outcomes back).
pub fn start(
    cfg: &MetaConfig,
    dir: &Path,
    transport: impl FnOnce(RaftHandle) -> Arc<Transport>,
) -> Result<RaftHandle, MetaError> {
    cfg.validate_for_coordinator()?;
    let (mut storage, existed) = DiskStorage::open(dir)?;
    if !existed && !cfg.join {
        let initial = MetaState { coordinators: cfg.peers(), ..MetaState::default() };
        let voters = cfg.coordinators.iter().map(|p| p.id).collect();
        storage.bootstrap(voters, serde_json::to_vec(&initial).map_err(|e| MetaError::Config(e.to_string()))?)?;
        tracing::info!(id = cfg.id, dir = %dir.display(), "bootstrapped a new Raft group");
    }
    let snap = storage.snapshot_ref().clone();
    let state: Arc<MetaState> = Arc::new(if snap.data.is_empty() {
        MetaState::default()
    } else {
        serde_json::from_slice(&snap.data)
            .map_err(|e| MetaError::Corrupt { path: dir.join("snapshot.bin"), reason: format!("state machine: {e}") })?
    });
    let applied = snap.get_metadata().index;
    let raft_config = raft::Config {
        id: cfg.id,
        election_tick: cfg.election_ticks,
        heartbeat_tick: cfg.heartbeat_ticks,
        applied,
        check_quorum: true,
        pre_vote: true,
        max_size_per_msg: 1 << 20,
        max_inflight_msgs: 256,
        ..raft::Config::default()
    };
    raft_config.validate()?;
    let node = RawNode::new(&raft_config, storage, &crate::logger::raft_logger(cfg.id))?;
    let (tx, rx) = std::sync::mpsc::channel();
    let (applied_tx, _) = watch::channel(applied);
    let shared = Arc::new(Shared {
        state: RwLock::new((Arc::clone(&state), applied)),
        view: RwLock::new(RaftView { id: cfg.id, ..RaftView::default() }),
        applied: applied_tx,
    });
    let (stop_tx, stopped) = watch::channel(None);
    let handle = RaftHandle { tx, shared: Arc::clone(&shared), stopped };
    let transport = transport(handle.clone());
    transport.learn(&state.coordinators);
    let mut driver = Driver {
        node,
        transport,
        shared,
        state,
        applied,
        tick: Duration::from_millis(cfg.tick_ms),
        timeout: cfg.request_timeout(),
        snapshot_every: cfg.snapshot_every,
        proposals: HashMap::new(),
        members: HashMap::new(),
        reads: HashMap::new(),
        next_id: delf_core::rng::SplitMix64(cfg.id ^ now_nanos()),
        snapshot_now: false,
    };
    driver.publish();
    std::thread::Builder::new()
        .name(format!("raft-{}", cfg.id))
        .spawn(move || {
            let outcome = driver.run(&rx);
            let reason = match outcome {
                Ok(()) => "the raft thread stopped".to_string(),
                Err(e) => {
                    tracing::error!(error = %e, "the raft thread failed; this coordinator must stop");
                    e.to_string()
                }
            };
            driver.fail_all(|| MetaError::Stopped);
            let _ = stop_tx.send(Some(reason));
        })
        .map_err(|source| MetaError::Io { path: dir.to_path_buf(), source })?;
    Ok(handle)
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

struct Driver {
    node: RawNode<DiskStorage>,
    transport: Arc<Transport>,
    shared: Arc<Shared>,
    /// Copy-on-write: published to readers as is, copied by `Arc::make_mut` only when a reader still holds it.
    state: Arc<MetaState>,
    applied: u64,
    tick: Duration,
    timeout: Duration,
    snapshot_every: u64,
    proposals: HashMap<u64, (Reply<(u64, Applied)>, Instant)>,
    members: HashMap<u64, (Reply<Vec<u64>>, Instant)>,
    reads: HashMap<Vec<u8>, (Reply<u64>, Instant)>,
    next_id: delf_core::rng::SplitMix64,
    /// Take a snapshot after this Ready (the voters changed).
    snapshot_now: bool,
}

fn role_name(r: StateRole) -> &'static str {
    match r {
        StateRole::Leader => "leader",
        StateRole::Follower => "follower",
        StateRole::Candidate => "candidate",
        StateRole::PreCandidate => "pre-candidate",
    }
}

impl Driver {
    fn run(&mut self, rx: &Receiver<Request>) -> Result<(), MetaError> {
        let mut last_tick = Instant::now();
        let mut was_leader = false;
        loop {
            match rx.recv_timeout(self.tick.saturating_sub(last_tick.elapsed())) {
                Ok(r) => {
                    self.handle(r)?;
                    // Take what else is queued before the next Ready (batches appends and fsyncs).
                    for r in rx.try_iter().take(1024) {
                        self.handle(r)?;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            if last_tick.elapsed() >= self.tick {
                self.node.tick();
                last_tick = Instant::now();
                self.expire();
            }
            self.on_ready()?;
            let leader = self.node.raft.state == StateRole::Leader;
            if was_leader && !leader {
                // Proposals still pending may or may not commit under the next leader.
                self.fail_all(|| MetaError::Unknown);
            }
            was_leader = leader;
            self.publish_view();
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id.next_u64()
    }

    fn not_leader(&self) -> Option<MetaError> {
        if self.node.raft.state == StateRole::Leader {
            return None;
        }
        let leader = self.node.raft.leader_id;
        Some(MetaError::NotLeader((leader != raft::INVALID_ID).then_some(leader)))
    }

    fn handle(&mut self, r: Request) -> Result<(), MetaError> {
        match r {
            Request::Raft(m) => {
                if let Err(e) = self.node.step(*m) {
                    tracing::debug!(error = %e, "raft message ignored");
                }
            }
            Request::Propose(command, reply) => {
                if let Some(e) = self.not_leader() {
                    let _ = reply.send(Err(e));
                    return Ok(());
                }
                let id = self.id();
                let data =
                    serde_json::to_vec(&Proposal { id, command }).map_err(|e| MetaError::Config(e.to_string()))?;
                match self.node.propose(Vec::new(), data) {
                    Ok(()) => {
                        self.proposals.insert(id, (reply, Instant::now()));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Request::ReadIndex(reply) => {
                if self.node.raft.leader_id == raft::INVALID_ID {
                    let _ = reply.send(Err(MetaError::NotLeader(None)));
                    return Ok(());
                }
                let ctx = self.id().to_le_bytes().to_vec();
                self.node.read_index(ctx.clone());
                self.reads.insert(ctx, (reply, Instant::now()));
            }
            Request::ChangeMembers { id, address, remove, reply } => {
                if let Some(e) = self.not_leader() {
                    let _ = reply.send(Err(e));
                    return Ok(());
                }
                let token = self.id();
                let mut cc = ConfChange { node_id: id, ..ConfChange::default() };
                cc.set_change_type(if remove { ConfChangeType::RemoveNode } else { ConfChangeType::AddNode });
                let ctx = serde_json::to_vec(&MemberChange { id: token, address })
                    .map_err(|e| MetaError::Config(e.to_string()))?;
                cc.context = ctx.into();
                match self.node.propose_conf_change(Vec::new(), cc) {
                    Ok(()) => {
                        self.members.insert(token, (reply, Instant::now()));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Request::ReportSnapshot { to, ok } => {
                let status = if ok { SnapshotStatus::Finish } else { SnapshotStatus::Failure };
                self.node.report_snapshot(to, status);
            }
            Request::Unreachable(to) => self.node.report_unreachable(to),
        }
        Ok(())
    }

    /// Answers requests that waited longer than the request timeout (e.g. a membership change raft-rs dropped
    /// because another was pending, or a read index no leader answered).
    fn expire(&mut self) {
        let t = self.timeout;
        let late = |since: &Instant| since.elapsed() > t;
        let msg = || MetaError::Timeout("no outcome within the request timeout".into());
        for (_, (reply, _)) in self.proposals.extract_if(|_, (_, since)| late(since)) {
            let _ = reply.send(Err(msg()));
        }
        for (_, (reply, _)) in self.members.extract_if(|_, (_, since)| late(since)) {
            let _ = reply.send(Err(msg()));
        }
        for (_, (reply, _)) in self.reads.extract_if(|_, (_, since)| late(since)) {
            let _ = reply.send(Err(msg()));
        }
    }

    fn fail_all(&mut self, e: impl Fn() -> MetaError) {
        for (_, (reply, _)) in self.proposals.drain() {
            let _ = reply.send(Err(e()));
        }
        for (_, (reply, _)) in self.members.drain() {
            let _ = reply.send(Err(e()));
        }
        for (_, (reply, _)) in self.reads.drain() {
            let _ = reply.send(Err(e()));
        }
    }

    fn on_ready(&mut self) -> Result<(), MetaError> {
        if !self.node.has_ready() {
            return Ok(());
        }
        let mut ready = self.node.ready();
        if !ready.messages().is_empty() {
            self.transport.send(ready.take_messages());
        }
        if !ready.snapshot().is_empty() {
            let snap = ready.snapshot().clone();
            let state: MetaState = serde_json::from_slice(&snap.data)
                .map_err(|e| MetaError::Corrupt { path: "snapshot from the leader".into(), reason: e.to_string() })?;
            let index = snap.get_metadata().index;
            self.node.mut_store().install_snapshot(snap)?;
            tracing::info!(index, "installed a snapshot from the leader");
            self.state = Arc::new(state);
            self.applied = index;
            self.transport.learn(&self.state.coordinators);
            self.publish();
        }
        self.apply(ready.take_committed_entries())?;
        if !ready.entries().is_empty() || ready.hs().is_some() {
            let hs = ready.hs().cloned();
            self.node.mut_store().persist(ready.entries(), hs.as_ref())?;
        }
        if !ready.persisted_messages().is_empty() {
            self.transport.send(ready.take_persisted_messages());
        }
        for rs in ready.take_read_states() {
            if let Some((reply, _)) = self.reads.remove(&rs.request_ctx) {
                let _ = reply.send(Ok(rs.index));
            }
        }
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.node.mut_store().set_commit(commit)?;
        }
        self.transport.send(light.take_messages());
        self.apply(light.take_committed_entries())?;
        self.node.advance_apply();
        self.maybe_snapshot()
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), MetaError> {
        if entries.is_empty() {
            return Ok(());
        }
        for e in entries {
            if e.index <= self.applied {
                continue;
            }
            match e.get_entry_type() {
                EntryType::EntryNormal if e.data.is_empty() => {}
                EntryType::EntryNormal => match serde_json::from_slice::<Proposal>(&e.data) {
                    Ok(p) => {
                        let outcome = Arc::make_mut(&mut self.state).apply(&p.command);
                        if let Applied::Refused(why) = &outcome {
                            tracing::info!(index = e.index, %why, "command refused");
                        }
                        if let Some((reply, _)) = self.proposals.remove(&p.id) {
                            let _ = reply.send(Ok((e.index, outcome)));
                        }
                    }
                    Err(err) => tracing::error!(index = e.index, error = %err, "unreadable log entry skipped"),
                },
                EntryType::EntryConfChange => {
                    let cc = ConfChange::parse_from_bytes(&e.data).map_err(|err| MetaError::Corrupt {
                        path: format!("log entry {}", e.index).into(),
                        reason: err.to_string(),
                    })?;
                    let cs = self.node.apply_conf_change(&cc)?;
                    self.node.mut_store().set_conf_state(cs.clone())?;
                    // A new member is brought up by snapshot, and raft-rs refuses a snapshot whose voters do not
                    // include the recipient: take one that has the new configuration right away.
                    self.snapshot_now = true;
                    let change: Option<MemberChange> = serde_json::from_slice(&cc.context).ok();
                    if cc.get_change_type() == ConfChangeType::RemoveNode {
                        Arc::make_mut(&mut self.state).coordinators.remove(&cc.node_id);
                    } else if let Some(c) = &change {
                        Arc::make_mut(&mut self.state).coordinators.insert(cc.node_id, c.address.clone());
                    }
                    self.transport.learn(&self.state.coordinators);
                    tracing::info!(node = cc.node_id, change = ?cc.get_change_type(), voters = ?cs.voters, "membership changed");
                    if let Some((reply, _)) = change.and_then(|c| self.members.remove(&c.id)) {
                        let mut voters = cs.voters.clone();
                        voters.sort_unstable();
                        let _ = reply.send(Ok(voters));
                    }
                }
                EntryType::EntryConfChangeV2 => {
                    tracing::warn!(index = e.index, "joint-consensus membership changes are not used; skipped");
                }
            }
            self.applied = e.index;
        }
        self.publish();
        Ok(())
    }

    fn maybe_snapshot(&mut self) -> Result<(), MetaError> {
        let store = self.node.store();
        let last = store.snapshot_ref().get_metadata().index;
        if !(self.snapshot_now && self.applied > last) && self.applied < last + self.snapshot_every {
            return Ok(());
        }
        self.snapshot_now = false;
        let data = serde_json::to_vec(&*self.state).map_err(|e| MetaError::Config(e.to_string()))?;
        self.node.mut_store().compact(self.applied, data)?;
        tracing::info!(index = self.applied, "took a snapshot and compacted the log");
        Ok(())
    }

    fn publish(&self) {
        *self.shared.state.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
            (Arc::clone(&self.state), self.applied);
        self.shared.applied.send_replace(self.applied);
    }

    fn publish_view(&self) {
        let raft = &self.node.raft;
        let store = self.node.store();
        let view = RaftView {
            id: raft.id,
            term: raft.term,
            leader: raft.leader_id,
            role: role_name(raft.state),
            commit: raft.raft_log.committed,
            applied: self.applied,
            voters: {
                let mut v = store.conf_state().voters.clone();
                v.sort_unstable();
                v
            },
            snapshot_index: store.snapshot_ref().get_metadata().index,
            first_index: store.first_index_now(),
        };
        let mut v = self.shared.view.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if *v != view {
            *v = view;
        }
    }
}
