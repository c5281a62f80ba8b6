//! The replicated state machine. Every coordinator applies the same committed [`Command`]s in the same order to a
//! [`MetaState`], so [`MetaState::apply`] is deterministic: no clocks, no randomness, no I/O (time-based
//! decisions, such as a node being gone, are made by the leader and enter the log as commands).

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
}

fn refused<T: Into<String>>(why: T) -> Applied {
    Applied::Refused(why.into())
}

impl MetaState {
    /// Applies one committed command. Commands are idempotent: sending one again (after a leader change left its
    /// outcome unknown) changes nothing more.
    pub fn apply(&mut self, command: &Command) -> Applied {
        match command {
            Command::RegisterNode { node, role, address } => {
                if node.is_empty() || address.is_empty() {
                    return refused("a node needs a name and an address");
                }
                let record = self.nodes.entry(node.clone()).or_insert_with(|| NodeRecord {
                    role: *role,
                    address: address.clone(),
                    up: true,
                    loaded: BTreeSet::new(),
                });
                if record.role != *role {
                    return refused(format!("node {node} is registered as {}", record.role.as_str()));
                }
                if record.address != *address {
                    // Moved: what it had loaded at the old address is gone.
                    record.address = address.clone();
                    record.loaded.clear();
                }
                record.up = true;
                crate::assign::rebalance(self);
                Applied::Ok(format!("node {node} up at {address}"))
            }
            Command::NodeDown { node } => {
                let Some(record) = self.nodes.get_mut(node) else { return refused(format!("no node {node}")) };
                record.up = false;
                record.loaded.clear();
                crate::assign::rebalance(self);
                Applied::Ok(format!("node {node} down"))
            }
            Command::ReportLoaded { node, loaded } => {
                let Some(record) = self.nodes.get_mut(node) else { return refused(format!("no node {node}")) };
                record.loaded = loaded.clone();
                let done = crate::assign::finish_moves(self, node);
                Applied::Ok(format!("node {node} serves {} shards{done}", loaded.len()))
            }
            Command::Rebalance {} => {
                let planned = crate::assign::plan_moves(self);
                if planned.is_empty() {
                    return Applied::Ok("balanced: no replica to move".into());
                }
                let list: Vec<String> =
                    planned.iter().map(|(v, m)| format!("{v}/{} {} -> {}", m.shard, m.from, m.to)).collect();
                // A destination that still holds the shard loaded (unassigned, within its grace period) has it now.
                let targets: BTreeSet<String> = planned.iter().map(|(_, m)| m.to.clone()).collect();
                let done: String = targets.iter().map(|t| crate::assign::finish_moves(self, t)).collect();
                Applied::Ok(format!("moving {} replicas: {}{done}", planned.len(), list.join(", ")))
            }
            Command::RegisterVersion { version, index_name, uri, shards, descriptor_fingerprint, replicas } => {
                if version.is_empty() || version.contains('/') || index_name.is_empty() || uri.is_empty() {
                    return refused("a version needs a name without '/', an index name and a URI");
                }
                if *shards == 0 || *replicas == 0 {
                    return refused("shards and replicas must be positive");
                }
                let wanted = IndexVersion {
                    index_name: index_name.clone(),
                    uri: uri.clone(),
                    shards: *shards,
                    descriptor_fingerprint: descriptor_fingerprint.clone(),
                    replicas: *replicas,
                    state: VersionState::Loading,
                    assignment: vec![Vec::new(); *shards as usize],
                    moving: Vec::new(),
                };
                if let Some(existing) = self.versions.get(version) {
                    let same = existing.uri == wanted.uri
                        && existing.index_name == wanted.index_name
                        && existing.shards == wanted.shards
                        && existing.descriptor_fingerprint == wanted.descriptor_fingerprint;
                    return if same {
                        Applied::Ok(format!("version {version} already registered"))
                    } else {
                        refused(format!("version {version} is already registered with other settings"))
                    };
                }
                self.versions.insert(version.clone(), wanted);
                crate::assign::rebalance(self);
                Applied::Ok(format!("version {version} registered"))
            }
            Command::Activate { version } => {
                let Some(v) = self.versions.get(version) else { return refused(format!("no version {version}")) };
                match v.state {
                    VersionState::Active => return Applied::Ok(format!("version {version} is already active")),
                    VersionState::Retired => return refused(format!("version {version} is retired")),
                    VersionState::Loading => {}
                }
                if let Some(shard) = (0..v.shards).find(|&s| self.ready_replicas(version, s).is_empty()) {
                    return refused(format!("shard {shard} of version {version} has no ready replica yet"));
                }
                let name = v.index_name.clone();
                if let Some(old) = self.active.insert(name.clone(), version.clone())
                    && let Some(o) = self.versions.get_mut(&old)
                {
                    o.state = VersionState::Retired;
                    o.assignment.iter_mut().for_each(Vec::clear);
                    o.moving.clear();
                }
                if let Some(v) = self.versions.get_mut(version) {
                    v.state = VersionState::Active;
                }
                Applied::Ok(format!("version {version} serves index {name}"))
            }
            Command::Retire { version } => {
                let Some(v) = self.versions.get_mut(version) else { return refused(format!("no version {version}")) };
                match v.state {
                    VersionState::Active => refused(format!("version {version} is active; activate another first")),
                    VersionState::Retired => Applied::Ok(format!("version {version} is already retired")),
                    VersionState::Loading => {
                        v.state = VersionState::Retired;
                        v.assignment.iter_mut().for_each(Vec::clear);
                        v.moving.clear();
                        Applied::Ok(format!("version {version} retired"))
                    }
                }
            }
        }
    }

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn register(state: &mut MetaState, node: &str) {
        let c = Command::RegisterNode { node: node.into(), role: NodeRole::IndexNode, address: format!("{node}:1") };
        assert!(matches!(state.apply(&c), Applied::Ok(_)));
    }

