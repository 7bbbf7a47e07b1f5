//! Generates the echo service of the one-hop floor from `proto/echo.proto`.
//!
//! As in the `dynamokv-proto` crate, `protoc` comes from `protoc-bin-vendored` unless `PROTOC`
//! is set, so no system package is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/echo.proto");
    println!("cargo:rerun-if-env-changed=PROTOC");
    let mut config = tonic_prost_build::Config::new();
    match std::env::var_os("PROTOC") {
        Some(path) => config.protoc_executable(path),
        None => config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?),
    };
    config.bytes(["."]);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_with_config(config, &["proto/echo.proto"], &["proto"])?;
    Ok(())
}
