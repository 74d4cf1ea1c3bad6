//! Compiles the `.proto` files without a system `protoc`: `protox` parses them
//! into a descriptor set, `tonic-prost-build` generates code from that set, and
//! the encoded set is kept for gRPC server reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/kv.proto", "proto/admin.proto", "proto/raft.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("raftkv_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .bytes(".raftkv.RaftPayload.data")
        .bytes(".raftkv.SnapshotChunk.chunk")
        .bytes(".raftkv.ForwardedCall.body")
        .bytes(".raftkv.ForwardedAnswer.body")
        .bytes(".raftkv.ForwardedCall.command")
        .bytes(".raftkv.ForwardedAnswer.outcome")
        .compile_fds(descriptors)?;

    // The log's commands: messages only, kept out of the services' set
    // above, which is what reflection lists.
    let entry = ["proto/entry.proto"];
    for file in entry {
        println!("cargo:rerun-if-changed={file}");
    }
    tonic_prost_build::configure().compile_fds(protox::compile(entry, ["proto"])?)?;

    // etcd's v3 API, served beside raftkv's (see `etcd/NOTICE.md`).
    let etcd = ["etcd/etcdserverpb/rpc.proto"];
    println!("cargo:rerun-if-changed=etcd");
    let descriptors = protox::compile(etcd, ["etcd"])?;
    std::fs::write(
        out_dir.join("etcd_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    // Methods not served yet answer UNIMPLEMENTED.
    tonic_prost_build::configure()
        .generate_default_stubs(true)
        .compile_fds(descriptors)?;
    Ok(())
}
