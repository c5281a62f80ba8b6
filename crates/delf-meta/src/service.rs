//! The `delf.v1.Meta` service every coordinator serves: Raft messages in, proposals and membership changes
//! (forwarded to the leader when this coordinator is not it), linearizable reads (read index), node heartbeats
//! (the leader judges liveness and proposes what changed), Raft status. Behind the cluster's bearer token / mTLS.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use delf_proto::MAX_MESSAGE_BYTES;
use delf_proto::v1 as pb;
use delf_proto::v1::meta_server::{Meta, MetaServer};
use delf_rpc::BearerAuth;
use delf_rpc::Channels;
use delf_rpc::Security;
use protobuf::Message as _;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use crate::config::MetaConfig;
use crate::error::MetaError;
use crate::handle::RaftHandle;
use crate::state::{Applied, Command, NodeRole};
use crate::transport::Transport;

/// The Meta service of one coordinator.
#[derive(Clone)]
pub struct MetaService {
    inner: Arc<Inner>,
}

struct Inner {
    raft: RaftHandle,
    transport: Arc<Transport>,
    config: MetaConfig,
    security: Security,
    /// Last heartbeat per node, as seen by this coordinator while leader.
    seen: Mutex<HashMap<String, Instant>>,
    /// The term this coordinator last led (liveness starts over in each term it leads).
    led_term: Mutex<u64>,
    /// Channels to the other coordinators (for forwarding).
    channels: Channels,
}

/// The gRPC status for a metadata error.
pub fn status_of(e: &MetaError) -> Status {
    match e {
        MetaError::NotLeader(None) => Status::unavailable("no leader elected yet; retry"),
        MetaError::NotLeader(Some(l)) => Status::unavailable(format!("not the leader (leader: {l})")),
        MetaError::Unknown | MetaError::Timeout(_) => Status::unavailable(e.to_string()),
        MetaError::Stopped => Status::unavailable("this coordinator's Raft node stopped"),
        MetaError::Config(m) => Status::invalid_argument(m.clone()),
        e => Status::internal(e.to_string()),
    }
}

impl MetaService {
    /// The service over a running Raft node.
    pub fn new(raft: RaftHandle, transport: Arc<Transport>, config: &MetaConfig, security: &Security) -> Self {
        Self {
            inner: Arc::new(Inner {
                raft,
                transport,
                config: config.clone(),
                security: security.clone(),
                seen: Mutex::default(),
                led_term: Mutex::new(0),
                channels: Channels::new(Duration::from_secs(1), security),
            }),
        }
    }

    /// The gRPC service with message limits and the token check (admin calls are authenticated like every other).
    pub fn into_server(self, auth: BearerAuth) -> InterceptedService<MetaServer<Self>, BearerAuth> {
        let server = MetaServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        InterceptedService::new(server, auth)
    }

    /// Runs forever, every `meta.heartbeat_ms`: publishes the Raft gauges (term, leader, applied and snapshot index)
    /// and the metadata's (pending shard moves, nodes down) and, on the leader, proposes down every node silent for
    /// `meta.node_timeout_ms`.
    pub async fn watch_liveness(self) {
        let every = Duration::from_millis(self.inner.config.heartbeat_ms);
        let timeout = Duration::from_millis(self.inner.config.node_timeout_ms);
        let mut last_round = Instant::now();
        loop {
            tokio::time::sleep(every).await;
            let gap = last_round.elapsed();
            last_round = Instant::now();
            let view = self.inner.raft.view();
            let is_leader = view.role == "leader";
            let set =
                |name: &'static str, help: &'static str, v: u64| delf_rpc::metrics::set(name, help, &[], v as f64);
            set("delf_raft_term", "Current Raft term of this coordinator", view.term);
            set("delf_raft_leader", "1 while this coordinator is the Raft leader", u64::from(is_leader));
            set("delf_raft_applied_index", "Last Raft log index applied to the metadata here", view.applied);
            set(
                "delf_raft_snapshot_index",
                "Log index of this coordinator's latest metadata snapshot",
                view.snapshot_index,
            );
            let (state, _) = self.inner.raft.state();
            let moving: usize = state.versions.values().map(|v| v.moving.len()).sum();
            set(
                "delf_meta_moves_pending",
                "Shard replicas being moved by a rebalance (loading on their new node)",
                moving as u64,
            );
            let down = state.nodes.values().filter(|n| !n.up).count();
            set("delf_meta_nodes_down", "Registered index nodes and workers marked down", down as u64);
            if !is_leader {
                continue;
            }
            {
                let mut led = self.inner.led_term.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if *led != view.term {
                    // A new term led here: every node gets a full timeout from now.
                    *led = view.term;
                    self.inner.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
                } else if paused(gap, every, timeout) {
                    // This process did not run for a while (SIGSTOP, a starved or suspended machine): no heartbeat
                    // was read because nothing here was listening, not because the nodes were silent. Seen in the
                    // chaos run: a leader continued after 2.9 s proposed every node down at once. Every node gets
                    // a full timeout from now.
                    tracing::warn!(
                        paused_ms = gap.as_millis() as u64,
                        "this coordinator was paused; node timeouts restart"
                    );
                    self.inner.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
                }
            }
            let silent: Vec<String> = {
                let mut seen = self.inner.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                state
                    .nodes
                    .iter()
                    .filter(|(_, n)| n.up)
                    .filter(|(name, _)| seen.entry((*name).clone()).or_insert_with(Instant::now).elapsed() > timeout)
                    .map(|(name, _)| name.clone())
                    .collect()
            };
            for node in silent {
                tracing::warn!(%node, timeout_ms = timeout.as_millis() as u64, "no heartbeat: marking the node down");
                let c = Command::NodeDown { node };
                if let Err(e) = self.inner.raft.propose(c, self.inner.config.request_timeout()).await {
                    tracing::warn!(error = %e, "could not mark a node down");
                }
            }
        }
    }
}

