//! Choice of the compute device.

use std::fmt;
use std::str::FromStr;

use crate::ModelError;

/// Where the network runs, as written in configs and flags: `cpu`, `cuda`, `cuda:N` or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// Use CUDA device 0 when available, the CPU otherwise.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device N.
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| ModelError::UnknownDevice(s.to_string())),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// Resolves to a libtorch device, failing clearly when CUDA is asked for but absent.
    pub fn resolve(self) -> Result<tch::Device, ModelError> {
        match self {
            Self::Cpu => Ok(tch::Device::Cpu),
            Self::Auto => Ok(tch::Device::cuda_if_available()),
            Self::Cuda(n) => {
                let count = tch::Cuda::device_count();
                if (n as i64) < count {
                    Ok(tch::Device::Cuda(n))
                } else {
                    Err(ModelError::Device(self.to_string(), format!("this process sees {count} CUDA device(s)")))
                }
            }
        }
    }
}

/// A short human description of a device, e.g. `cpu` or `cuda:0`.
pub fn describe(device: tch::Device) -> String {
    match device {
        tch::Device::Cpu => "cpu".into(),
        tch::Device::Cuda(n) => format!("cuda:{n}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("CUDA".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        assert_eq!("auto".parse::<DeviceSpec>().unwrap(), DeviceSpec::Auto);
        assert!(matches!("tpu".parse::<DeviceSpec>(), Err(ModelError::UnknownDevice(_))));
        assert!(matches!("cuda:x".parse::<DeviceSpec>(), Err(ModelError::UnknownDevice(_))));
    }

    #[test]
    fn cuda_on_a_cpu_build_is_a_clear_error() {
        if tch::Cuda::device_count() == 0 {
            let err = DeviceSpec::Cuda(0).resolve().unwrap_err();
            assert!(err.to_string().contains("cuda:0 is not available"), "{err}");
        }
        assert_eq!(DeviceSpec::Cpu.resolve().unwrap(), tch::Device::Cpu);
    }
}
