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
        "sluice/v1/events.proto",
        "externalscaler/externalscaler.proto",
    ];
    // google/protobuf/*.proto (the CloudEvents format imports Any and Timestamp), shipped with protoc.
    let well_known = protoc_bin_vendored::include_path()?;
    let well_known = well_known.to_str().ok_or("protoc's include path is not UTF-8")?;
    tonic_prost_build::configure()
        .bytes(".")
        // The generated modules are not nested by package (`sluice.v1` is `crate::v1`); the
        // CloudEvents format is generated on its own below (and in the descriptor set as an import).
        .extern_path(".io.cloudevents.v1", "crate::io::cloudevents::v1")
        .file_descriptor_set_path(out.join("sluice_descriptor.bin"))
        .compile_protos(&protos, &[".", well_known])?;
    let cloudevents = ["io/cloudevents/v1/cloudevents.proto"];
    tonic_prost_build::configure().bytes(".").compile_protos(&cloudevents, &[".", well_known])?;
    // Broker-to-broker traffic: compiled apart, so reflection never lists it.
    let internal = ["sluice/internal/v1/raft.proto"];
    tonic_prost_build::configure().bytes(".").compile_protos(&internal, &["."])?;
    println!("cargo:rerun-if-changed=build.rs");
    for p in protos.iter().chain(&cloudevents).chain(&internal) {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}

fn unsafe_free_set_protoc(path: &std::path::Path) {
    // `set_var` is unsafe in edition 2024 only; this crate is edition 2021.
    std::env::set_var("PROTOC", path);
}
