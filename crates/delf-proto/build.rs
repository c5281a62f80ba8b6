//! Generates the messages and services of `proto/delf/v1` with a vendored `protoc` (nothing to install).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // The generator reads PROTOC from the environment. SAFETY: this build script is single-threaded, so no
        // other thread reads the environment while it is modified.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("PROTOC", protoc);
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files: Vec<_> = ["common", "index_node", "worker", "coordinator", "meta"]
        .iter()
        .map(|f| root.join(format!("delf/v1/{f}.proto")))
        .collect();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("delf_v1_descriptor.bin"))
        .compile_protos(&files, &[root])?;
    Ok(())
}