    fn version(name: &str, shards: u32) -> Command {
        Command::RegisterVersion {
            version: name.into(),
            index_name: "default".into(),
            uri: format!("s3://bucket/{name}"),
            shards,
            descriptor_fingerprint: "fp".into(),
            replicas: 2,
        }
    }

    fn load_everything(state: &mut MetaState) {
        for node in state.nodes.keys().cloned().collect::<Vec<_>>() {
            let loaded = state.assignments_of(&node).into_iter().map(|(v, s, _)| (v, s)).collect();
            state.apply(&Command::ReportLoaded { node, loaded });
        }
    }

    #[test]
    fn activation_waits_for_every_shard_then_retires_the_old_version() {
        let mut s = MetaState::default();
        for n in ["a", "b", "c"] {
            register(&mut s, n);
        }
        assert!(matches!(s.apply(&version("v1", 3)), Applied::Ok(_)));
        assert!(
            matches!(s.apply(&Command::Activate { version: "v1".into() }), Applied::Refused(m) if m.contains("no ready replica"))
        );
        load_everything(&mut s);
        assert!(matches!(s.apply(&Command::Activate { version: "v1".into() }), Applied::Ok(_)));
        assert_eq!(s.active["default"], "v1");
        s.apply(&version("v2", 3));
        load_everything(&mut s);
        assert!(matches!(s.apply(&Command::Activate { version: "v2".into() }), Applied::Ok(_)));
        assert_eq!(s.active["default"], "v2");
        assert_eq!(s.versions["v1"].state, VersionState::Retired);
        assert!(s.assignments_of("a").iter().all(|(v, _, _)| v == "v2"));
        // Idempotent: the same commands again change nothing.
        let before = s.clone();
        s.apply(&Command::Activate { version: "v2".into() });
        s.apply(&version("v2", 3));
        assert_eq!(s, before);
        assert!(matches!(s.apply(&Command::Retire { version: "v2".into() }), Applied::Refused(_)));
        assert!(matches!(s.apply(&Command::Activate { version: "v1".into() }), Applied::Refused(_)));
    }

    #[test]
    fn commands_round_trip_as_json() {
        let c = Command::Activate { version: "v2".into() };
        let j = serde_json::to_string(&c).unwrap();
        assert_eq!(j, r#"{"activate":{"version":"v2"}}"#);
        assert_eq!(serde_json::from_str::<Command>(&j).unwrap(), c);
        assert!(serde_json::from_str::<Command>(r#"{"activate":{"version":"v2","x":1}}"#).is_err());
    }
}
