//! `delf features inspect PREFIX`: what a batch extraction job holds: the job, committed units, counts, the
//! schema of its files and its failures; `--verify` re-reads every committed file.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use delf_features::shard_file::read_errors;
use delf_features::{FeatureFileReader, FeatureStore};
use delf_storage::Stores;

use crate::cli::{FeaturesCommand, FeaturesInspectArgs};

/// `delf features ...`.
pub fn run(command: &FeaturesCommand) -> Result<()> {
    match command {
        FeaturesCommand::Inspect(args) => inspect(args),
    }
}

fn inspect(args: &FeaturesInspectArgs) -> Result<()> {
    let rt = delf_engine::io_runtime()?;
    let stores = Stores::new();
    let store = FeatureStore::new(stores.location(&args.prefix)?);
    let loc = store.location().clone();
    let manifest = rt.block_on(store.manifest())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&manifest)?);
    } else {
        let job = &manifest.job;
        println!("job {} at {}", job.job_id, loc.uri());
        println!("  list:        {} ({} images, crc32 {})", job.list, job.images, job.list_checksum);
        println!(
            "  units:       {} of {} committed ({} images each){}",
            manifest.units.len(),
            job.units,
            job.unit_size,
            if manifest.complete { ", complete" } else { "" }
        );
        println!(
            "  descriptors: {}-d, fingerprint {}{}",
            job.dim,
            job.fingerprint,
            if job.pca { ", PCA in pca.safetensors" } else { "" }
        );
        println!(
            "  extracted:   {} images, {} descriptors ({:.0} per image)",
            manifest.rows,
            manifest.descriptors,
            manifest.descriptors as f64 / manifest.rows.max(1) as f64
        );
        println!("  failed:      {} images", manifest.failures);
        println!(
            "  parquet:     {:.2} MB ({:.0} bytes per image, {:.1} per descriptor)",
            manifest.features_bytes as f64 / 1e6,
            manifest.features_bytes as f64 / manifest.rows.max(1) as f64,
            manifest.features_bytes as f64 / manifest.descriptors.max(1) as f64
        );
        if let Some(first) = manifest.units.first() {
            let reader = rt.block_on(FeatureFileReader::open(&loc, &loc.child(&first.features_file)))?;
            println!(
                "schema (version {}, from {}):",
                reader.header.metadata.get(delf_features::schema::META_SCHEMA_VERSION).map_or("?", |v| v),
                first.features_file
            );
            let schema = delf_features::schema::feature_schema(reader.header.dim, &reader.header.fingerprint, &[]);
            for field in schema.fields() {
                println!("  {:<12} {}", field.name(), field.data_type());
            }
        }
    }
    let mut kinds: BTreeMap<&'static str, usize> = BTreeMap::new();
    if args.errors || !args.json {
        for unit in manifest.units.iter().filter(|u| u.errors_file.is_some()) {
            let key = unit.errors_file.as_deref().unwrap_or_default();
            for e in rt.block_on(read_errors(&loc, &loc.child(key)))? {
                *kinds.entry(e.kind.as_str()).or_default() += 1;
                if args.errors {
                    println!("failed {} ({}): {}: {}", e.image_id, e.uri, e.kind.as_str(), e.message);
                }
            }
        }
        if !args.json && !kinds.is_empty() {
            let parts: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
            println!("failures by kind: {}", parts.join(", "));
        }
    }
    if args.verify {
        let mut bad = Vec::new();
        for unit in &manifest.units {
            if let Err(e) = rt.block_on(store.verify_unit(unit)) {
                bad.push(format!("unit {}: {e:#}", unit.unit));
            }
        }
        if !bad.is_empty() {
            for b in &bad {
                eprintln!("{b}");
            }
            bail!(delf_features::StoreError::Schema {
                uri: loc.uri(),
                reason: format!(
                    "{} of {} committed units do not match their commit records",
                    bad.len(),
                    manifest.units.len()
                ),
            });
        }
        println!("verified {} committed units: checksums, row and descriptor counts match", manifest.units.len());
    }
    Ok(())
}
