//! Raft messages between coordinators over the project's gRPC (`delf.v1.Meta/Raft`): one sending task per peer,
//! batching what queued up, with the cluster's TLS and token. A failed send drops the batch (Raft resends) and
//! reports the peer unreachable; every snapshot sent is reported back to Raft as delivered or failed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use delf_proto::v1 as pb;
use delf_rpc::Channels;
use delf_rpc::Security;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::sync::mpsc;

use crate::handle::{RaftHandle, Request};

/// Largest batch of Raft messages in one call.
const BATCH: usize = 256;

/// Sends Raft messages to the other coordinators.
pub struct Transport {
    addresses: RwLock<BTreeMap<u64, String>>,
    peers: Mutex<HashMap<u64, mpsc::UnboundedSender<Message>>>,
    channels: Channels,
    security: Security,
    timeout: Duration,
    runtime: tokio::runtime::Handle,
    raft: RaftHandle,
}

impl Transport {
    /// A transport for `raft`, knowing the configured peer addresses; sending tasks run on `runtime`.
    pub fn new(
        raft: RaftHandle,
        peers: BTreeMap<u64, String>,
        security: Security,
        timeout: Duration,
        runtime: tokio::runtime::Handle,
    ) -> Arc<Self> {
        let channels = Channels::new(timeout, &security);
        Arc::new(Self {
            addresses: RwLock::new(peers),
            peers: Mutex::default(),
            channels,
            security,
            timeout,
            runtime,
            raft,
        })
    }

    /// Learns the coordinators' addresses from the replicated state (added members).
    pub fn learn(&self, coordinators: &BTreeMap<u64, String>) {
        let mut a = self.addresses.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (id, addr) in coordinators {
            a.insert(*id, addr.clone());
        }
    }

    /// The address of coordinator `id`, if known.
    pub fn address(&self, id: u64) -> Option<String> {
        self.addresses.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&id).cloned()
    }

    /// Queues messages for their peers (never blocks).
    pub fn send(self: &Arc<Self>, messages: Vec<Message>) {
        for m in messages {
            if crate::fault::partitioned() {
                if m.get_msg_type() == MessageType::MsgSnapshot {
                    self.raft.report(Request::ReportSnapshot { to: m.to, ok: false });
                }
                continue;
            }
            let to = m.to;
            let mut peers = self.peers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let tx = peers.entry(to).or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                self.runtime.spawn(Arc::clone(self).peer_loop(to, rx));
                tx
            });
            let _ = tx.send(m);
        }
    }

    async fn peer_loop(self: Arc<Self>, to: u64, mut rx: mpsc::UnboundedReceiver<Message>) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let snapshots = batch.iter().filter(|m| m.get_msg_type() == MessageType::MsgSnapshot).count();
            let sent = self.deliver(to, &batch).await;
            for _ in 0..snapshots {
                self.raft.report(Request::ReportSnapshot { to, ok: sent.is_ok() });
            }
            if let Err(error) = sent {
                tracing::debug!(peer = to, %error, dropped = batch.len(), "raft messages not delivered");
                self.raft.report(Request::Unreachable(to));
            }
        }
    }

    /// Sends one batch to coordinator `to` over `Meta/Raft`.
    async fn deliver(&self, to: u64, batch: &[Message]) -> Result<(), String> {
        let addr = self.address(to).ok_or_else(|| format!("no address known for coordinator {to}"))?;
        let mut client = crate::client::meta(self.channels.get(&addr).map_err(|e| e.to_string())?);
        let messages = batch.iter().map(|m| m.write_to_bytes().unwrap_or_default()).collect();
        let request =
            delf_rpc::client::request(pb::RaftMessages { messages }, "raft", self.security.token(), self.timeout);
        match tokio::time::timeout(self.timeout, client.raft(request)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
            Err(_) => Err("timed out".into()),
        }
    }
}
