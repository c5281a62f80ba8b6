//! The replicated state machine. Every coordinator applies the same committed [`Command`]s in the same order to a
//! [`MetaState`], so [`MetaState::apply`] is deterministic: no clocks, no randomness, no I/O (time-based
//! decisions, such as a node being gone, are made by the leader and enter the log as commands). Placing shards on
//! nodes is [`crate::assign`]'s.

use std::collections::BTreeSet;

use crate::state::{Applied, Command, IndexVersion, MetaState, NodeRecord, VersionState};

/// How the state machine's refusal of an activation before every shard has a ready replica ends; clients that
/// wait for readiness ([`crate::Coordinators::activate_when_ready`]) recognise it by this.
pub const NOT_READY: &str = "has no ready replica yet";

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
            Command::SetLabel { key, value } => {
                if key.is_empty() {
                    return refused("a label needs a key");
                }
                if value.is_empty() {
                    self.labels.remove(key);
                    return Applied::Ok(format!("label {key} removed"));
                }
                self.labels.insert(key.clone(), value.clone());
                Applied::Ok(format!("label {key} = {value}"))
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
                    return refused(format!("shard {shard} of version {version} {NOT_READY}"));
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
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::state::NodeRole;

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
    fn labels_are_set_replaced_and_removed() {
        let mut s = MetaState::default();
        let set = |k: &str, v: &str| Command::SetLabel { key: k.into(), value: v.into() };
        assert!(matches!(s.apply(&set("", "x")), Applied::Refused(_)));
        s.apply(&set("on-call", "ana"));
        s.apply(&set("on-call", "bo"));
        assert_eq!(s.labels.get("on-call").map(String::as_str), Some("bo"));
        s.apply(&set("on-call", ""));
        assert!(s.labels.is_empty());
        // A state serialised before labels existed still reads.
        let old = r#"{"coordinators":{},"nodes":{},"versions":{},"active":{}}"#;
        assert_eq!(serde_json::from_str::<MetaState>(old).unwrap(), MetaState::default());
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
