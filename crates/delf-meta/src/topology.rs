//! The coordinator's routing from the replicated state: the active version of `meta.index_name`, for every shard
//! the index nodes assigned to it that are up and have it loaded, and the workers that are up (plus any listed in
//! `[cluster] workers`). Installed whole whenever it changes; queries in flight keep the one they started with.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use delf_cluster::ShardReplicas;
use delf_cluster::coordinator::{CoordinatorService, Topology};
use delf_search::IndexManifest;
use delf_search::manifest::MANIFEST_FILE;
use delf_storage::Stores;

use crate::handle::RaftHandle;
use crate::state::{MetaState, NodeRole};

/// What the coordinator should route to, without the manifest: (version, URI, shards, workers).
pub type Desired = (String, String, Vec<ShardReplicas>, Vec<String>);

/// The routing the state asks for, or None while `index_name` has no active version.
pub fn desired(state: &MetaState, index_name: &str, static_workers: &[String]) -> Option<Desired> {
    let version = state.active.get(index_name)?;
    let v = state.versions.get(version)?;
    let shards = (0..v.shards)
        .map(|id| ShardReplicas {
            id,
            replicas: state.ready_replicas(version, id).into_iter().map(|n| n.address.clone()).collect(),
        })
        .collect();
    let mut workers: Vec<String> = state
        .nodes
        .values()
        .filter(|n| n.up && n.role == NodeRole::Worker)
        .map(|n| n.address.clone())
        .chain(static_workers.iter().cloned())
        .collect();
    workers.sort();
    workers.dedup();
    Some((version.clone(), v.uri.clone(), shards, workers))
}

/// Keeps `service`'s topology equal to what the state asks for, forever.
pub async fn follow(
    raft: RaftHandle,
    service: CoordinatorService,
    index_name: String,
    static_workers: Vec<String>,
    stores: Arc<Stores>,
    cache_dir: PathBuf,
) {
    let mut applied = raft.applied();
    let mut installed: Option<Desired> = None;
    let mut manifests: HashMap<String, IndexManifest> = HashMap::new();
    loop {
        let (state, _) = raft.state();
        let want = desired(&state, &index_name, &static_workers);
        if want.is_some()
            && want != installed
            && let Some((version, uri, shards, workers)) = want.clone()
        {
            let manifest = match manifests.get(&version) {
                Some(m) => Ok(m.clone()),
                None => load_manifest(&stores, &uri, &cache_dir).await,
            };
            match manifest {
                Ok(manifest) => {
                    manifests.insert(version.clone(), manifest.clone());
                    let topology = Topology { version: version.clone(), manifest, shards, workers };
                    match service.set_topology(topology) {
                        Ok(()) => installed = want,
                        Err(e) => tracing::warn!(%version, error = %e, "topology not installed yet"),
                    }
                }
                Err(e) => {
                    tracing::error!(%version, %uri, error = %e, "the manifest of the active version is unreadable")
                }
            }
        }
        // Wake on the next applied entry, or retry after a while (a manifest that could not be read).
        let _ = tokio::time::timeout(Duration::from_secs(2), applied.changed()).await;
    }
}

async fn load_manifest(stores: &Stores, uri: &str, cache: &std::path::Path) -> Result<IndexManifest, String> {
    let dir = delf_storage::mirror::local_folder(stores, uri, cache, &[MANIFEST_FILE.to_string()])
        .await
        .map_err(|e| e.to_string())?;
    IndexManifest::load(&dir).map_err(|e| e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::state::Command;

    #[test]
    fn routing_lists_ready_replicas_of_the_active_version_and_up_workers() {
        let mut s = MetaState::default();
        assert_eq!(desired(&s, "default", &[]), None);
        for (node, role) in [("a", NodeRole::IndexNode), ("b", NodeRole::IndexNode), ("w", NodeRole::Worker)] {
            s.apply(&Command::RegisterNode { node: node.into(), role, address: format!("{node}:1") });
        }
        s.apply(&Command::RegisterVersion {
            version: "v1".into(),
            index_name: "default".into(),
            uri: "/i1".into(),
            shards: 2,
            descriptor_fingerprint: "fp".into(),
            replicas: 2,
        });
        let all: std::collections::BTreeSet<(String, u32)> = [("v1".to_string(), 0), ("v1".to_string(), 1)].into();
        s.apply(&Command::ReportLoaded { node: "a".into(), loaded: all.clone() });
        s.apply(&Command::Activate { version: "v1".into() });
        let (version, uri, shards, workers) = desired(&s, "default", &["static:2".into()]).unwrap();
        assert_eq!((version.as_str(), uri.as_str()), ("v1", "/i1"));
        // b has not loaded anything yet: only a serves.
        assert!(shards.iter().all(|r| r.replicas == vec!["a:1".to_string()]));
        assert_eq!(workers, vec!["static:2".to_string(), "w:1".to_string()]);
        s.apply(&Command::ReportLoaded { node: "b".into(), loaded: all });
        s.apply(&Command::NodeDown { node: "a".into() });
        let (_, _, shards, _) = desired(&s, "default", &[]).unwrap();
        assert!(shards.iter().all(|r| r.replicas == vec!["b:1".to_string()]));
    }
}
