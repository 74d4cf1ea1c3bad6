//! Generates the etcd v3 KV client used by `--target etcd`, and the server
//! side that `hammer noop-server` implements, without a system `protoc`
//! (protox parses the proto file).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/etcd.proto");
    let descriptors = protox::compile(["proto/etcd.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