/// Whether a liveness round that came `gap` after the previous one (due `every` after it) means this process was
/// paused: late by more than half the node timeout.
fn paused(gap: Duration, every: Duration, timeout: Duration) -> bool {
    gap > every + timeout / 2
}

impl Inner {
    fn leader_client(
        &self,
        leader: Option<u64>,
    ) -> Result<pb::meta_client::MetaClient<tonic::transport::Channel>, Status> {
        let leader = leader.ok_or_else(|| Status::unavailable("no leader elected yet; retry"))?;
        if crate::fault::partitioned() {
            return Err(Status::unavailable(format!("leader {leader} unreachable (partitioned)")));
        }
        let addr = self
            .transport
            .address(leader)
            .or_else(|| self.config.address_of(leader).map(str::to_string))
            .ok_or_else(|| Status::unavailable(format!("no address known for leader {leader}")))?;
        let channel = self.channels.get(&addr).map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(crate::client::meta(channel))
    }

    fn forward_request<T>(&self, m: T) -> Request<T> {
        delf_rpc::client::request(m, "forwarded", self.security.token(), self.config.request_timeout())
    }

    async fn propose(&self, command: Command, forwarded: bool) -> Result<pb::ProposeResponse, Status> {
        match self.raft.propose(command.clone(), self.config.request_timeout()).await {
            Ok((index, outcome)) => match outcome {
                Applied::Refused(why) => Err(Status::failed_precondition(why)),
                ok => Ok(pb::ProposeResponse {
                    index,
                    result_json: serde_json::to_string(&ok).map_err(|e| Status::internal(e.to_string()))?,
                }),
            },
            Err(MetaError::NotLeader(leader)) if !forwarded => {
                let mut c = self.leader_client(leader)?;
                let command_json = serde_json::to_string(&command).map_err(|e| Status::internal(e.to_string()))?;
                let r = c.propose(self.forward_request(pb::ProposeRequest { command_json, forwarded: true })).await?;
                Ok(r.into_inner())
            }
            Err(e) => Err(status_of(&e)),
        }
    }

    async fn heartbeat(&self, r: pb::HeartbeatRequest) -> Result<pb::HeartbeatResponse, Status> {
        let role = NodeRole::parse(&r.role)
            .ok_or_else(|| Status::invalid_argument(format!("role {:?} is not index-node or worker", r.role)))?;
        delf_rpc::check_addr(&r.address).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if r.node.is_empty() {
            return Err(Status::invalid_argument("the heartbeat names no node"));
        }
        let view = self.raft.view();
        if view.role != "leader" {
            if r.forwarded {
                return Err(Status::unavailable("not the leader"));
            }
            let leader = (view.leader != 0).then_some(view.leader);
            let mut c = self.leader_client(leader)?;
            let forwarded = pb::HeartbeatRequest { forwarded: true, ..r };
            return Ok(c.heartbeat(self.forward_request(forwarded)).await?.into_inner());
        }
        self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(r.node.clone(), Instant::now());
        let loaded: BTreeSet<(String, u32)> = r.loaded.iter().map(|l| (l.version.clone(), l.shard)).collect();
        let (state, _) = self.raft.state();
        let record = state.nodes.get(&r.node);
        if record.is_none_or(|n| !n.up || n.address != r.address || n.role != role) {
            let c = Command::RegisterNode { node: r.node.clone(), role, address: r.address.clone() };
            self.propose(c, true).await?;
        }
        let (state, _) = self.raft.state();
        if state.nodes.get(&r.node).is_some_and(|n| n.loaded != loaded) {
            self.propose(Command::ReportLoaded { node: r.node.clone(), loaded }, true).await?;
        }
        let (state, _) = self.raft.state();
        let assignments = state
            .assignments_of(&r.node)
            .into_iter()
            .map(|(version, shard, index)| pb::ShardAssignment { version, shard, index })
            .collect();
        Ok(pb::HeartbeatResponse { assignments, interval_ms: self.config.heartbeat_ms as u32 })
    }
}

