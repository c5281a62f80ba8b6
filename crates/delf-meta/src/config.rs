//! The `[meta]` section: this coordinator's Raft id and peers, where its Raft data lives, timing, and what index
//! nodes and workers need to find the coordinators.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::MetaError;

/// A coordinator of the Raft group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Raft id: positive, unique, never reused.
    pub id: u64,
    /// `host:port` where it serves gRPC (the coordinator port: Coordinator and Meta services share it).
    pub address: String,
}

/// `[meta]`: set `coordinators` to manage the cluster with Raft (leave it empty for static membership).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetaConfig {
    /// This coordinator's Raft id (coordinators only; usually given per process as `DELF_META__ID`).
    pub id: u64,
    /// The coordinators. A coordinator started with an empty data folder and `join = false` bootstraps a group of
    /// exactly these voters (all must list the same ones); index nodes, workers and the CLI contact them.
    pub coordinators: Vec<Peer>,
    /// Start empty and wait to be added (`delf cluster members add ID ADDRESS`) instead of bootstrapping.
    pub join: bool,
    /// Raft log, hard state and snapshots (empty = `<home>/meta/<id>`).
    pub data_dir: Option<PathBuf>,
    /// One Raft tick, milliseconds.
    pub tick_ms: u64,
    /// Ticks without a leader's message before a follower starts an election (randomised up to twice this).
    pub election_ticks: usize,
    /// Ticks between the leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// Applied entries between snapshots (the log before a snapshot is then dropped).
    pub snapshot_every: u64,
    /// How often index nodes and workers heartbeat, milliseconds.
    pub heartbeat_ms: u64,
    /// A node that has not heartbeat for this long is marked down and its shards are assigned elsewhere.
    pub node_timeout_ms: u64,
    /// How long a node keeps serving a shard after it was unassigned (a retired version), so that queries that
    /// started on that version finish on it, milliseconds.
    pub retire_grace_ms: u64,
    /// The index name coordinators serve (its active version).
    pub index_name: String,
    /// Time a proposal, read or forwarded call gets, milliseconds.
    pub request_timeout_ms: u64,
}

impl Default for MetaConfig {
    fn default() -> Self {
        Self {
            id: 0,
            coordinators: Vec::new(),
            join: false,
            data_dir: None,
            tick_ms: 100,
            election_ticks: 10,
            heartbeat_ticks: 2,
            snapshot_every: 1000,
            heartbeat_ms: 1000,
            node_timeout_ms: 10_000,
            retire_grace_ms: 60_000,
            index_name: "default".into(),
            request_timeout_ms: 5_000,
        }
    }
}

impl MetaConfig {
    /// True when the cluster is managed with Raft.
    pub fn enabled(&self) -> bool {
        !self.coordinators.is_empty()
    }

    /// Checks peers (positive unique ids, addresses) and timing.
    pub fn validate(&self) -> Result<(), MetaError> {
        let bad = |m: String| Err(MetaError::Config(m));
        let mut ids: Vec<u64> = self.coordinators.iter().map(|p| p.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != self.coordinators.len() || ids.contains(&0) {
            return bad("meta.coordinators: ids must be positive and unique".into());
        }
        for p in &self.coordinators {
            delf_rpc::check_addr(&p.address)?;
        }
        if self.election_ticks <= self.heartbeat_ticks || self.heartbeat_ticks == 0 {
            return bad("meta.election_ticks must be larger than meta.heartbeat_ticks (> 0)".into());
        }
        for (name, v) in [
            ("tick_ms", self.tick_ms),
            ("snapshot_every", self.snapshot_every),
            ("heartbeat_ms", self.heartbeat_ms),
            ("node_timeout_ms", self.node_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
        ] {
            if v == 0 {
                return bad(format!("meta.{name} must be positive"));
            }
        }
        if self.node_timeout_ms < 2 * self.heartbeat_ms {
            return bad("meta.node_timeout_ms must be at least twice meta.heartbeat_ms".into());
        }
        Ok(())
    }

    /// Checks what a coordinator needs: its id among the coordinators (unless it joins later).
    pub fn validate_for_coordinator(&self) -> Result<(), MetaError> {
        self.validate()?;
        if self.id == 0 {
            return Err(MetaError::Config("meta.id is not set (this coordinator's Raft id; DELF_META__ID)".into()));
        }
        if !self.join && !self.coordinators.iter().any(|p| p.id == self.id) {
            return Err(MetaError::Config(format!(
                "meta.id {} is not among meta.coordinators (set meta.join = true to join a running group)",
                self.id
            )));
        }
        Ok(())
    }

    /// Every coordinator's address, as clients (index nodes, workers, the CLI) contact them.
    pub fn addresses(&self) -> Vec<String> {
        self.coordinators.iter().map(|p| p.address.clone()).collect()
    }

    /// Raft id -> address of every coordinator.
    pub fn peers(&self) -> std::collections::BTreeMap<u64, String> {
        self.coordinators.iter().map(|p| (p.id, p.address.clone())).collect()
    }

    /// The address of coordinator `id` from the configuration.
    pub fn address_of(&self, id: u64) -> Option<&str> {
        self.coordinators.iter().find(|p| p.id == id).map(|p| p.address.as_str())
    }

    /// [`Self::request_timeout_ms`] as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config() -> MetaConfig {
        MetaConfig {
            id: 2,
            coordinators: (1..=3).map(|id| Peer { id, address: format!("127.0.0.1:{}", 7700 + id) }).collect(),
            ..MetaConfig::default()
        }
    }

    #[test]
    fn peers_ids_and_timing_are_checked() {
        config().validate_for_coordinator().unwrap();
        let mut c = config();
        c.coordinators[1].id = 1;
        assert!(c.validate().unwrap_err().to_string().contains("unique"));
        let mut c = config();
        c.id = 9;
        assert!(c.validate_for_coordinator().unwrap_err().to_string().contains("not among"));
        c.join = true;
        c.validate_for_coordinator().unwrap();
        let mut c = config();
        c.election_ticks = 2;
        assert!(c.validate().unwrap_err().to_string().contains("election_ticks"));
        let mut c = config();
        c.coordinators[0].address = "nowhere".into();
        assert!(c.validate().is_err());
        assert!(!MetaConfig::default().enabled());
    }
}
