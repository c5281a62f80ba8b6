//! The handle to the Raft driver thread ([`crate::node`]): the requests it takes (Raft messages, proposals, read
//! index, membership changes, transport reports) and what it publishes for everyone to read without asking it (the
//! applied state, Raft's view of this coordinator). The service, the transport and the topology hold it.

use std::sync::mpsc::Sender;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use raft::eraftpb::Message;
use tokio::sync::{oneshot, watch};

use crate::error::MetaError;
use crate::state::{Applied, Command, MetaState};

/// A snapshot of what Raft says about this coordinator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftView {
    /// This coordinator's id.
    pub id: u64,
    /// Current term.
    pub term: u64,
    /// Leader id (0 = unknown).
    pub leader: u64,
    /// "leader", "follower", "candidate", "pre-candidate".
    pub role: &'static str,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// Voters.
    pub voters: Vec<u64>,
    /// Index of the latest snapshot.
    pub snapshot_index: u64,
    /// First index still in the log.
    pub first_index: u64,
}

/// What the driver thread publishes for everyone to read without asking it.
pub struct Shared {
    pub(crate) state: RwLock<(Arc<MetaState>, u64)>,
    pub(crate) view: RwLock<RaftView>,
    pub(crate) applied: watch::Sender<u64>,
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, MetaError>>;

/// A request to the driver thread.
pub enum Request {
    /// A Raft message from another coordinator.
    Raft(Box<Message>),
    /// A command to replicate (leader only).
    Propose(Command, Reply<(u64, Applied)>),
    /// A read index: answers the index the state must reach to reflect every write committed before the call.
    ReadIndex(Reply<u64>),
    /// Add (with address) or remove a voter.
    ChangeMembers {
        /// Raft id.
        id: u64,
        /// Address (add only).
        address: String,
        /// Remove instead of add.
        remove: bool,
        /// Voters after the change.
        reply: Reply<Vec<u64>>,
    },
    /// The transport tells how sending a snapshot went.
    ReportSnapshot {
        /// Peer.
        to: u64,
        /// Sent.
        ok: bool,
    },
    /// The transport could not reach a peer.
    Unreachable(u64),
}

/// The handle to a running Raft node.
#[derive(Clone)]
pub struct RaftHandle {
    pub(crate) tx: Sender<Request>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) stopped: watch::Receiver<Option<String>>,
}

impl RaftHandle {
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Request, timeout: Duration) -> Result<T, MetaError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(make(reply)).map_err(|_| MetaError::Stopped)?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(MetaError::Stopped),
            Err(_) => Err(MetaError::Timeout(format!("no Raft outcome within {} ms", timeout.as_millis()))),
        }
    }

    /// Replicates `command` (this coordinator must be the leader) and returns its log index and outcome once
    /// applied here.
    pub async fn propose(&self, command: Command, timeout: Duration) -> Result<(u64, Applied), MetaError> {
        self.ask(|r| Request::Propose(command, r), timeout).await
    }

    /// The state as of a Raft read index: it reflects every write committed before this call.
    pub async fn linearizable_state(&self, timeout: Duration) -> Result<(Arc<MetaState>, u64), MetaError> {
        let started = Instant::now();
        let index = self.ask(Request::ReadIndex, timeout).await?;
        self.wait_applied(index, timeout.saturating_sub(started.elapsed())).await?;
        Ok(self.state())
    }

    /// Waits until this coordinator has applied `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), MetaError> {
        let mut rx = self.shared.applied.subscribe();
        let wait = rx.wait_for(|&a| a >= index);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(MetaError::Stopped),
            Err(_) => Err(MetaError::Timeout(format!("index {index} not applied within {} ms", timeout.as_millis()))),
        }
    }

    /// Adds (`remove` false, with its address) or removes a coordinator; returns the voters after the change.
    pub async fn change_members(
        &self,
        id: u64,
        address: String,
        remove: bool,
        timeout: Duration,
    ) -> Result<Vec<u64>, MetaError> {
        self.ask(|reply| Request::ChangeMembers { id, address, remove, reply }, timeout).await
    }

    /// Hands a Raft message from a peer to the driver.
    pub fn step(&self, m: Message) -> Result<(), MetaError> {
        self.tx.send(Request::Raft(Box::new(m))).map_err(|_| MetaError::Stopped)
    }

    /// Hands a transport report to the driver.
    pub fn report(&self, r: Request) {
        let _ = self.tx.send(r);
    }

    /// The last applied state and its index (possibly behind the leader). Shared, not copied: the Raft thread
    /// copies the state on its next write only while such a snapshot is still held.
    pub fn state(&self) -> (Arc<MetaState>, u64) {
        self.shared.state.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// What Raft says now.
    pub fn view(&self) -> RaftView {
        self.shared.view.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// A receiver told about every newly applied index.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.shared.applied.subscribe()
    }

    /// Resolves with the reason when the driver thread stops (a disk failure: the coordinator must stop).
    pub async fn stopped(&self) -> String {
        let mut rx = self.stopped.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone().unwrap_or_default(),
            Err(_) => "the raft thread stopped".into(),
        }
    }
}
