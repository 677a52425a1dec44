//! Compiles `proto/` with a pure-Rust protobuf compiler (protox), so no `protoc`
//! is needed, and keeps the file descriptor set for gRPC server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let files = [
        "keel/v1/tenant.proto",
        "keel/v1/user.proto",
        "keel/v1/app.proto",
        "keel/v1/flag.proto",
        "keel/v1/routing.proto",
        "keel/v1/billing.proto",
    ]
    .map(|f| root.join(f));
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("keel_descriptor.bin"), prost::Message::encode_to_vec(&descriptors))?;
    // Malformed requests are INVALID_ARGUMENT, not prost's INTERNAL (gateway/src/grpc/codec.rs).
    tonic_prost_build::configure().codec_path("crate::grpc::codec::KeelCodec").compile_fds(descriptors)?;
    Ok(())
}
