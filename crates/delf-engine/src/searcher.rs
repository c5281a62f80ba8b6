//! An open index with the extractor that makes its descriptors, and the query path of one process: extraction,
//! the upright search, and the rotated passes when the upright one finds nothing strong enough.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use delf_index::ScanKernel;
use delf_search::manifest::PCA_FILE;
use delf_search::{IndexManifest, Retrieval, retrieve, retrieve_extending};

use crate::config::{Config, ExtractSettings};
use crate::model;

/// An open index with the extractor that makes its descriptors: what `delf search` and `delf eval` query.
pub struct Searcher {
    /// The index's manifest.
    pub manifest: IndexManifest,
    /// The shards.
    pub index: delf_index::ShardedIndex,
    /// The index's model, PCA and extraction settings.
    pub extractor: delf_model::Extractor,
    /// Retrieval settings (the index's ANN parameters, the configuration's verification and search sections).
    pub rc: delf_search::RetrievalConfig,
    /// The scan kernel of this CPU.
    pub kernel: ScanKernel,
    /// What each rotated pass may cost (the rotations themselves are `rc.rotations`).
    pub rotated_pass: delf_model::RotatedPass,
}

impl Searcher {
    /// A searcher tuned for evaluation: every verified candidate returned, none cut by `min_inliers`.
    pub fn open_for_eval(index: &Path, config: &Config, device: Option<&str>) -> Result<Self> {
        let mut s = Self::open(index, config, device)?;
        s.rc.top = usize::MAX;
        s.rc.verify.policy.min_inliers = 0;
        Ok(s)
    }

    /// Opens the index in `dir` and loads its extractor on `device` (a flag, else the configuration's).
    pub fn open(dir: &Path, config: &Config, device: Option<&str>) -> Result<Self> {
        let manifest = IndexManifest::load(dir)?;
        let index = manifest.open_index(dir)?;
        let settings = ExtractSettings::from_stored(&manifest.extract, "manifest", config)?;
        let device = model::device(device, config)?;
        let extractor = model::extractor(config, settings.to_config(), Some(&dir.join(PCA_FILE)), device)?;
        if extractor.fingerprint().as_str() != manifest.descriptor_fingerprint {
            anyhow::bail!(delf_search::SearchError::FingerprintMismatch {
                index: manifest.descriptor_fingerprint.clone(),
                query: extractor.fingerprint().to_string(),
            });
        }
        let rc = config.retrieval().for_index(&manifest);
        let rotated_pass = config.search.rotated_pass();
        Ok(Self { manifest, index, extractor, rc, kernel: ScanKernel::detect(), rotated_pass })
    }

    /// Extracts `image` and retrieves it: the retrieval and the extraction milliseconds. With several query
    /// rotations, the upright query is searched first and, unless its best result reaches `rotations_below`
    /// inliers, again with the features of every rotation together (mapped back to the query's own coordinates),
    /// each candidate verified with the one pass that matches it best.
    pub fn search(&self, image: &image::RgbImage) -> Result<(Retrieval, f64)> {
        let t = Instant::now();
        let mut features = self.extractor.extract(image)?;
        let mut extract_ms = t.elapsed().as_secs_f64() * 1e3;
        if self.rc.rotations.is_empty() {
            return Ok((retrieve(&self.index, &features, &self.rc, self.kernel)?, extract_ms));
        }
        let mut upright_neighbors = Vec::new();
        if self.rc.rotations_below > 0 {
            let (upright, neighbors) =
                retrieve_extending(&self.index, &features, &[], Vec::new(), &self.rc, self.kernel)?;
            if !self.rc.wants_rotations(upright.results.first().map(|r| r.score)) {
                return Ok((upright, extract_ms));
            }
            upright_neighbors = neighbors;
        }
        let t = Instant::now();
        let mut passes = vec![features.len()];
        passes.extend(features.extend_passes(self.extractor.extract_rotations(
            image,
            &self.rc.rotations,
            self.rotated_pass,
        )?)?);
        extract_ms += t.elapsed().as_secs_f64() * 1e3;
        // The upright descriptors' neighbours are those of the first search: only the rotated ones are searched.
        let (all, _) = retrieve_extending(&self.index, &features, &passes, upright_neighbors, &self.rc, self.kernel)?;
        Ok((all, extract_ms))
    }
}
