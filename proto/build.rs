//! Generates the gRPC code from `proto/dynamokv.proto`.
//!
//! `protoc` comes from the `protoc-bin-vendored` crate unless `PROTOC` is set, so that a user
//! who only runs `pip install ./bindings-python` or `npm install` needs no system package.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/dynamokv.proto");
    println!("cargo:rerun-if-env-changed=PROTOC");
    let mut config = tonic_prost_build::Config::new();
    match std::env::var_os("PROTOC") {
        Some(path) => config.protoc_executable(path),
        None => config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?),
    };
    config.bytes(["."]);
    // The descriptors, for gRPC server reflection (grpcurl needs no .proto file).
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    config.file_descriptor_set_path(out.join("dynamokv_descriptor.bin"));
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_with_config(config, &["proto/dynamokv.proto"], &["proto"])?;
    Ok(())
}