fn refuse_if_partitioned() -> Result<(), Status> {
    if crate::fault::partitioned() { Err(Status::unavailable("partitioned (fail point)")) } else { Ok(()) }
}

#[tonic::async_trait]
impl Meta for MetaService {
    async fn raft(&self, request: Request<pb::RaftMessages>) -> Result<Response<pb::RaftAck>, Status> {
        refuse_if_partitioned()?;
        for bytes in request.into_inner().messages {
            let m = raft::eraftpb::Message::parse_from_bytes(&bytes)
                .map_err(|e| Status::invalid_argument(format!("not a raft message: {e}")))?;
            self.inner.raft.step(m).map_err(|e| status_of(&e))?;
        }
        Ok(Response::new(pb::RaftAck {}))
    }

    async fn propose(&self, request: Request<pb::ProposeRequest>) -> Result<Response<pb::ProposeResponse>, Status> {
        let r = request.into_inner();
        if r.forwarded {
            refuse_if_partitioned()?;
        }
        let command: Command = serde_json::from_str(&r.command_json)
            .map_err(|e| Status::invalid_argument(format!("not a command: {e}")))?;
        Ok(Response::new(self.inner.propose(command, r.forwarded).await?))
    }

    async fn read_state(
        &self,
        request: Request<pb::ReadStateRequest>,
    ) -> Result<Response<pb::ReadStateResponse>, Status> {
        let (state, applied) = if request.get_ref().stale {
            self.inner.raft.state()
        } else {
            self.inner.raft.linearizable_state(self.inner.config.request_timeout()).await.map_err(|e| status_of(&e))?
        };
        let state_json = serde_json::to_string(&*state).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::ReadStateResponse { state_json, applied_index: applied }))
    }

    async fn change_members(
        &self,
        request: Request<pb::ChangeMembersRequest>,
    ) -> Result<Response<pb::ChangeMembersResponse>, Status> {
        let r = request.into_inner();
        if r.forwarded {
            refuse_if_partitioned()?;
        }
        if r.id == 0 {
            return Err(Status::invalid_argument("coordinator ids are positive"));
        }
        if !r.remove {
            delf_rpc::check_addr(&r.address).map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        let t = self.inner.config.request_timeout();
        match self.inner.raft.change_members(r.id, r.address.clone(), r.remove, t).await {
            Ok(voters) => Ok(Response::new(pb::ChangeMembersResponse { voters })),
            Err(MetaError::NotLeader(leader)) if !r.forwarded => {
                let mut c = self.inner.leader_client(leader)?;
                let forwarded = pb::ChangeMembersRequest { forwarded: true, ..r };
                Ok(c.change_members(self.inner.forward_request(forwarded)).await?)
            }
            Err(e) => Err(status_of(&e)),
        }
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let r = request.into_inner();
        if r.forwarded {
            refuse_if_partitioned()?;
        }
        Ok(Response::new(self.inner.heartbeat(r).await?))
    }

    async fn raft_status(
        &self,
        _request: Request<pb::RaftStatusRequest>,
    ) -> Result<Response<pb::RaftStatusResponse>, Status> {
        let v = self.inner.raft.view();
        Ok(Response::new(pb::RaftStatusResponse {
            id: v.id,
            term: v.term,
            leader: v.leader,
            role: v.role.to_string(),
            commit: v.commit,
            applied: v.applied,
            voters: v.voters,
            snapshot_index: v.snapshot_index,
            first_index: v.first_index,
        }))
    }

    async fn set_fail_point(
        &self,
        request: Request<pb::SetFailPointRequest>,
    ) -> Result<Response<pb::SetFailPointResponse>, Status> {
        let r = request.into_inner();
        crate::fault::configure(&r.name, &r.actions).map_err(Status::unimplemented)?;
        tracing::warn!(name = %r.name, actions = %r.actions, "fail point set");
        Ok(Response::new(pb::SetFailPointResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_late_by_half_the_node_timeout_is_a_pause() {
        let (every, timeout) = (Duration::from_millis(300), Duration::from_millis(3000));
        assert!(!paused(every, every, timeout));
        assert!(!paused(Duration::from_millis(1700), every, timeout));
        assert!(paused(Duration::from_millis(2900), every, timeout));
    }
}
