//! Links every binary and test with `--wrap=__sys_io_uring_setup`, so the
//! io_uring rings glommio creates get `IORING_SETUP_COOP_TASKRUN` (see
//! `src/runtime/uring_flags.rs`).
//!
//! Generates the prost messages (and a tonic client, used by programs and
//! the interop tests) from `proto/`, and a second set with `Bytes` fields
//! for our own codec. Our server does not use tonic: each core
//! serves gRPC itself over `h2`, because tonic wants `Send` handlers and a
//! shard is core-local.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rustc-link-arg=-Wl,--wrap=__sys_io_uring_setup");
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_protos(&["proto/nexuscache/v1/cache.proto"], &["proto"])?;
    // The same messages with `bytes` fields as `bytes::Bytes`, for the
    // server and the peer client: a value decoded from a received frame is
    // a slice of it, not a copy (`src/grpc/wire.rs`).
    let wire = std::path::Path::new(&std::env::var("OUT_DIR")?).join("wire");
    std::fs::create_dir_all(&wire)?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(false)
        .bytes(".")
        .out_dir(&wire)
        .compile_protos(&["proto/nexuscache/v1/cache.proto"], &["proto"])?;
    Ok(())
}
