//! Shared build script of the crates that link libtorch into executables (binaries and tests).
//!
//! - tch's own rpath applies only to tch's targets; this one makes our binaries and test executables find
//!   `$LIBTORCH/lib` at run time without `LD_LIBRARY_PATH`.
//! - It records the libtorch version built against (`$LIBTORCH/build-version`) as `DELFRS_LIBTORCH_VERSION`.
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let mut version = String::from("unknown");
    if let Ok(libtorch) = std::env::var("LIBTORCH") {
        let root = std::path::Path::new(&libtorch);
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", root.join("lib").display());
        let version_file = root.join("build-version");
        println!("cargo:rerun-if-changed={}", version_file.display());
        if let Ok(v) = std::fs::read_to_string(&version_file) {
            version = v.trim().to_string();
        }
    }
    println!("cargo:rustc-env=DELFRS_LIBTORCH_VERSION={version}");
}
