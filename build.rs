//! Generates the prost messages (and a tonic client, used by programs and
//! the interop tests) from `proto/`. Our server does not use tonic: each core
//! serves gRPC itself over `h2`, because tonic wants `Send` handlers and a
//! shard is core-local.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_protos(&["proto/nexuscache/v1/cache.proto"], &["proto"])?;
    Ok(())
}
