//! Shard placement, run inside [`crate::MetaState::apply`] (so deterministic): every shard of every version that is
//! not retired keeps the up index nodes it has and gets more, up to its replica count, from the up index nodes with
//! the fewest shards (ties by name). Shards of a node that went down move to others; nothing else moves on its own.
//! `Command::Rebalance` evens out the load by moving replicas, each loaded on its new node before the old one
//! lets go of it.

use std::collections::BTreeMap;

use crate::state::{MetaState, NodeRole, ShardMove, VersionState};

fn up_index_nodes(state: &MetaState) -> Vec<String> {
    state.nodes.iter().filter(|(_, n)| n.up && n.role == NodeRole::IndexNode).map(|(name, _)| name.clone()).collect()
}

/// Brings every assignment back to its replica count with the nodes that are up.
pub fn rebalance(state: &mut MetaState) {
    let up = up_index_nodes(state);
    // Drop nodes that are down or gone; a move whose source or target left is over (cancelled, or a replacement).
    for v in state.versions.values_mut() {
        for replicas in &mut v.assignment {
            replicas.retain(|n| up.contains(n));
        }
        let assignment = &v.assignment;
        v.moving.retain(|m| {
            let replicas = &assignment[m.shard as usize];
            replicas.contains(&m.from) && replicas.contains(&m.to)
        });
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

/// Plans and starts moves until the up index nodes hold shard counts at most one apart (counting a replica being
/// moved at its destination): each move adds the destination to the shard's assignment; [`finish_moves`] drops the
/// source once the destination reports the shard loaded. Returns the moves started.
pub fn plan_moves(state: &mut MetaState) -> Vec<(String, ShardMove)> {
    let up = up_index_nodes(state);
    let mut load: BTreeMap<String, usize> = up.iter().map(|n| (n.clone(), 0)).collect();
    for v in state.versions.values() {
        for n in v.assignment.iter().flatten() {
            if let Some(l) = load.get_mut(n) {
                *l += 1;
            }
        }
        for m in &v.moving {
            if let Some(l) = load.get_mut(&m.from) {
                *l -= 1;
            }
        }
    }
    let mut started = Vec::new();
    while let (Some((most, &high)), Some((least, &low))) = (
        load.iter().max_by_key(|(n, l)| (**l, std::cmp::Reverse((*n).clone()))),
        load.iter().min_by_key(|(n, l)| (**l, (*n).clone())),
    ) {
        if high <= low + 1 {
            break;
        }
        let (most, least) = (most.clone(), least.clone());
        // The first shard (by version, then number) on `most` that `least` lacks and that is not moving already.
        let candidate =
            state.versions.iter().filter(|(_, v)| v.state != VersionState::Retired).find_map(|(name, v)| {
                (0..v.shards).find_map(|shard| {
                    let replicas = &v.assignment[shard as usize];
                    let free = replicas.contains(&most)
                        && !replicas.contains(&least)
                        && !v.moving.iter().any(|m| m.shard == shard);
                    free.then(|| (name.clone(), shard))
                })
            });
        let Some((version, shard)) = candidate else { break };
        let m = ShardMove { shard, from: most.clone(), to: least.clone() };
        if let Some(v) = state.versions.get_mut(&version) {
            v.assignment[shard as usize].push(least.clone());
            v.moving.push(m.clone());
        }
        *load.entry(most).or_default() -= 1;
        *load.entry(least).or_default() += 1;
        started.push((version, m));
    }
    started
}

/// Completes the moves to `node` whose shard it now reports loaded: the source node is unassigned (it unloads
/// after the retire grace period, so queries routed to it finish). Returns a note for the log ("" when none).
pub fn finish_moves(state: &mut MetaState, node: &str) -> String {
    let Some(loaded) = state.nodes.get(node).map(|n| n.loaded.clone()) else { return String::new() };
    let mut done = Vec::new();
    for (name, v) in &mut state.versions {
        let (finished, pending): (Vec<ShardMove>, Vec<ShardMove>) =
            v.moving.drain(..).partition(|m| m.to == node && loaded.contains(&(name.clone(), m.shard)));
        v.moving = pending;
        for m in finished {
            v.assignment[m.shard as usize].retain(|n| *n != m.from);
            done.push(format!("{name}/{} from {}", m.shard, m.from));
        }
    }
    if done.is_empty() { String::new() } else { format!("; moved here: {}", done.join(", ")) }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::state::{Applied, Command, MetaState, NodeRole};

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

    /// Ready replicas of every shard of `version` (assigned, up, loaded).
    fn ready(s: &MetaState, version: &str) -> Vec<usize> {
        (0..s.versions[version].shards).map(|shard| s.ready_replicas(version, shard).len()).collect()
    }

    fn report_assigned(s: &mut MetaState, node: &str) {
        let loaded = s.assignments_of(node).into_iter().map(|(v, sh, _)| (v, sh)).collect();
        s.apply(&Command::ReportLoaded { node: node.into(), loaded });
    }

    #[test]
    fn rebalance_moves_replicas_to_new_nodes_make_before_break() {
        let mut s = MetaState::default();
        for n in ["a", "b"] {
            node(&mut s, n);
        }
        s.apply(&Command::RegisterVersion {
            version: "v1".into(),
            index_name: "default".into(),
            uri: "/i".into(),
            shards: 4,
            descriptor_fingerprint: "fp".into(),
            replicas: 2,
        });
        for n in ["a", "b"] {
            report_assigned(&mut s, n);
        }
        assert_eq!(ready(&s, "v1"), vec![2, 2, 2, 2]);
        // Two empty nodes join: nothing moves on its own.
        node(&mut s, "c");
        node(&mut s, "d");
        assert_eq!(loads(&s), vec![4, 4, 0, 0]);
        let applied = s.apply(&Command::Rebalance {});
        assert!(matches!(&applied, Applied::Ok(m) if m.starts_with("moving 4 replicas")), "{applied:?}");
        // The sources still serve: every shard keeps its two ready replicas while the targets load.
        assert_eq!(ready(&s, "v1"), vec![2, 2, 2, 2]);
        assert_eq!(s.versions["v1"].moving.len(), 4);
        // Asked again while moving: the plan already counts the moves, nothing more starts.
        assert_eq!(s.apply(&Command::Rebalance {}), Applied::Ok("balanced: no replica to move".into()));
        // c loads its shards: its moves finish, the sources let go; d has not loaded yet.
        report_assigned(&mut s, "c");
        assert_eq!(s.versions["v1"].moving.len(), 2);
        assert_eq!(ready(&s, "v1").iter().sum::<usize>(), 8);
        assert!(ready(&s, "v1").iter().all(|&r| r == 2));
        // d dies before loading: its moves are cancelled, the sources keep their shards.
        s.apply(&Command::NodeDown { node: "d".into() });
        assert!(s.versions["v1"].moving.is_empty());
        assert!(ready(&s, "v1").iter().all(|&r| r == 2));
        assert_eq!(loads(&s), vec![2, 4, 2, 0]);
        // Back, and balanced again in one step.
        node(&mut s, "d");
        s.apply(&Command::Rebalance {});
        report_assigned(&mut s, "d");
        assert_eq!(loads(&s), vec![2, 2, 2, 2]);
        assert!(s.versions["v1"].moving.is_empty());
        assert!(s.versions["v1"].assignment.iter().all(|r| r.len() == 2 && r[0] != r[1]));
        assert!(ready(&s, "v1").iter().all(|&r| r == 2));
        // Loaded shards the agents still report for shards they let go of do not count as assigned.
        for n in ["a", "b", "c", "d"] {
            report_assigned(&mut s, n);
        }
        assert_eq!(s.apply(&Command::Rebalance {}), Applied::Ok("balanced: no replica to move".into()));
    }
}
