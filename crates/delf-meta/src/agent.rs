//! What index nodes and workers of a Raft-managed cluster run: a heartbeat to the coordinators every
//! `meta.heartbeat_ms` (registers the node, keeps it alive, reports the shards it serves), and for index nodes,
//! following the assignment in the answer: load newly assigned shards in the background, and unload shards
//! unassigned for `meta.retire_grace_ms` (queries that started on a retired version finish on it).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use delf_cluster::index_node::{IndexNodeService, ShardKey};
use delf_proto::v1 as pb;
use delf_storage::Stores;

use crate::client::Coordinators;
use crate::state::NodeRole;

/// An index node's shards and where to load them from.
#[derive(Clone)]
pub struct ShardHost {
    /// The service that serves the loaded shards.
    pub service: IndexNodeService,
    /// Object stores for remote index versions.
    pub stores: Arc<Stores>,
    /// Cache folder for fetched index files.
    pub cache_dir: PathBuf,
}

/// A node's membership in the cluster.
pub struct Agent {
    /// Node name (stable across restarts).
    pub node: String,
    /// What it does.
    pub role: NodeRole,
    /// Where coordinators reach it.
    pub address: String,
    /// The coordinators.
    pub coordinators: Coordinators,
    /// Heartbeat period.
    pub interval: Duration,
    /// How long an unassigned shard stays loaded.
    pub grace: Duration,
    /// Index nodes: their shards.
    pub host: Option<ShardHost>,
}

impl Agent {
    /// Heartbeats forever.
    pub async fn run(self) {
        let in_flight: Arc<Mutex<BTreeSet<ShardKey>>> = Arc::default();
        let mut unassigned_since: HashMap<ShardKey, Instant> = HashMap::new();
        loop {
            let serving = self.host.as_ref().map(|h| h.service.serving()).unwrap_or_default();
            let request = pb::HeartbeatRequest {
                node: self.node.clone(),
                role: self.role.as_str().into(),
                address: self.address.clone(),
                loaded: serving
                    .iter()
                    .filter(|(v, _)| !v.is_empty())
                    .map(|(version, shard)| pb::LoadedShard { version: version.clone(), shard: *shard })
                    .collect(),
                forwarded: false,
            };
            match self.coordinators.heartbeat(request).await {
                Ok(r) => {
                    if let Some(host) = &self.host {
                        self.follow(host, &r.assignments, &serving, &in_flight, &mut unassigned_since);
                    }
                }
                Err(s) => tracing::warn!(code = ?s.code(), message = s.message(), "heartbeat not answered"),
            }
            tokio::time::sleep(self.interval).await;
        }
    }

    fn follow(
        &self,
        host: &ShardHost,
        assignments: &[pb::ShardAssignment],
        serving: &[ShardKey],
        in_flight: &Arc<Mutex<BTreeSet<ShardKey>>>,
        unassigned_since: &mut HashMap<ShardKey, Instant>,
    ) {
        let assigned: BTreeSet<ShardKey> = assignments.iter().map(|a| (a.version.clone(), a.shard)).collect();
        for a in assignments {
            let key = (a.version.clone(), a.shard);
            if serving.contains(&key) {
                continue;
            }
            if !in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key.clone()) {
                continue;
            }
            let (host, in_flight, a) = (host.clone(), Arc::clone(in_flight), a.clone());
            tokio::spawn(async move {
                tracing::info!(version = %a.version, shard = a.shard, index = %a.index, "loading an assigned shard");
                let r = host.service.load_shard(&a.version, &a.index, a.shard, &host.stores, &host.cache_dir).await;
                if let Err(e) = r {
                    tracing::error!(version = %a.version, shard = a.shard, error = %e, "assigned shard not loaded; retrying");
                }
                in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&(a.version, a.shard));
            });
        }
        unassigned_since.retain(|k, _| !assigned.contains(k));
        for key in serving.iter().filter(|k| !k.0.is_empty() && !assigned.contains(k)) {
            let since = *unassigned_since.entry(key.clone()).or_insert_with(Instant::now);
            if since.elapsed() >= self.grace {
                host.service.unload(&key.0, key.1);
                unassigned_since.remove(key);
            }
        }
    }
}
