//! Running under systemd: `Type=notify` readiness and stopping, and the
//! unit file shipped in `packaging/`.

use std::os::unix::net::UnixDatagram;

use raftkv_testkit::NodeSpec;
use raftkv_testkit::PATIENCE;

fn receive(socket: &UnixDatagram) -> String {
    let mut buffer = [0; 1024];
    let length = socket
        .recv(&mut buffer)
        .expect("a notification within PATIENCE");
    String::from_utf8_lossy(&buffer[..length]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_tells_systemd_when_it_serves_and_when_it_stops() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    socket.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut node = NodeSpec::new(dir.path(), 1)
        .once(&["--bootstrap"])
        .env("NOTIFY_SOCKET", path.to_str().expect("path"))
        .start();
    let ready = receive(&socket);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    let pid = node.pid().expect("running");
    assert!(ready.contains(&format!("MAINPID={pid}")), "{ready:?}");
    assert!(
        ready.contains(&format!("serving on {}", node.address)),
        "{ready:?}"
    );
    // Ready means it answers.
    assert!(node.status().await.is_some());
    assert!(node.stop(), "the node did not stop cleanly");
    let stopping = receive(&socket);
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
}

#[test]
fn the_packaged_unit_is_a_hardened_notify_service() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/raftkv.service"
    ))
    .expect("packaging/raftkv.service");
    for line in [
        "Type=notify",
        "Restart=on-failure",
        "StateDirectory=raftkv",
        "ProtectSystem=strict",
        "NoNewPrivileges=true",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "EnvironmentFile=/etc/raftkv/raftkv.env",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks {line}");
    }
    // Every variable of the environment template is one the node reads.
    let template = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/raftkv.env"
    ))
    .expect("packaging/raftkv.env");
    let help = std::process::Command::new(raftkv_testkit::node_binary())
        .arg("--help")
        .output()
        .expect("raftkv-node --help");
    let help = String::from_utf8_lossy(&help.stdout);
    for line in template.lines() {
        let line = line.trim_start_matches('#');
        let Some((name, _)) = line.split_once('=') else {
            continue;
        };
        if name.starts_with("RAFTKV_") && !name.contains(' ') {
            assert!(
                help.contains(&format!("env: {name}=")),
                "the node reads no {name}"
            );
        }
    }
    // systemd's own check, where systemd is installed.
    if let Ok(output) = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../packaging/raftkv.service"
        ))
        .output()
    {
        let errors = String::from_utf8_lossy(&output.stderr);
        // The binary and the environment file are not installed here.
        let real: Vec<&str> = errors
            .lines()
            .filter(|l| !l.contains("/usr/local/bin/raftkv-node") && !l.contains("raftkv.env"))
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert!(real.is_empty(), "systemd-analyze verify: {real:?}");
    } else {
        println!("SKIPPED systemd-analyze verify: systemd is not installed");
    }
}

#[tokio::test]
async fn a_client_that_never_answers_does_not_hold_a_stopping_node() {
    use std::io::Write;
    let mut cluster = raftkv_testkit::TestCluster::start(1).await;
    cluster.wait_for_leader().await;
    // An HTTP/2 client that opens a connection and then reads nothing: the
    // node's goodbye (GOAWAY and a PING) is never answered.
    let mut silent = std::net::TcpStream::connect(&cluster.node(1).address).expect("connect");
    silent
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .expect("preface");
    // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
    silent
        .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .expect("settings");
    let node = cluster.node(1);
    assert!(
        node.stop(),
        "the node did not stop cleanly:\n{}",
        node.log_tail()
    );
    drop(silent);
}
