//! Generates the gRPC code of SPEC §5 from `proto/` with protox (pure Rust),
//! so a fresh machine needs nothing but cargo.

use prost::Message;
use std::path::PathBuf;

const PROTOS: [&str; 4] = [
    "duokey/v1/accounts.proto",
    "duokey/v1/gms.proto",
    "duokey/v1/cs.proto",
    "duokey/v1/bus.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    for p in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    let fds = protox::compile(PROTOS, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("duokey_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
