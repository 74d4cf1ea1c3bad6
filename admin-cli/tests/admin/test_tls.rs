//! raft-admin over mutual TLS, with certificates it made itself.

use std::os::unix::fs::PermissionsExt;

use raftkv_testkit::wait_for;
use raftkv_testkit::NodeSpec;

use crate::support::raft_admin;

/// The node flags serving with `certs/node.crt` under `certs/ca.crt`.
fn node_tls_flags(certs: &std::path::Path) -> Vec<String> {
    let file = |name: &str| certs.join(name).display().to_string();
    vec![
        "--tls-cert".into(),
        file("node.crt"),
        "--tls-key".into(),
        file("node.key"),
        "--tls-ca".into(),
        file("ca.crt"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_raft_admin_secure_a_node_and_decide_what_it_may_do() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let certs = dir.path().join("certs");
    let certs_dir = certs.to_str().expect("path");
    raft_admin(&["certs", "ca", "--dir", certs_dir]).await.ok();
    for cn in ["node", "admin", "bob"] {
        let mut args = vec!["certs", "issue", "--cn", cn, "--dir", certs_dir];
        if cn == "node" {
            args.extend(["--ip", "127.0.0.1"]);
        }
        let run = raft_admin(&args).await.ok();
        assert!(run.stdout.contains(&format!("{cn}.crt")), "{}", run.stdout);
        let mode = std::fs::metadata(certs.join(format!("{cn}.key")))
            .expect("key written")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{cn}.key is readable by others");
    }
    // Nothing is overwritten.
    let again = raft_admin(&["certs", "issue", "--cn", "bob", "--dir", certs_dir])
        .await
        .failed("re-issuing over an existing certificate");
    assert!(again.stderr.contains("exists"), "{}", again.stderr);

    let file = |name: &str| certs.join(name).display().to_string();
    let node_tls = raftkv_client::TlsFiles {
        ca: certs.join("ca.crt"),
        cert: certs.join("node.crt"),
        key: certs.join("node.key"),
        server_name: None,
    };
    let node = NodeSpec::new(dir.path(), 1)
        .flags(&node_tls_flags(&certs))
        .once(&["--bootstrap"])
        .client_tls(Some(node_tls.load().expect("node TLS")))
        .start();
    wait_for("the node leads", || async {
        let status = node.status().await?;
        (status.leader_id == 1).then_some(())
    })
    .await;

    let (ca, address) = (file("ca.crt"), node.address.clone());
    let as_who = |who: &str| {
        vec![
            "--cacert".to_string(),
            ca.clone(),
            "--cert".to_string(),
            file(&format!("{who}.crt")),
            "--key".to_string(),
            file(&format!("{who}.key")),
            address.clone(),
        ]
    };
    let with = |who: &str, command: &[&str]| {
        let mut args = as_who(who);
        args.extend(command.iter().map(|s| s.to_string()));
        args
    };
    let run = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        raft_admin(&args).await
    };
    let status = run(with("admin", &["status", "--json"])).await.ok();
    assert_eq!(
        status.json()["endpoints"][0]["role"],
        "leader",
        "{}",
        status.stdout
    );
    run(with("bob", &["put", "colour", "blue"])).await.ok();
    let read = run(with("bob", &["get", "colour"])).await.ok();
    assert_eq!(read.stdout.trim(), "blue");
    let refused = run(with("bob", &["add_voter", "2", "127.0.0.1:1"]))
        .await
        .failed("a client certificate adding a voter");
    assert!(
        refused.stderr.contains("permission denied"),
        "{}",
        refused.stderr
    );
    raft_admin(&[&address, "status"])
        .await
        .failed("plain text against a TLS node");
    let half = raft_admin(&["--cacert", &ca, &address, "status"])
        .await
        .failed("--cacert without --cert and --key");
    assert!(half.stderr.contains("--cert"), "{}", half.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_server_name_verifies_a_node_by_a_name_it_is_not_dialled_by() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let certs = dir.path().join("certs");
    let certs_dir = certs.to_str().expect("path");
    raft_admin(&["certs", "ca", "--dir", certs_dir]).await.ok();
    // The node's certificate names it, not the address it is dialled at.
    raft_admin(&[
        "certs",
        "issue",
        "--cn",
        "node",
        "--dns",
        "gateway.raftkv",
        "--dir",
        certs_dir,
    ])
    .await
    .ok();
    raft_admin(&["certs", "issue", "--cn", "admin", "--dir", certs_dir])
        .await
        .ok();
    let file = |name: &str| certs.join(name).display().to_string();
    let node = NodeSpec::new(dir.path(), 1)
        .flags(&node_tls_flags(&certs))
        .start();
    let (ca, cert, key) = (file("ca.crt"), file("admin.crt"), file("admin.key"));
    let tls = ["--cacert", &ca, "--cert", &cert, "--key", &key];
    let mut named = tls.to_vec();
    named.extend([
        "--tls-server-name",
        "gateway.raftkv",
        &node.address,
        "state",
    ]);
    wait_for("the node answers by its certificate's name", || async {
        let run = raft_admin(&named).await;
        (run.code == 0).then_some(())
    })
    .await;
    let mut unnamed = tls.to_vec();
    unnamed.extend([node.address.as_str(), "state"]);
    raft_admin(&unnamed)
        .await
        .failed("a node whose certificate does not name the address dialled");
}
