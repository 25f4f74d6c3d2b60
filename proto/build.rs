//! Generates the gRPC code with a protoc shipped as a crate, so no system protoc is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY of intent: build scripts are single-threaded; prost-build reads PROTOC.
    unsafe_free_set_protoc(&protoc);
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = [
        "sluice/v1/common.proto",
        "sluice/v1/admin.proto",
        "sluice/v1/producer.proto",
        "sluice/v1/consumer.proto",
        "sluice/v1/cluster.proto",
        "externalscaler/externalscaler.proto",
    ];
    tonic_prost_build::configure()
        .bytes(".")
        .file_descriptor_set_path(out.join("sluice_descriptor.bin"))
        .compile_protos(&protos, &["."])?;
    // Broker-to-broker traffic: compiled apart, so reflection never lists it.
    let internal = ["sluice/internal/v1/raft.proto"];
    tonic_prost_build::configure().bytes(".").compile_protos(&internal, &["."])?;
    println!("cargo:rerun-if-changed=build.rs");
    for p in protos.iter().chain(internal.iter()) {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}

fn unsafe_free_set_protoc(path: &std::path::Path) {
    // `set_var` is unsafe in edition 2024 only; this crate is edition 2021.
    std::env::set_var("PROTOC", path);
}
