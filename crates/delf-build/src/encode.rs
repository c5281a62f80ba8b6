//! The encode step of an index build: one shard, from the feature files of its units only (whole units per
//! shard, [`crate::assignment`]), in memory, ready to be written. The one-process build and the distributed
//! encode workers both call it, so their shard files are the same bytes.

use std::sync::Arc;

use delf_core::FeatureSet;
use delf_index::{Codebooks, NewImage, Shard, ShardInfo};

use crate::assignment::{UnitAssignment, UnitPlace};
use crate::error::BuildError;
use crate::job_rows::{JobRows, Reduction};
use crate::progress::Progress;

/// What encoding a shard needs besides the job's rows: the trained parts.
pub(crate) struct EncodeInputs<'a> {
    pub(crate) reduction: &'a Reduction,
    pub(crate) codebooks: &'a Arc<Codebooks>,
    pub(crate) fingerprint: &'a str,
    pub(crate) dim: usize,
    pub(crate) assignment: &'a UnitAssignment,
}

/// Encodes shard `shard` of the assignment: every image of its units, numbered as the assignment says.
pub(crate) fn encode_shard(
    rows: &JobRows<'_>,
    inputs: &EncodeInputs<'_>,
    shard: u32,
    progress: &mut dyn Progress,
) -> Result<Shard, BuildError> {
    let a = inputs.assignment;
    let info =
        ShardInfo { shard_id: shard, shard_count: a.shards(), descriptor_fingerprint: inputs.fingerprint.into() };
    let mut out = Shard::new(Arc::clone(inputs.codebooks), info);
    let places: std::collections::HashMap<usize, UnitPlace> = a.units_of(shard).map(|p| (p.unit, *p)).collect();
    let records: Vec<_> = rows.manifest.units.iter().filter(|u| places.contains_key(&u.unit)).collect();
    if records.len() != places.len() {
        return Err(BuildError::Input(format!(
            "the job's committed units do not match the build's assignment for shard {shard}: was the job changed?"
        )));
    }
    let (mut unit, mut row) = (usize::MAX, 0u32);
    rows.for_units(records.into_iter(), "encode", progress, |record, batch| {
        let place = places[&record.unit];
        if unit != record.unit {
            (unit, row) = (record.unit, 0);
        }
        let reduced: Vec<(String, FeatureSet)> =
            batch.into_iter().map(|(id, f)| Ok((id, inputs.reduction.apply(f)?))).collect::<Result<_, BuildError>>()?;
        let keypoints: Vec<(Vec<[f32; 2]>, Vec<f32>)> = reduced
            .iter()
            .map(|(_, f)| {
                (f.keypoints.iter().map(|k| [k.x, k.y]).collect(), f.keypoints.iter().map(|k| k.scale).collect())
            })
            .collect();
        let images: Vec<NewImage<'_>> = reduced
            .iter()
            .zip(&keypoints)
            .enumerate()
            .map(|(i, ((id, f), (kp, scales)))| NewImage {
                number: place.first_number + (row + i as u32) * a.shards(),
                name: id,
                descriptors: &f.descriptors,
                keypoints: kp,
                scales,
            })
            .collect();
        out.add_images(&images, inputs.dim)?;
        row += reduced.len() as u32;
        Ok(())
    })?;
    Ok(out)
}
