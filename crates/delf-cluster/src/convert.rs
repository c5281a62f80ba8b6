//! Wire <-> core conversions, with every check a message from the network needs, and the mapping of errors to gRPC
//! status codes (INVALID_ARGUMENT for a malformed request, FAILED_PRECONDITION for a fingerprint mismatch, ...).

use delf_core::{FeatureSet, Fingerprint, Keypoint};
use delf_index::IndexError;
use delf_proto::v1 as pb;
use delf_verify::{ModelKind, VerifyConfig, VerifySettings};
use tonic::Status;

/// Largest descriptor dimension accepted from the network (DELF's raw 1024 channels fit, with room).
pub const MAX_DIM: usize = 4096;

/// A core feature set on the wire.
pub fn features_to_pb(f: &FeatureSet) -> pb::Features {
    pb::Features {
        width: f.width,
        height: f.height,
        dim: f.dim as u32,
        keypoints: f
            .keypoints
            .iter()
            .map(|k| pb::Keypoint { x: k.x, y: k.y, scale: k.scale, score: k.score })
            .collect(),
        descriptors: f.descriptors.clone(),
        fingerprint: f.fingerprint.to_string(),
    }
}

/// A feature set from the wire, checked: dimension, shape, finite values.
pub fn features_from_pb(f: pb::Features) -> Result<FeatureSet, Status> {
    let dim = f.dim as usize;
    if dim == 0 || dim > MAX_DIM {
        return Err(Status::invalid_argument(format!("features.dim {dim} is outside 1..={MAX_DIM}")));
    }
    let set = FeatureSet {
        width: f.width,
        height: f.height,
        dim,
        keypoints: f
            .keypoints
            .into_iter()
            .map(|k| Keypoint { x: k.x, y: k.y, scale: k.scale, score: k.score })
            .collect(),
        descriptors: f.descriptors,
        fingerprint: Fingerprint(f.fingerprint),
    };
    set.validate().map_err(|e| Status::invalid_argument(format!("features: {e}")))?;
    if set.keypoints.iter().any(|k| !(k.x.is_finite() && k.y.is_finite())) {
        return Err(Status::invalid_argument("features: a keypoint position is NaN or infinite"));
    }
    if set.descriptors.iter().any(|v| !v.is_finite()) {
        return Err(Status::invalid_argument("features: a descriptor value is NaN or infinite"));
    }
    Ok(set)
}

/// The verification settings a coordinator sends: the flat [`VerifySettings`] of its configuration, field for
/// field (matching settings do not travel: workers receive correspondences, already matched by the coordinator).
pub fn verify_settings_to_pb(c: &VerifyConfig) -> pb::VerifySettings {
    let s = VerifySettings::from_config(c);
    pb::VerifySettings {
        model: match s.model {
            ModelKind::Affine => "affine",
            ModelKind::Homography => "homography",
        }
        .into(),
        residual_threshold: s.residual_threshold,
        max_trials: s.max_trials,
        confidence: s.confidence,
        seed: s.seed,
        local_optimization: s.local_optimization,
        max_scale: s.max_scale,
        max_anisotropy: s.max_anisotropy,
        allow_reflection: s.allow_reflection,
        min_putative: s.min_putative as u32,
        scale_tolerance: (s.scale_tolerance > 0.0).then_some(s.scale_tolerance),
    }
}

/// The verification settings a worker receives, checked by [`VerifySettings::check`] (an absent scale
/// tolerance checks positions only; a present one must be positive).
pub fn verify_settings_from_pb(s: &pb::VerifySettings) -> Result<VerifyConfig, Status> {
    let model = match s.model.as_str() {
        "affine" => ModelKind::Affine,
        "homography" => ModelKind::Homography,
        other => return Err(Status::invalid_argument(format!("settings.model {other:?} (affine or homography)"))),
    };
    if let Some(t) = s.scale_tolerance.filter(|t| !(t.is_finite() && *t > 0.0)) {
        return Err(Status::invalid_argument(format!("settings.scale_tolerance {t} is not a positive number")));
    }
    let settings = VerifySettings {
        model,
        residual_threshold: s.residual_threshold,
        max_trials: s.max_trials,
        confidence: s.confidence,
        seed: s.seed,
        local_optimization: s.local_optimization,
        max_scale: s.max_scale,
        max_anisotropy: s.max_anisotropy,
        allow_reflection: s.allow_reflection,
        scale_tolerance: s.scale_tolerance.unwrap_or(0.0),
        min_putative: s.min_putative as usize,
        ..VerifySettings::from_config(&VerifyConfig::default())
    };
    settings.check().map_err(|e| Status::invalid_argument(format!("settings.{e}")))?;
    Ok(settings.to_config())
}

/// The status of an index error on a search: the caller's mistake, or the node's.
pub fn index_status(e: &IndexError) -> Status {
    match e {
        IndexError::DimensionMismatch { .. }
        | IndexError::RaggedBuffer { .. }
        | IndexError::InvalidParameter { .. }
        | IndexError::BadSpec { .. } => Status::invalid_argument(e.to_string()),
        IndexError::FingerprintMismatch { .. } => Status::failed_precondition(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn verify_settings_round_trip() {
        let mut c = VerifyConfig::robust();
        c.model = ModelKind::Homography;
        c.ransac.seed = 99;
        let back = verify_settings_from_pb(&verify_settings_to_pb(&c)).unwrap();
        assert_eq!(back.ransac, c.ransac);
        assert_eq!(back.model, c.model);
        assert_eq!(back.policy.min_putative, c.policy.min_putative);
    }

    #[test]
    fn malformed_features_are_invalid_arguments() {
        let good = pb::Features {
            width: 10,
            height: 10,
            dim: 2,
            keypoints: vec![pb::Keypoint { x: 1.0, y: 2.0, scale: 1.0, score: 1.0 }],
            descriptors: vec![0.6, 0.8],
            fingerprint: "f".into(),
        };
        assert_eq!(features_from_pb(good.clone()).unwrap().len(), 1);
        let ragged = pb::Features { descriptors: vec![0.6], ..good.clone() };
        assert_eq!(features_from_pb(ragged).unwrap_err().code(), tonic::Code::InvalidArgument);
        let nan = pb::Features { descriptors: vec![f32::NAN, 0.8], ..good.clone() };
        assert_eq!(features_from_pb(nan).unwrap_err().code(), tonic::Code::InvalidArgument);
        let huge = pb::Features { dim: 1 << 20, ..good };
        assert_eq!(features_from_pb(huge).unwrap_err().code(), tonic::Code::InvalidArgument);
    }
}
