//! The seeded fault schedule of `delf bench chaos`: which process to SIGKILL or SIGSTOP next, and for how long,
//! within the rules that keep the cluster able to answer: never a majority of the Raft coordinators down, never
//! every worker, and an index node only while every shard has all its replicas ready (so one node down leaves
//! each of its shards a replica). Pure: the same seed and the same cluster states give the same faults (a run's
//! states depend on timing, so two runs of one seed may differ).

use std::time::Duration;

use delf_core::rng::SplitMix64;
use serde::Serialize;

/// The kind of process a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// A Raft coordinator.
    Coordinator,
    /// An index node.
    IndexNode,
    /// A verification worker.
    Worker,
}

/// What is done to the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// SIGKILL, then started again (same name, address and data folder) when the fault ends.
    Kill,
    /// SIGSTOP (the process holds its sockets but answers nothing), then SIGCONT when the fault ends.
    Stop,
}

/// One fault: `kind` on process `index` of `target`, lasting `lasts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// The kind of process.
    pub target: Target,
    /// Which one (position among the processes of that kind).
    pub index: usize,
    /// Kill or stop.
    pub kind: FaultKind,
    /// Until it is restarted or continued.
    pub lasts: Duration,
}

/// How many processes of each kind run, and which are faulted now.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    /// Raft coordinators (voters).
    pub coordinators: usize,
    /// Index nodes.
    pub index_nodes: usize,
    /// Workers.
    pub workers: usize,
    /// The processes under a fault now.
    pub faulted: Vec<(Target, usize)>,
    /// Whether every shard of every version being served or loaded has all its replicas ready (from the
    /// replicated state): only then may an index node be faulted, and only one at a time.
    pub every_replica_ready: bool,
}

impl Target {
    /// Its name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Coordinator => "coordinator",
            Target::IndexNode => "index_node",
            Target::Worker => "worker",
        }
    }
}

impl FaultKind {
    /// Its name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Stop => "stop",
        }
    }
}

impl Cluster {
    fn count(&self, t: Target) -> usize {
        match t {
            Target::Coordinator => self.coordinators,
            Target::IndexNode => self.index_nodes,
            Target::Worker => self.workers,
        }
    }

    /// How many processes of kind `t` may be down at once.
    pub fn may_fault(&self, t: Target) -> usize {
        match t {
            // A majority must stay up: 1 of 3, 2 of 5.
            Target::Coordinator => self.coordinators.saturating_sub(1) / 2,
            Target::Worker => self.workers.saturating_sub(1),
            // With every replica of every shard ready, any one node down leaves each shard another replica.
            Target::IndexNode => usize::from(self.every_replica_ready),
        }
    }

    fn faulted_of(&self, t: Target) -> usize {
        self.faulted.iter().filter(|(k, _)| *k == t).count()
    }
}

/// The next fault allowed in `cluster`, drawn from `rng`; `None` when no process may be faulted now. A fault lasts
/// 1 to 3 s: past the Raft election timeout (1-2 s) and, sometimes, past the time after which the leader declares
/// a silent node down (`meta.node_timeout_ms`) and moves its shards.
pub fn next_fault(rng: &mut SplitMix64, cluster: &Cluster) -> Option<Fault> {
    let allowed: Vec<Target> = [Target::Coordinator, Target::IndexNode, Target::Worker]
        .into_iter()
        .filter(|&t| cluster.faulted_of(t) < cluster.may_fault(t))
        .collect();
    if allowed.is_empty() {
        return None;
    }
    let target = allowed[rng.below(allowed.len())];
    let free: Vec<usize> = (0..cluster.count(target)).filter(|i| !cluster.faulted.contains(&(target, *i))).collect();
    let index = free[rng.below(free.len())];
    let kind = if rng.uniform() < 0.5 { FaultKind::Kill } else { FaultKind::Stop };
    let lasts = Duration::from_millis(1000 + rng.below(2001) as u64);
    Some(Fault { target, index, kind, lasts })
}

/// The pause before the next fault is tried: 0.5 to 2 s.
pub fn next_gap(rng: &mut SplitMix64) -> Duration {
    Duration::from_millis(500 + rng.below(1501) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(faulted: Vec<(Target, usize)>, ready: bool) -> Cluster {
        Cluster { coordinators: 3, index_nodes: 4, workers: 2, faulted, every_replica_ready: ready }
    }

    #[test]
    fn never_a_majority_every_worker_or_an_index_node_while_a_replica_is_missing() {
        let mut rng = SplitMix64(7);
        let mut c = cluster(Vec::new(), true);
        let mut seen = std::collections::BTreeSet::new();
        for step in 0..20_000 {
            // Faults end at random; readiness comes and goes.
            if !c.faulted.is_empty() && rng.uniform() < 0.4 {
                let i = rng.below(c.faulted.len());
                c.faulted.remove(i);
            }
            c.every_replica_ready = step % 3 != 0;
            if let Some(f) = next_fault(&mut rng, &c) {
                assert!(!c.faulted.contains(&(f.target, f.index)), "{f:?} is already faulted");
                if f.target == Target::IndexNode {
                    assert!(c.every_replica_ready, "an index node faulted while a replica was missing");
                }
                assert!((1000..=3000).contains(&f.lasts.as_millis()));
                seen.insert((f.target, f.kind));
                c.faulted.push((f.target, f.index));
            }
            assert!(c.faulted_of(Target::Coordinator) <= 1, "a Raft majority down: {:?}", c.faulted);
            assert!(c.faulted_of(Target::Worker) <= 1, "every worker down: {:?}", c.faulted);
            assert!(c.faulted_of(Target::IndexNode) <= 1, "two index nodes down: {:?}", c.faulted);
        }
        assert_eq!(seen.len(), 6, "every kind of fault on every kind of process: {seen:?}");
    }

    #[test]
    fn nothing_when_every_allowance_is_used_and_the_same_schedule_for_a_seed() {
        let full = cluster(vec![(Target::Coordinator, 0), (Target::Worker, 1), (Target::IndexNode, 2)], true);
        assert_eq!(next_fault(&mut SplitMix64(1), &full), None);
        assert_eq!(
            next_fault(&mut SplitMix64(1), &cluster(vec![(Target::Coordinator, 2), (Target::Worker, 0)], false)),
            None
        );
        let draw = |seed| {
            let mut rng = SplitMix64(seed);
            (0..50).map(|_| next_fault(&mut rng, &cluster(Vec::new(), true))).collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
        // Five coordinators may lose two.
        let five = Cluster { coordinators: 5, ..cluster(Vec::new(), false) };
        assert_eq!(five.may_fault(Target::Coordinator), 2);
    }
}
