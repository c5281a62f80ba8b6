//! The `[cluster]` section of the configuration: static membership (who serves which shard, which workers exist),
//! where the index lives, deadlines and the failure policy. Raft-managed membership replaces the static lists later
//! (issue 9); everything else stays.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use delf_rpc::check_addr;

use crate::error::ClusterError;

/// The default `cluster.shard_answer_loss`.
pub const DEFAULT_SHARD_ANSWER_LOSS: f64 = 0.25;

/// What the coordinator does when no replica of some shard answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShardFailurePolicy {
    /// Answer from the shards that did answer, flagged as degraded with the missing shard ids.
    #[default]
    Partial,
    /// Fail the query with UNAVAILABLE.
    Fail,
}

/// The replicas of one shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardReplicas {
    /// Shard id, `0..shards` of the index.
    pub id: u32,
    /// `host:port` of every index node serving it (at least one).
    pub replicas: Vec<String>,
}

/// `[cluster]`: one file describes the whole cluster, and every role reads the same file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The index folder: a local path or an object-store URI (`s3://bucket/prefix`, `gs://`, `az://`). Index nodes
    /// load their shard from it, the coordinator its manifest, workers its PCA and extraction settings.
    pub index: String,
    /// Local folder for index files fetched from object storage (empty = `<home>/cluster-cache`).
    pub cache_dir: Option<std::path::PathBuf>,
    /// `host:port` of the coordinator (where it listens, and where `delf query` and `delf cluster status` go).
    pub coordinator: String,
    /// Every shard of the index and its replicas.
    pub shards: Vec<ShardReplicas>,
    /// `host:port` of every worker.
    pub workers: Vec<String>,
    /// Default time for a whole query, milliseconds (a request may ask for less or more).
    pub deadline_ms: u64,
    /// Time one replica gets to answer before the next replica of the shard is tried, milliseconds.
    pub shard_timeout_ms: u64,
    /// Also ask the next replica of a shard when the current one has not answered after this many milliseconds
    /// (hedging: the first good answer wins; unset = the next replica is asked only after a failure or
    /// `shard_timeout_ms`).
    pub hedge_after_ms: Option<u64>,
    /// Time one worker call (extraction or a verification batch) gets before another worker is tried, milliseconds;
    /// a call extracting k rotated passes of a query gets k times this.
    pub worker_timeout_ms: u64,
    /// Time to open a connection, milliseconds.
    pub connect_timeout_ms: u64,
    /// Default policy when a shard has no answering replica.
    pub on_shard_failure: ShardFailurePolicy,
    /// Candidates per verification call; the best-voted candidates are split into batches of this size, spread
    /// over the workers.
    pub verify_batch: usize,
    /// Neighbours per query descriptor (of K) that cutting each shard's answer short may leave out, on average,
    /// if neighbours spread evenly over shards: each shard answers only its K' nearest, the least K' within this
    /// bound (`delf_index::shard_cut`; e.g. K 60 over 64 shards: K' 4 for 0.25). Lists a cut may have left short
    /// are known, and never make a correspondence on a guess. 0 = no cut: every shard answers K.
    pub shard_answer_loss: f64,
    /// Bearer token required from every client and sent by every role (unset = no authentication; set it through
    /// `DELF_CLUSTER__TOKEN` rather than in a file).
    pub token: Option<String>,
    /// TLS on every endpoint, optionally mutual (`[cluster.tls]`; unset = plaintext, for local use only).
    pub tls: Option<delf_rpc::TlsSettings>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            index: String::new(),
            cache_dir: None,
            coordinator: "127.0.0.1:7700".into(),
            shards: Vec::new(),
            workers: Vec::new(),
            deadline_ms: 30_000,
            shard_timeout_ms: 5_000,
            hedge_after_ms: None,
            worker_timeout_ms: 20_000,
            connect_timeout_ms: 1_000,
            on_shard_failure: ShardFailurePolicy::Partial,
            verify_batch: 25,
            shard_answer_loss: DEFAULT_SHARD_ANSWER_LOSS,
            token: None,
            tls: None,
        }
    }
}

