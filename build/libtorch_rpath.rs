//! Shared build script of the crates that link libtorch into executables (binaries and tests).
//!
//! - tch's own rpath applies only to tch's targets; this one makes our binaries and test executables find
//!   `$LIBTORCH/lib` at run time without `LD_LIBRARY_PATH`.
//! - It records the libtorch version built against (`$LIBTORCH/build-version`) as `DELFRS_LIBTORCH_VERSION`.
//! - When `$LIBTORCH/lib` holds `libtorch_cuda.so` (a CUDA build, see docs/development.md) it links that library
//!   with `--no-as-needed`: nothing references its symbols directly, so the default `--as-needed` would drop it and
//!   CUDA would silently be unavailable at run time.
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let mut version = String::from("unknown");
    if let Ok(libtorch) = std::env::var("LIBTORCH") {
        let root = std::path::Path::new(&libtorch);
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", root.join("lib").display());
        if root.join("lib").join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
        let version_file = root.join("build-version");
        println!("cargo:rerun-if-changed={}", version_file.display());
        if let Ok(v) = std::fs::read_to_string(&version_file) {
            version = v.trim().to_string();
        }
    }
    println!("cargo:rustc-env=DELFRS_LIBTORCH_VERSION={version}");
}
