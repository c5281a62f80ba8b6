//! `delf cluster meta|register|activate|retire|label|rebalance|members`: administration of a Raft-managed cluster
//! (docs/cluster-metadata.md) through any coordinator (followers forward to the leader), authenticated with the
//! cluster's token / mTLS like every other call.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use delf_engine::Config;
use delf_meta::client::Coordinators;
use delf_meta::{Applied, Command};
use delf_proto::v1 as pb;
use delf_rpc::client;
use delf_search::IndexManifest;
use delf_search::manifest::MANIFEST_FILE;

use crate::cli::{ClusterCommand, MembersCommand};
use crate::commands::query::{RemoteError, connect};

/// How long an administrative command keeps retrying while no coordinator can take it (a leader election after the
/// leader died, a coordinator restarting): many election timeouts, so that an operator's command issued during a
/// failover waits for the new leader instead of failing.
const ADMIN_WAIT: Duration = Duration::from_secs(30);

fn coordinators(config: &Config) -> Result<Coordinators> {
    let meta = &config.meta;
    if !meta.enabled() {
        bail!(delf_meta::MetaError::Config(
            "meta.coordinators is empty: this cluster is not managed with Raft (docs/cluster-metadata.md)".into()
        ));
    }
    meta.validate()?;
    Ok(Coordinators::new(&meta.addresses(), &config.cluster.security()?, meta.request_timeout().max(ADMIN_WAIT))?)
}

fn print_applied(index: u64, applied: &Applied) {
    match applied {
        Applied::Ok(note) => println!("{note} (log index {index})"),
        Applied::Refused(why) => println!("refused: {why}"),
    }
}

/// `delf cluster status`: the coordinator's view of the index, its shards and workers.
fn status(coordinator: Option<&String>, json: bool, config: &Config) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let _in_runtime = rt.enter();
    let mut c = connect(coordinator, config)?;
    let id = client::new_request_id();
    let request =
        client::request(pb::ClusterStatusRequest {}, &id, config.cluster.token.as_deref(), Duration::from_secs(10));
    let s = rt.block_on(c.cluster_status(request)).map_err(RemoteError::from).context("cluster status")?.into_inner();
    if json {
        let shards: Vec<serde_json::Value> = s
            .shards
            .iter()
            .map(|sh| serde_json::json!({"shard": sh.shard_id, "replicas": sh.replicas, "healthy": sh.healthy}))
            .collect();
        let v = serde_json::json!({
            "version": s.version,
            "index_spec": s.index_spec,
            "descriptor_fingerprint": s.descriptor_fingerprint,
            "shard_count": s.shard_count,
            "images": s.images,
            "descriptors": s.descriptors,
            "shards": shards,
            "workers": s.workers,
            "workers_healthy": s.workers_healthy,
        });
        println!("{v}");
    } else {
        let version = if s.version.is_empty() { String::new() } else { format!("version {}: ", s.version) };
        println!(
            "{version}index {} ({} shards, {} images, {} descriptors), descriptors {}",
            s.index_spec, s.shard_count, s.images, s.descriptors, s.descriptor_fingerprint
        );
        for sh in &s.shards {
            let replicas: Vec<String> = sh
                .replicas
                .iter()
                .zip(&sh.healthy)
                .map(|(a, h)| format!("{a} ({})", if *h { "ready" } else { "DOWN" }))
                .collect();
            let up = sh.healthy.iter().filter(|h| **h).count();
            println!("  shard {}: {up}/{} ready: {}", sh.shard_id, sh.replicas.len(), replicas.join(", "));
        }
        for (w, h) in s.workers.iter().zip(&s.workers_healthy) {
            println!("  worker {w}: {}", if *h { "serving" } else { "DOWN" });
        }
    }
    Ok(())
}

