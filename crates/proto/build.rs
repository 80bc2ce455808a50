fn main() -> Result<(), Box<dyn std::error::Error>> {
    // An explicit $PROTOC wins (e.g. Debian's protobuf-compiler); otherwise the vendored binary.
    let protoc = match std::env::var_os("PROTOC") {
        Some(p) => std::path::PathBuf::from(p),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let mut cfg = prost_build::Config::new();
    cfg.protoc_executable(protoc);
    println!("cargo:rerun-if-changed=../../proto");
    println!("cargo:rerun-if-env-changed=PROTOC");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_with_config(
            cfg,
            &[
                "../../proto/raft.proto",
                "../../proto/admin.proto",
                "../../proto/router.proto",
            ],
            &["../../proto"],
        )?;
    Ok(())
}
