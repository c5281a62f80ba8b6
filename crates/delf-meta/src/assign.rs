//! Shard placement, run inside [`crate::MetaState::apply`] (so deterministic): every shard of every version that is
//! not retired keeps the up index nodes it has and gets more, up to its replica count, from the up index nodes with
//! the fewest shards (ties by name). Shards of a node that went down move to others; nothing else moves.

use std::collections::BTreeMap;

use crate::state::{MetaState, NodeRole, VersionState};

/// Brings every assignment back to its replica count with the nodes that are up.
pub fn rebalance(state: &mut MetaState) {
    let up: Vec<String> = state
        .nodes
        .iter()
        .filter(|(_, n)| n.up && n.role == NodeRole::IndexNode)
        .map(|(name, _)| name.clone())
        .collect();
    // Drop nodes that are down or gone.
    for v in state.versions.values_mut() {
        for replicas in &mut v.assignment {
            replicas.retain(|n| up.contains(n));
        }
    }
    let mut load: BTreeMap<String, usize> = up.iter().map(|n| (n.clone(), 0)).collect();
    for v in state.versions.values() {
        for n in v.assignment.iter().flatten() {
            *load.entry(n.clone()).or_default() += 1;
        }
    }
    for v in state.versions.values_mut() {
        if v.state == VersionState::Retired {
            continue;
        }
        let wanted = (v.replicas as usize).min(up.len());
        for replicas in &mut v.assignment {
            while replicas.len() < wanted {
                let Some(next) = load
                    .iter()
                    .filter(|(n, _)| !replicas.contains(n))
                    .min_by_key(|(n, l)| (**l, (*n).clone()))
                    .map(|(n, _)| n.clone())
                else {
                    break;
                };
                *load.entry(next.clone()).or_default() += 1;
                replicas.push(next);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::state::{Command, MetaState, NodeRole};

    fn node(state: &mut MetaState, name: &str) {
        state.apply(&Command::RegisterNode { node: name.into(), role: NodeRole::IndexNode, address: "h:1".into() });
    }

    fn loads(state: &MetaState) -> Vec<usize> {
        state.nodes.keys().map(|n| state.assignments_of(n).len()).collect()
    }

    #[test]
    fn shards_spread_evenly_and_move_off_a_dead_node() {
        let mut s = MetaState::default();
        for n in ["a", "b", "c"] {
            node(&mut s, n);
        }
        s.apply(&Command::RegisterVersion {
            version: "v1".into(),
            index_name: "default".into(),
            uri: "/i".into(),
            shards: 3,
            descriptor_fingerprint: "fp".into(),
            replicas: 2,
        });
        assert_eq!(loads(&s), vec![2, 2, 2]);
        for replicas in &s.versions["v1"].assignment {
            assert_eq!(replicas.len(), 2);
            assert_ne!(replicas[0], replicas[1]);
        }
        s.apply(&Command::NodeDown { node: "b".into() });
        assert_eq!(loads(&s), vec![3, 0, 3]);
        assert!(s.versions["v1"].assignment.iter().all(|r| r.len() == 2));
        // Back up: it gets shards of new versions; nothing moves from the others.
        node(&mut s, "b");
        assert_eq!(loads(&s), vec![3, 0, 3]);
        s.apply(&Command::NodeDown { node: "a".into() });
        s.apply(&Command::NodeDown { node: "c".into() });
        assert!(s.versions["v1"].assignment.iter().all(|r| r == &vec!["b".to_string()]));
    }
}
