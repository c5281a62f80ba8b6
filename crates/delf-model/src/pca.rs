//! PCA of descriptors (paper section 4.4 / reference post-processing): fitted on a sample of L2-normalised raw
//! descriptors, applied as centre -> project (-> optional whitening); the extractor L2-normalises before and after.
//! Stored as safetensors (`mean`, `components`, `eigenvalues`) with metadata (`whiten`, `source`).

use std::collections::HashMap;
use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::ModelError;
use crate::tensor_file::TensorFile;

const EPS: f64 = 1e-9;

/// A fitted projection from `dim_in` to `dim_out` dimensions.
#[derive(Debug)]
pub struct Pca {
    mean: Tensor,
    components: Tensor,
    eigenvalues: Tensor,
    whiten: bool,
    source: String,
}

impl Pca {
    /// Fits on `samples` (`[N, D]`, one descriptor per row), keeping `dim_out` components.
    /// `source` names the backbone the descriptors came from (stored, and checked when applying).
    pub fn fit(samples: &Tensor, dim_out: usize, whiten: bool, source: &str) -> Result<Self, ModelError> {
        let size = samples.size();
        let (n, d) = match size.as_slice() {
            [n, d] => (*n, *d),
            _ => return Err(ModelError::Config(format!("PCA needs a [N, D] sample, got {size:?}"))),
        };
        if dim_out == 0 || dim_out as i64 > d || n < 2 {
            return Err(ModelError::Config(format!("cannot fit {dim_out} components on {n} samples of dimension {d}")));
        }
        let x = samples.to_device(Device::Cpu).to_kind(Kind::Double);
        let mean = x.mean_dim(0, false, Kind::Double);
        let centred = &x - &mean;
        let cov = centred.tr().mm(&centred) / (n - 1) as f64;
        let (evals, evecs) = cov.f_linalg_eigh("L")?;
        // eigh sorts ascending: take the last dim_out, largest first.
        let idx = Tensor::arange_start_step(d - 1, d - 1 - dim_out as i64, -1, (Kind::Int64, Device::Cpu));
        let mut components = evecs.index_select(1, &idx).tr().contiguous();
        // Fix each eigenvector's sign (largest-magnitude coordinate positive) so fits are reproducible.
        let argmax = components.abs().argmax(1, true);
        let signs = components.gather(1, &argmax, false).sign();
        components *= signs;
        let eigenvalues = evals.index_select(0, &idx).clamp_min(0.0);
        Ok(Self {
            mean: mean.to_kind(Kind::Float),
            components: components.to_kind(Kind::Float),
            eigenvalues: eigenvalues.to_kind(Kind::Float),
            whiten,
            source: source.to_string(),
        })
    }

    /// Input dimension.
    pub fn dim_in(&self) -> i64 {
        self.mean.size()[0]
    }

    /// Output dimension.
    pub fn dim_out(&self) -> i64 {
        self.components.size()[0]
    }

    /// The backbone the PCA was fitted for.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Projects `[N, dim_in]` to `[N, dim_out]` (no normalisation here).
    pub fn project(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let d = x.size().last().copied().unwrap_or(0);
        if d != self.dim_in() {
            return Err(ModelError::Config(format!("PCA expects {}-d descriptors, got {d}-d", self.dim_in())));
        }
        let dev = x.device();
        let y = (x - self.mean.to_device(dev)).mm(&self.components.to_device(dev).tr());
        Ok(if self.whiten { y / (self.eigenvalues.to_device(dev) + EPS).sqrt() } else { y })
    }

    /// Maps projected vectors back to the input space (no whitening; for tests and diagnostics).
    pub fn reconstruct(&self, y: &Tensor) -> Tensor {
        let dev = y.device();
        y.mm(&self.components.to_device(dev)) + self.mean.to_device(dev)
    }

    /// Bytes identifying this PCA (for fingerprints).
    pub fn digest(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        for t in [&self.mean, &self.components, &self.eigenvalues] {
            let v: Vec<f32> = t.flatten(0, -1).try_into().unwrap_or_default();
            bytes.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        }
        bytes.push(u8::from(self.whiten));
        bytes
    }

