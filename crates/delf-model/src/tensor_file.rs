//! Named `f32` tensors with string metadata in safetensors files: the one reader and writer behind PCA files,
//! attention heads and training checkpoints.

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use tch::{Kind, Tensor, nn};

use crate::ModelError;

/// Tensors by name plus the file's metadata.
#[derive(Debug)]
pub struct TensorFile {
    /// The tensors, on the CPU, in file order (sorted by name).
    pub tensors: Vec<(String, Tensor)>,
    /// String metadata (`__metadata__`).
    pub meta: HashMap<String, String>,
}

impl TensorFile {
    /// Serialises `tensors` (any float kind, written as `f32`) and `meta` in the safetensors layout: an 8-byte
    /// little-endian header length, a JSON header padded with spaces to a multiple of 8, then the data. Written
    /// here rather than by the `safetensors` crate so that the bytes are deterministic: its metadata is a
    /// `HashMap`, whose order changes from one process to the next, and heads are identified by their bytes.
    pub fn to_bytes(tensors: &[(String, Tensor)], meta: HashMap<String, String>) -> Result<Vec<u8>, ModelError> {
        let mut sorted: Vec<&(String, Tensor)> = tensors.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let mut header = serde_json::Map::new();
        let meta: std::collections::BTreeMap<String, String> = meta.into_iter().collect();
        header.insert("__metadata__".into(), serde_json::json!(meta));
        let mut data = Vec::new();
        for (name, t) in sorted {
            let values: Vec<f32> =
                t.detach().to_kind(Kind::Float).to_device(tch::Device::Cpu).flatten(0, -1).try_into()?;
            let start = data.len();
            data.extend(values.iter().flat_map(|x| x.to_le_bytes()));
            let entry = serde_json::json!({"dtype": "F32", "shape": t.size(), "data_offsets": [start, data.len()]});
            header.insert(name.clone(), entry);
        }
        // serde_json's map is ordered by key (no `preserve_order`), so the header is the same on every run.
        let mut json =
            serde_json::to_vec(&header).map_err(|e| ModelError::Config(format!("safetensors header: {e}")))?;
        json.resize(json.len().div_ceil(8) * 8, b' ');
        let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
        bytes.extend(json);
        bytes.extend(data);
        Ok(bytes)
    }

    /// Writes a file atomically and durably ([`delf_core::durable`]), so a kill or a power loss never leaves half
    /// a file.
    pub fn save(path: &Path, tensors: &[(String, Tensor)], meta: HashMap<String, String>) -> Result<(), ModelError> {
        let bytes = Self::to_bytes(tensors, meta)?;
        delf_core::durable::write_atomic(path, &bytes)
            .map_err(|e| ModelError::Config(format!("cannot write {}: {e}", path.display())))
    }

    /// Reads a file written by [`TensorFile::save`] (or any safetensors file of `f32` tensors).
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let bytes =
            std::fs::read(path).map_err(|e| ModelError::Config(format!("cannot read {}: {e}", path.display())))?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Parses safetensors bytes; `what` names the source in errors.
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<Self, ModelError> {
        let bad = |e: String| ModelError::Config(format!("{what}: {e}"));
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
        let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
        names.sort();
        let tensors = names
            .into_iter()
            .map(|name| {
                let view = st.tensor(&name).map_err(|e| bad(e.to_string()))?;
                if view.dtype() != Dtype::F32 {
                    return Err(bad(format!("{name} is {:?}, not f32", view.dtype())));
                }
                let values: Vec<f32> =
                    view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                let shape: Vec<i64> = view.shape().iter().map(|&s| s as i64).collect();
                Ok((name, Tensor::from_slice(&values).view(shape.as_slice())))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { tensors, meta })
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Copies `prefix + name` of this file into every variable of `vs` (names as the var store has them); a
    /// variable the file lacks, or a shape that differs, is an error that names it.
    pub fn copy_into(&self, vs: &nn::VarStore, prefix: &str, what: &str) -> Result<(), ModelError> {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, mut var) in vars {
            let key = format!("{prefix}{name}");
            let src = self.get(&key).ok_or_else(|| ModelError::Config(format!("{what}: no tensor {key}")))?;
            if src.size() != var.size() {
                return Err(ModelError::Config(format!(
                    "{what}: {key} has shape {:?}, expected {:?}",
                    src.size(),
                    var.size()
                )));
            }
            tch::no_grad(|| var.f_copy_(src))?;
        }
        Ok(())
    }
}

/// Every variable of `vs` as `(prefix + name, tensor)` (the variables themselves, not copies), sorted by name.
pub fn named_variables(vs: &nn::VarStore, prefix: &str) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> =
        vs.variables().into_iter().map(|(n, t)| (format!("{prefix}{n}"), t)).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_values_shapes_and_metadata() {
        let dir = std::env::temp_dir().join(format!("delf-tensor-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.safetensors");
        let a = Tensor::from_slice(&[1.5f32, -2.0, 3.25, 0.0, 7.0, 8.0]).view([2, 3]);
        let meta = HashMap::from([("format".to_string(), "test/1".to_string())]);
        TensorFile::save(&path, &[("a".into(), a.shallow_clone())], meta).unwrap();
        // Deterministic bytes whatever the metadata map's order.
        let many: HashMap<String, String> = (0..20).map(|i| (format!("k{i}"), i.to_string())).collect();
        let one = TensorFile::to_bytes(&[("a".into(), a.shallow_clone())], many.clone()).unwrap();
        let other: HashMap<String, String> = many.into_iter().collect::<Vec<_>>().into_iter().rev().collect();
        assert_eq!(one, TensorFile::to_bytes(&[("a".into(), a.shallow_clone())], other).unwrap());
        let file = TensorFile::load(&path).unwrap();
        assert_eq!(file.meta.get("format").map(String::as_str), Some("test/1"));
        let back = file.get("a").unwrap();
        assert_eq!(back.size(), [2, 3]);
        assert!(back.equal(&a));
        std::fs::write(&path, b"not safetensors").unwrap();
        assert!(matches!(TensorFile::load(&path), Err(ModelError::Config(_))));
        std::fs::remove_dir_all(&dir).ok();
    }
}
