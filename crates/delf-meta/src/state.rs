//! What the replicated state machine holds and the commands that change it: nodes, index versions, shard
//! assignments ([`MetaState`], [`Command`], [`Applied`]). Applying a command is [`crate::apply`]'s.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// What a registered node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeRole {
    /// Holds PQ shards and answers descriptor searches.
    IndexNode,
    /// Extracts query features and verifies candidates.
    Worker,
}

impl NodeRole {
    /// The role's name on the wire ("index-node", "worker").
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IndexNode => "index-node",
            Self::Worker => "worker",
        }
    }

    /// Parses [`Self::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "index-node" => Some(Self::IndexNode),
            "worker" => Some(Self::Worker),
            _ => None,
        }
    }
}

/// An index node or worker known to the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// What it does.
    pub role: NodeRole,
    /// `host:port` the coordinators reach it at.
    pub address: String,
    /// False once the leader saw no heartbeat for `meta.node_timeout_ms` (until it heartbeats again).
    pub up: bool,
    /// Shards it reported loaded: (version, shard).
    pub loaded: BTreeSet<(String, u32)>,
}

/// Where an index version is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionState {
    /// Registered; its shards are assigned and being loaded.
    Loading,
    /// Served: the version queries of its index name run on.
    Active,
    /// Replaced by a newer version (or retired by hand): unassigned, unloaded after the grace period.
    Retired,
}

/// One build of an index, registered for serving.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexVersion {
    /// The index name it serves once active.
    pub index_name: String,
    /// The index folder or object-store URI (its manifest and shard files).
    pub uri: String,
    /// Shards of the index (from its manifest).
    pub shards: u32,
    /// The descriptor fingerprint of the index (from its manifest).
    pub descriptor_fingerprint: String,
    /// Replicas wanted per shard.
    pub replicas: u32,
    /// Loading, active or retired.
    pub state: VersionState,
    /// Per shard, the index nodes assigned to it (empty once retired). A shard being moved lists both nodes.
    pub assignment: Vec<Vec<String>>,
    /// Replicas being moved by `rebalance`: the new node loads the shard first, and the old node is unassigned
    /// only once the new one reported it loaded (make before break).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moving: Vec<ShardMove>,
}

/// One replica of a shard moving from one index node to another.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ShardMove {
    /// The shard.
    pub shard: u32,
    /// The node that serves it now and is unassigned once `to` has it loaded.
    pub from: String,
    /// The node that loads it.
    pub to: String,
}

/// A change to the state, as proposed by a client or the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// A node announces itself (or came back, or moved): marks it up and places shards on it.
    RegisterNode {
        /// Node name.
        node: String,
        /// What it does.
        role: NodeRole,
        /// `host:port`.
        address: String,
    },
    /// The leader saw no heartbeat for too long: its shards move to other nodes.
    NodeDown {
        /// Node name.
        node: String,
    },
    /// The shards a node has loaded (sent when it changes).
    ReportLoaded {
        /// Node name.
        node: String,
        /// (version, shard) pairs.
        loaded: BTreeSet<(String, u32)>,
    },
    /// A new index version to load next to the active one.
    RegisterVersion {
        /// Version name (unique, e.g. `2026-11-27`).
        version: String,
        /// Index name it will serve.
        index_name: String,
        /// Index folder or URI.
        uri: String,
        /// Shards (from the manifest).
        shards: u32,
        /// Descriptor fingerprint (from the manifest).
        descriptor_fingerprint: String,
        /// Replicas per shard.
        replicas: u32,
    },
    /// Serve this version from now on (refused unless every shard has a ready replica); the previously active
    /// version of its index name is retired.
    Activate {
        /// Version name.
        version: String,
    },
    /// Stop serving a version that is not active.
    Retire {
        /// Version name.
        version: String,
    },
    /// Even out the shards per up index node (a node added after the versions were placed gets none until
    /// then): replicas move from the most to the least loaded nodes, each loaded on its new node before it is
    /// unassigned from the old one.
    Rebalance {},
    /// Sets (or, with an empty value, removes) an operator's label: a free-form key/value note kept with the
    /// cluster's metadata (who is on call, the reason for a freeze). Also the cheapest write there is, which is
    /// why `delf bench chaos` writes labels to check that no acknowledged write is lost.
    SetLabel {
        /// Label key (not empty).
        key: String,
        /// Value; empty removes the label.
        value: String,
    },
}

/// What applying a command said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// Done (with a note for the log).
    Ok(String),
    /// Refused; the state is unchanged.
    Refused(String),
}

/// The whole replicated state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaState {
    /// Raft id -> address of every coordinator (voter).
    pub coordinators: BTreeMap<u64, String>,
    /// Index nodes and workers by name.
    pub nodes: BTreeMap<String, NodeRecord>,
    /// Index versions by name.
    pub versions: BTreeMap<String, IndexVersion>,
    /// Index name -> its active version.
    pub active: BTreeMap<String, String>,
    /// Operators' labels ([`Command::SetLabel`]); absent from snapshots written before labels existed.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl MetaState {
    /// Index nodes assigned to a shard that are up and have reported it loaded.
    pub fn ready_replicas(&self, version: &str, shard: u32) -> Vec<&NodeRecord> {
        let Some(v) = self.versions.get(version) else { return Vec::new() };
        let key = (version.to_string(), shard);
        v.assignment
            .get(shard as usize)
            .into_iter()
            .flatten()
            .filter_map(|n| self.nodes.get(n))
            .filter(|n| n.up && n.loaded.contains(&key))
            .collect()
    }

    /// The shards assigned to `node`: (version, shard, URI).
    pub fn assignments_of(&self, node: &str) -> Vec<(String, u32, String)> {
        let mut out = Vec::new();
        for (name, v) in &self.versions {
            for (shard, nodes) in v.assignment.iter().enumerate() {
                if nodes.iter().any(|n| n == node) {
                    out.push((name.clone(), shard as u32, v.uri.clone()));
                }
            }
        }
        out
    }
}