impl ClusterConfig {
    /// Checks what every role relies on: an index location, shards numbered `0..n` once each with at least one
    /// replica, addresses that parse, positive timeouts and batch size.
    pub fn validate(&self) -> Result<(), ClusterError> {
        if self.index.trim().is_empty() {
            return Err(ClusterError::Config("cluster.index is not set (the index folder or object-store URI)".into()));
        }
        self.validate_membership()
    }

    /// [`Self::validate`] without requiring `cluster.index` (a coordinator of a Raft-managed cluster serves the
    /// index versions registered in the metadata).
    pub fn validate_membership(&self) -> Result<(), ClusterError> {
        let bad = |m: String| Err(ClusterError::Config(m));
        let ids: BTreeSet<u32> = self.shards.iter().map(|s| s.id).collect();
        if ids.len() != self.shards.len() {
            return bad("cluster.shards lists a shard id twice".into());
        }
        if let Some(missing) = (0..self.shards.len() as u32).find(|i| !ids.contains(i)) {
            return bad(format!("cluster.shards must number shards 0..{} (shard {missing} is missing)", ids.len()));
        }
        for s in &self.shards {
            if s.replicas.is_empty() {
                return bad(format!("shard {} has no replicas", s.id));
            }
            for r in &s.replicas {
                check_addr(r)?;
            }
        }
        for w in &self.workers {
            check_addr(w)?;
        }
        check_addr(&self.coordinator)?;
        if !(self.shard_answer_loss.is_finite() && self.shard_answer_loss >= 0.0) {
            return bad(format!("cluster.shard_answer_loss must be 0 or more, not {}", self.shard_answer_loss));
        }
        for (name, v) in [
            ("deadline_ms", self.deadline_ms),
            ("shard_timeout_ms", self.shard_timeout_ms),
            ("worker_timeout_ms", self.worker_timeout_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("verify_batch", self.verify_batch as u64),
        ] {
            if v == 0 {
                return bad(format!("cluster.{name} must be positive"));
            }
        }
        Ok(())
    }

    /// Checks what the coordinator needs beyond [`Self::validate`]: at least one shard and one worker.
    pub fn validate_for_coordinator(&self) -> Result<(), ClusterError> {
        self.validate()?;
        if self.shards.is_empty() {
            return Err(ClusterError::Config("cluster.shards is empty".into()));
        }
        if self.workers.is_empty() {
            return Err(ClusterError::Config("cluster.workers is empty (verification runs on workers)".into()));
        }
        Ok(())
    }

    /// The token and TLS certificates of this configuration, read from disk.
    pub fn security(&self) -> Result<delf_rpc::Security, ClusterError> {
        Ok(delf_rpc::Security::new(self.token.clone(), self.tls.as_ref())?)
    }

    /// [`Self::deadline_ms`] as a duration.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config() -> ClusterConfig {
        ClusterConfig {
            index: "/data/index".into(),
            shards: vec![
                ShardReplicas { id: 1, replicas: vec!["127.0.0.1:7002".into()] },
                ShardReplicas { id: 0, replicas: vec!["127.0.0.1:7001".into(), "node-b:7001".into()] },
            ],
            workers: vec!["127.0.0.1:7100".into()],
            ..ClusterConfig::default()
        }
    }

    #[test]
    fn a_consistent_cluster_validates() {
        config().validate_for_coordinator().expect("valid");
    }

    #[test]
    fn gaps_duplicates_and_bad_addresses_are_refused() {
        let mut c = config();
        c.shards[0].id = 2;
        assert!(c.validate().unwrap_err().to_string().contains("shard 1 is missing"));
        let mut c = config();
        c.shards[0].id = 0;
        assert!(c.validate().unwrap_err().to_string().contains("twice"));
        let mut c = config();
        c.shards[1].replicas.clear();
        assert!(c.validate().unwrap_err().to_string().contains("no replicas"));
        let mut c = config();
        c.workers = vec!["http://127.0.0.1:7100".into()];
        assert!(matches!(c.validate(), Err(ClusterError::Rpc(delf_rpc::RpcError::Address { .. }))));
        let mut c = config();
        c.verify_batch = 0;
        assert!(c.validate().unwrap_err().to_string().contains("verify_batch"));
        let mut c = config();
        c.workers.clear();
        assert!(c.validate().is_ok());
        assert!(c.validate_for_coordinator().unwrap_err().to_string().contains("workers"));
    }
}
