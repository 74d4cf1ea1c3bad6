//! `hammer noop-server`: answers hammer's etcd workload, prints its address,
//! and stops cleanly on SIGTERM (bench.sh relies on all three).

use std::io::BufRead;
use std::io::BufReader;
use std::process::Command;
use std::process::Stdio;

use clap::Parser;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_noop_server_answers_puts_and_reads_and_stops_on_sigterm() {
    let mut server = Command::new(env!("CARGO_BIN_EXE_hammer"))
        .args(["noop-server", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start hammer noop-server");
    let mut address = String::new();
    BufReader::new(server.stdout.take().expect("stdout"))
        .read_line(&mut address)
        .expect("read the bound address");
    let address = address.trim().to_string();
    assert!(
        address.starts_with("127.0.0.1:") && !address.ends_with(":0"),
        "the first line is the bound address, got {address:?}"
    );

    let args = hammer::Cli::parse_from([
        "hammer",
        "--target",
        "etcd",
        "--endpoints",
        &address,
        "--clients",
        "4",
        "--ops",
        "400",
        "--read-ratio",
        "0.5",
    ])
    .run;
    let report = hammer::load(&args).await.expect("load the noop server");
    let count = |kind: &str| report.by_kind.get(kind).map_or(0, |k| k.count);
    assert_eq!(count("put") + count("get"), 400, "every operation succeeds");
    assert!(count("put") > 0 && count("get") > 0);
    assert!(report.errors.is_empty(), "errors: {:?}", report.errors);

    let pid = server.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || server.wait())
        .await
        .expect("join")
        .expect("wait for the server");
    assert!(status.success(), "SIGTERM is a clean stop, got {status}");
}