/// `delf cluster ...`: the status, or a metadata subcommand.
pub fn run(command: &ClusterCommand, config: &Config) -> Result<()> {
    if let ClusterCommand::Status { coordinator, json } = command {
        return status(coordinator.as_ref(), *json, config);
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let _in_runtime = rt.enter();
    let c = coordinators(config)?;
    let propose = |command: Command| -> Result<(u64, Applied)> {
        rt.block_on(c.propose(&command)).map_err(RemoteError::from).context("proposal")
    };
    match command {
        ClusterCommand::Status { .. } => Ok(()), // answered above
        ClusterCommand::Meta { json } => {
            let (state, applied) =
                rt.block_on(c.state(false)).map_err(RemoteError::from).context("reading the state")?;
            if *json {
                println!("{}", serde_json::json!({"applied_index": applied, "state": state}));
                return Ok(());
            }
            for (addr, r) in rt.block_on(c.raft_statuses()) {
                match r {
                    Ok(s) => println!(
                        "coordinator {} at {addr}: {} (term {}, leader {}, commit {}, applied {}, snapshot {}, voters {:?})",
                        s.id, s.role, s.term, s.leader, s.commit, s.applied, s.snapshot_index, s.voters
                    ),
                    Err(e) => println!("coordinator at {addr}: DOWN ({:?}: {})", e.code(), e.message()),
                }
            }
            for (name, v) in &state.versions {
                let active = state.active.get(&v.index_name).is_some_and(|a| a == name);
                println!(
                    "version {name}: {:?}{} index {} ({} shards x {} replicas) at {}",
                    v.state,
                    if active { " (serving)" } else { "" },
                    v.index_name,
                    v.shards,
                    v.replicas,
                    v.uri
                );
                for (shard, nodes) in v.assignment.iter().enumerate() {
                    let ready = state.ready_replicas(name, shard as u32).len();
                    let moving: String = v
                        .moving
                        .iter()
                        .filter(|m| m.shard as usize == shard)
                        .map(|m| format!(" (moving {} -> {})", m.from, m.to))
                        .collect();
                    println!("  shard {shard}: {ready}/{} ready on {}{moving}", nodes.len(), nodes.join(", "));
                }
            }
            for (name, n) in &state.nodes {
                println!(
                    "node {name} ({}) at {}: {}, {} shards loaded",
                    n.role.as_str(),
                    n.address,
                    if n.up { "up" } else { "DOWN" },
                    n.loaded.len()
                );
            }
            Ok(())
        }
        ClusterCommand::Register { version, index, name, replicas } => {
            let stores = delf_storage::Stores::new();
            let cache = config.cluster.cache_dir.clone().unwrap_or_else(|| config.home.join("cluster-cache"));
            let files = [MANIFEST_FILE.to_string()];
            let dir = rt.block_on(delf_storage::mirror::local_folder(&stores, index, &cache, &files))?;
            let manifest = IndexManifest::load(&dir)?;
            let (at, applied) = propose(Command::RegisterVersion {
                version: version.clone(),
                index_name: name.clone().unwrap_or_else(|| config.meta.index_name.clone()),
                uri: index.clone(),
                shards: manifest.shards,
                descriptor_fingerprint: manifest.descriptor_fingerprint.clone(),
                replicas: *replicas,
            })?;
            print_applied(at, &applied);
            Ok(())
        }
        ClusterCommand::Activate { version, wait_secs } => {
            let (at, applied) = rt
                .block_on(c.activate_when_ready(version, Duration::from_secs(*wait_secs)))
                .map_err(RemoteError::from)
                .context("activation")?;
            print_applied(at, &applied);
            Ok(())
        }
        ClusterCommand::Retire { version } => {
            let (at, applied) = propose(Command::Retire { version: version.clone() })?;
            print_applied(at, &applied);
            Ok(())
        }
        ClusterCommand::Label { key, value } => {
            let (at, applied) = propose(Command::SetLabel { key: key.clone(), value: value.clone() })?;
            print_applied(at, &applied);
            Ok(())
        }
        ClusterCommand::Rebalance { wait_secs } => {
            let (at, applied) = propose(Command::Rebalance {})?;
            print_applied(at, &applied);
            let started = Instant::now();
            loop {
                let (state, _) = rt.block_on(c.state(false)).map_err(RemoteError::from).context("reading the state")?;
                let pending: usize = state.versions.values().map(|v| v.moving.len()).sum();
                if pending == 0 {
                    if *wait_secs > 0 {
                        println!("every move finished");
                    }
                    return Ok(());
                }
                if started.elapsed() >= Duration::from_secs(*wait_secs) {
                    if *wait_secs > 0 {
                        bail!(delf_meta::MetaError::Timeout(format!(
                            "{pending} moves still loading after {wait_secs} s (see `delf cluster meta`)"
                        )));
                    }
                    println!("{pending} moves loading (`delf cluster meta` shows them)");
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        ClusterCommand::Members { change } => {
            let (id, address, remove) = match change {
                MembersCommand::Add { id, address } => (*id, address.clone(), false),
                MembersCommand::Remove { id } => (*id, String::new(), true),
            };
            let voters = rt
                .block_on(c.change_members(id, &address, remove))
                .map_err(RemoteError::from)
                .context("membership change")?;
            println!("voters: {voters:?}");
            Ok(())
        }
    }
}