    /// Writes the PCA to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let tensors = [("mean", &self.mean), ("components", &self.components), ("eigenvalues", &self.eigenvalues)]
            .map(|(name, t)| (name.to_string(), t.shallow_clone()));
        let meta = HashMap::from([
            ("format".to_string(), "delf-pca/1".to_string()),
            ("whiten".to_string(), self.whiten.to_string()),
            ("source".to_string(), self.source.clone()),
        ]);
        TensorFile::save(path, &tensors, meta)
    }

    /// Reads a PCA written by [`Pca::save`].
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let file = TensorFile::load(path)?;
        if file.meta.get("format").map(String::as_str) != Some("delf-pca/1") {
            return Err(ModelError::Config(format!("{} is not a delf PCA file", path.display())));
        }
        let get = |name: &str| -> Result<Tensor, ModelError> {
            file.get(name)
                .map(Tensor::shallow_clone)
                .ok_or_else(|| ModelError::Config(format!("PCA file {}: no tensor {name}", path.display())))
        };
        let (mean, components, eigenvalues) = (get("mean")?, get("components")?, get("eigenvalues")?);
        let (d_in, d_out) = (mean.size()[0], components.size()[0]);
        if components.size() != [d_out, d_in] || eigenvalues.size() != [d_out] {
            return Err(ModelError::Config(format!("{}: inconsistent PCA shapes", path.display())));
        }
        Ok(Self {
            mean,
            components,
            eigenvalues,
            whiten: file.meta.get("whiten").is_some_and(|w| w == "true"),
            source: file.meta.get("source").cloned().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn low_rank_sample() -> Tensor {
        tch::manual_seed(7);
        let basis = Tensor::randn([3, 8], (Kind::Float, Device::Cpu));
        let coeffs = Tensor::randn([500, 3], (Kind::Float, Device::Cpu)) * Tensor::from_slice(&[5.0f32, 2.0, 1.0]);
        coeffs.mm(&basis) + 0.3
    }

    #[test]
    fn recovers_a_low_rank_space_and_round_trips_through_a_file() {
        let x = low_rank_sample();
        let pca = Pca::fit(&x, 3, false, "test").unwrap();
        let back = pca.reconstruct(&pca.project(&x).unwrap());
        let err = f64::try_from((&back - &x).abs().max()).unwrap();
        assert!(err < 1e-3, "reconstruction error {err}");

        let path = std::env::temp_dir().join(format!("delf-pca-{}.safetensors", std::process::id()));
        pca.save(&path).unwrap();
        let loaded = Pca::load(&path).unwrap();
        std::fs::remove_file(&path).ok();
        assert_eq!(loaded.source(), "test");
        assert_eq!(loaded.digest(), pca.digest());
        let a = pca.project(&x).unwrap();
        let b = loaded.project(&x).unwrap();
        assert_eq!(f64::try_from((a - b).abs().max()).unwrap(), 0.0);
    }

    #[test]
    fn fits_are_deterministic_and_ordered() {
        let x = low_rank_sample();
        let a = Pca::fit(&x, 2, true, "t").unwrap();
        let b = Pca::fit(&x, 2, true, "t").unwrap();
        assert_eq!(a.digest(), b.digest());
        let ev: Vec<f32> = a.eigenvalues.shallow_clone().try_into().unwrap();
        assert!(ev[0] >= ev[1]);
        // Whitened projections have unit variance per component.
        let var: Vec<f32> = a.project(&x).unwrap().var_dim(0, true, false).try_into().unwrap();
        assert!(var.iter().all(|v| (v - 1.0).abs() < 1e-2), "{var:?}");
    }

    #[test]
    fn wrong_dimensions_and_bad_files_are_errors() {
        let pca = Pca::fit(&low_rank_sample(), 2, false, "t").unwrap();
        let wrong = Tensor::zeros([4, 5], (Kind::Float, Device::Cpu));
        assert!(matches!(pca.project(&wrong), Err(ModelError::Config(m)) if m.contains("expects 8-d")));
        assert!(Pca::fit(&wrong, 6, false, "t").is_err());
        let path = std::env::temp_dir().join(format!("delf-pca-bad-{}.safetensors", std::process::id()));
        std::fs::write(&path, b"garbage").unwrap();
        assert!(Pca::load(&path).is_err());
        std::fs::remove_file(&path).ok();
    }
}
