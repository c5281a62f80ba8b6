//! Calling the coordinators' Meta service from the CLI, index nodes and workers: any coordinator will do (followers
//! forward to the leader), so calls go to one after another until one answers; UNAVAILABLE (no leader yet, a
//! coordinator down) is retried until the call's time is up.

use std::time::{Duration, Instant};

use delf_proto::MAX_MESSAGE_BYTES;
use delf_proto::v1 as pb;
use delf_proto::v1::meta_client::MetaClient;
use delf_rpc::Security;
use delf_rpc::failover::{self, Failure, Retry};
use tonic::Status;
use tonic::transport::Channel;

use crate::state::{Applied, Command, MetaState};

/// A Meta client with the cluster's message limits.
pub fn meta(channel: Channel) -> MetaClient<Channel> {
    MetaClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// One coordinator's address and client.
#[derive(Clone)]
struct Endpoint {
    addr: String,
    client: MetaClient<Channel>,
}

impl failover::Endpoint for Endpoint {
    fn addr(&self) -> &str {
        &self.addr
    }
}

/// The coordinators, tried in turn.
#[derive(Clone)]
pub struct Coordinators {
    clients: Vec<Endpoint>,
    security: Security,
    timeout: Duration,
}

impl Coordinators {
    /// Clients for `addresses` (connected lazily); each call may take up to `timeout` in all.
    pub fn new(addresses: &[String], security: &Security, timeout: Duration) -> Result<Self, crate::MetaError> {
        if addresses.is_empty() {
            return Err(crate::MetaError::Config("no coordinators configured (meta.coordinators)".into()));
        }
        let connect = Duration::from_secs(1);
        let clients = addresses
            .iter()
            .map(|a| Ok(Endpoint { addr: a.clone(), client: meta(delf_rpc::client::channel(a, connect, security)?) }))
            .collect::<Result<_, crate::MetaError>>()?;
        Ok(Self { clients, security: security.clone(), timeout })
    }

    /// Calls `f` on one coordinator after another, pass after pass (a pause of 100 ms times the pass number, at
    /// most 500 ms, between passes), until one answers or the client's time is up (`delf_rpc::failover`; each try
    /// at most 3 s). `retry` says which failures try again: state reads are [`Retry::Read`]s, and proposals
    /// [`Retry::IdempotentWrite`]s: the state machine answers a repeated command "already" and changes nothing
    /// (`apply.rs`), and a repeated membership change is a no-op in raft-rs (adding a voter twice, removing a
    /// non-member). The error names what each coordinator said last.
    pub async fn call<T, F, Fut>(&self, retry: Retry, f: F) -> Result<T, Status>
    where
        F: Fn(MetaClient<Channel>, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let policy = failover::Policy {
            rounds: u32::MAX,
            backoff: Duration::from_millis(100),
            ..failover::Policy::once(Duration::from_secs(3), retry)
        };
        let deadline = Instant::now() + self.timeout;
        let answer = failover::call(
            &self.clients,
            0,
            deadline,
            &policy,
            |_, _| {},
            |c, t| {
                let fut = f(c.client.clone(), t);
                async move { retry.judge(fut.await, t) }
            },
        )
        .await;
        answer.map_err(|f| match f {
            Failure::Stopped(s) => s,
            f => Status::unavailable(format!("no coordinator answered: {}", f.summary())),
        })
    }

    fn request<T>(&self, m: T, t: Duration) -> tonic::Request<T> {
        delf_rpc::client::request(m, &delf_rpc::client::new_request_id(), self.security.token(), t)
    }

    /// Proposes a command; a refusal by the state machine is FAILED_PRECONDITION.
    pub async fn propose(&self, command: &Command) -> Result<(u64, Applied), Status> {
        let command_json = serde_json::to_string(command).map_err(|e| Status::internal(e.to_string()))?;
        let r = self
            .call(Retry::IdempotentWrite, |mut c, t| {
                let req = self.request(pb::ProposeRequest { command_json: command_json.clone(), forwarded: false }, t);
                async move { c.propose(req).await }
            })
            .await?;
        let applied = serde_json::from_str(&r.result_json).map_err(|e| Status::internal(e.to_string()))?;
        Ok((r.index, applied))
    }

    /// Activates `version` as soon as every shard has a ready replica: the state machine refuses an activation
    /// before then (FAILED_PRECONDITION, "... has no ready replica yet"), and that refusal is proposed again every
    /// 500 ms until `wait` has passed. Any other error, or that refusal after `wait`, is returned.
    pub async fn activate_when_ready(&self, version: &str, wait: Duration) -> Result<(u64, Applied), Status> {
        let started = Instant::now();
        let command = Command::Activate { version: version.into() };
        loop {
            match self.propose(&command).await {
                Err(s)
                    if s.code() == tonic::Code::FailedPrecondition
                        && s.message().contains(crate::apply::NOT_READY)
                        && started.elapsed() < wait =>
                {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                other => return other,
            }
        }
    }

    /// The replicated state (linearizable unless `stale`).
    pub async fn state(&self, stale: bool) -> Result<(MetaState, u64), Status> {
        let r = self
            .call(Retry::Read, |mut c, t| {
                let req = self.request(pb::ReadStateRequest { stale }, t);
                async move { c.read_state(req).await }
            })
            .await?;
        let state = serde_json::from_str(&r.state_json).map_err(|e| Status::internal(e.to_string()))?;
        Ok((state, r.applied_index))
    }

    /// Adds or removes a coordinator; the voters after the change.
    pub async fn change_members(&self, id: u64, address: &str, remove: bool) -> Result<Vec<u64>, Status> {
        let r = self
            .call(Retry::IdempotentWrite, |mut c, t| {
                let m = pb::ChangeMembersRequest { id, address: address.to_string(), remove, forwarded: false };
                let req = self.request(m, t);
                async move { c.change_members(req).await }
            })
            .await?;
        Ok(r.voters)
    }

    /// Every coordinator's Raft status (None for one that did not answer), in the configured order.
    pub async fn raft_statuses(&self) -> Vec<(String, Result<pb::RaftStatusResponse, Status>)> {
        let t = Duration::from_secs(2);
        let calls = self.clients.iter().map(|Endpoint { addr, client }| {
            let mut c = client.clone();
            let req = self.request(pb::RaftStatusRequest {}, t);
            async move {
                let r = match tokio::time::timeout(t, c.raft_status(req)).await {
                    Ok(r) => r.map(tonic::Response::into_inner),
                    Err(_) => Err(Status::deadline_exceeded("no answer")),
                };
                (addr.clone(), r)
            }
        });
        futures::future::join_all(calls).await
    }

    /// Sends one heartbeat (to the coordinators in turn).
    pub async fn heartbeat(&self, h: pb::HeartbeatRequest) -> Result<pb::HeartbeatResponse, Status> {
        self.call(Retry::Read, |mut c, t| {
            let req = self.request(h.clone(), t);
            async move { c.heartbeat(req).await }
        })
        .await
    }

    /// Sets a fail point on the coordinator at `addr` (test builds only).
    pub async fn set_fail_point(&self, addr: &str, name: &str, actions: &str) -> Result<(), Status> {
        let Endpoint { client: c, .. } = self
            .clients
            .iter()
            .find(|e| e.addr == addr)
            .ok_or_else(|| Status::invalid_argument(format!("{addr} is not a configured coordinator")))?;
        let req = self.request(pb::SetFailPointRequest { name: name.into(), actions: actions.into() }, self.timeout);
        c.clone().set_fail_point(req).await.map(|_| ())
    }
}
