//! Mutual TLS: a cluster forms over it, roles come from certificates, and
//! everything without a certificate from the cluster's CA is refused;
//! certificates reload on SIGHUP.

use std::process::Command;

use raftkv_proto::pb;
use raftkv_proto::pb::admin_client::AdminClient;
use raftkv_proto::pb::raft_client::RaftClient;
use raftkv_testkit::wait_for;
use raftkv_testkit::TestCerts;
use raftkv_testkit::TestCluster;
use raftkv_testkit::TestNode;
use tonic::transport::Certificate;
use tonic::transport::Channel;
use tonic::transport::ClientTlsConfig;
use tonic::Code;

use crate::support::get;
use crate::support::put;
use crate::support::wait_for_voters;

/// Whether an Admin call over `channel` gets through (`Err`: its status).
async fn admin_status(channel: Channel) -> Result<pb::NodeStatus, tonic::Status> {
    AdminClient::new(channel)
        .status(pb::Empty {})
        .await
        .map(|r| r.into_inner())
}

/// A Raft call over `channel`: any refusal other than a decoding one means
/// the caller never got to Raft.
async fn raft_vote(channel: Channel) -> tonic::Status {
    RaftClient::new(channel)
        .vote(pb::RaftPayload {
            data: vec![0xff].into(),
        })
        .await
        .expect_err("a garbage vote is never accepted")
}

/// A 3-node cluster formed over mutual TLS through `--join`.
async fn tls_cluster(certs: &TestCerts) -> TestCluster {
    let mut cluster = TestCluster::builder().tls(certs).start(1).await;
    let seed = cluster.nodes[0].address.clone();
    for id in 2..=3 {
        let spec = cluster.node_spec(id).flags(&["--join", &seed]);
        cluster.start_node(spec);
    }
    wait_for_voters(&cluster, &[1, 2, 3]).await;
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_forms_over_mutual_tls_and_certificates_decide_roles() {
    let certs = TestCerts::new();
    certs.issue("alice", "alice");
    let mut cluster = tls_cluster(&certs).await;
    let leader = cluster.wait_for_leader().await;
    let follower = if leader == 1 { 2 } else { 1 };

    // A client certificate: KV works, through a follower too.
    let alice = cluster
        .node(follower)
        .channel_as(Some(certs.client("alice")));
    let kv = cluster
        .node(follower)
        .client_as(Some(certs.client("alice")));
    put(&kv, "greeting", "hello").await;
    assert_eq!(
        get(&kv, "greeting", false).await.as_deref(),
        Some(&b"hello"[..])
    );
    // …but neither Admin nor Raft.
    let refused = admin_status(alice.clone())
        .await
        .expect_err("a client certificate reads the admin API");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("admin"), "{}", refused.message());
    // A change that runs on the leader is refused where it arrived: the
    // follower must not pass it on under its own certificate.
    let refused = AdminClient::new(alice.clone())
        .barrier(pb::Empty {})
        .await
        .expect_err("a client certificate runs a barrier through a follower");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = raft_vote(alice).await;
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // An admin certificate: Admin and KV, not Raft.
    let admin = cluster
        .node(follower)
        .channel_as(Some(certs.client("admin")));
    let status = admin_status(admin.clone()).await.expect("admin status");
    assert_eq!(status.id, follower);
    let as_admin = cluster
        .node(follower)
        .client_as(Some(certs.client("admin")));
    put(&as_admin, "by", "admin").await;
    let refused = raft_vote(admin).await;
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("node"), "{}", refused.message());

    // The node certificate reaches Raft (and is refused only for the garbage).
    let node = cluster
        .node(follower)
        .channel_as(Some(certs.client("node")));
    assert_eq!(raft_vote(node).await.code(), Code::InvalidArgument);

    // No certificate, another CA's, plain text: no call gets through.
    let ca = std::fs::read(certs.ca()).expect("CA file");
    let anonymous = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    let other = TestCerts::new();
    let target = cluster.node(follower);
    for (what, tls) in [
        ("no client certificate", Some(anonymous)),
        (
            "another CA's admin certificate",
            Some(other.client("admin")),
        ),
        ("plain text", None),
    ] {
        let result = admin_status(target.channel_as(tls)).await;
        let status = result.expect_err(what);
        assert_ne!(status.code(), Code::PermissionDenied, "{what}: {status:?}");
    }
    assert!(target.log().contains("TLS handshake refused"));
    for node in &cluster.nodes {
        assert!(node.is_running(), "node {} stopped", node.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_cas_certificate_cannot_join_or_vote() {
    let certs = TestCerts::new();
    let mut cluster = TestCluster::builder().tls(&certs).start(1).await;
    let seed = cluster.nodes[0].address.clone();
    let rogue = TestCerts::new();
    let spec = raftkv_testkit::NodeSpec::new(cluster.dir(), 2)
        .tls(&rogue)
        .flags(&["--join", &seed, "--join-timeout", "3s"]);
    let node = cluster.start_node(spec);
    let status = node.wait_exit().await;
    assert!(!status.success(), "the rogue node joined: {status:?}");

    // Its certificate does not get a Raft message through either.
    let vote = raft_vote(cluster.nodes[0].channel_as(Some(rogue.client("node")))).await;
    assert_ne!(vote.code(), Code::InvalidArgument, "{vote:?}");
    let config = cluster.nodes[0]
        .client()
        .configuration()
        .await
        .expect("configuration");
    let ids: Vec<u64> = config.members.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![1], "the rogue node became a member");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_on_sighup_and_broken_ones_are_refused() {
    let certs = TestCerts::new();
    let mut cluster = TestCluster::builder().tls(&certs).start(1).await;
    let node = cluster.node(1);
    // The harness's connection is established before the rotation.
    assert!(node.status().await.is_some());

    // Rotate to a new CA and node certificate, in place.
    let next = TestCerts::new();
    for file in ["ca.crt", "node.crt", "node.key"] {
        std::fs::copy(next.dir().join(file), certs.dir().join(file)).expect("copy");
    }
    node.signal("HUP");
    wait_for("the new certificate is served", || async {
        admin_status(node.channel_as(Some(next.client("admin"))))
            .await
            .ok()
    })
    .await;
    assert!(node.log().contains("reloaded the TLS certificate"));
    // New connections with the old CA's certificates are refused…
    assert!(admin_status(node.channel_as(Some(certs.client("admin"))))
        .await
        .is_err());
    // …while the connection established before keeps working.
    assert!(node.status().await.is_some());

    // Broken files: refused, and the loaded ones stay.
    std::fs::write(certs.dir().join("node.key"), "not a key").expect("write");
    node.signal("HUP");
    wait_for("the broken key is refused", || async {
        node.log()
            .contains("cannot reload the TLS files")
            .then_some(())
    })
    .await;
    admin_status(node.channel_as(Some(next.client("admin"))))
        .await
        .expect("the loaded certificate still serves");
    assert!(node.is_running());
}

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_made_by_openssl_work() {
    if Command::new("openssl").arg("version").output().is_err() {
        println!("SKIPPED certificates_made_by_openssl_work: no openssl on this machine");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    // An RSA CA; an EC node certificate and an RSA client certificate.
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/O=raftkv test/CN=openssl CA",
        ],
    );
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .expect("write");
    for (name, key_args, subject) in [
        (
            "node",
            vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            "/O=raftkv test/CN=node",
        ),
        ("admin", vec!["-newkey", "rsa:2048"], "/CN=admin"),
    ] {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let crt = format!("{name}.crt");
        let mut args = vec!["req", "-new", "-nodes"];
        args.extend(key_args);
        args.extend(["-keyout", &key, "-out", &csr, "-subj", subject]);
        openssl(d, &args);
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
                "-out",
                &crt,
            ],
        );
    }
    let path = |f: &str| d.join(f).display().to_string();
    let flags = [
        "--tls-cert".to_string(),
        path("node.crt"),
        "--tls-key".to_string(),
        path("node.key"),
        "--tls-ca".to_string(),
        path("ca.crt"),
    ];
    let node_dir = tempfile::tempdir().expect("temp dir");
    let mut spec = raftkv_testkit::NodeSpec::new(node_dir.path(), 1).flags(&flags);
    spec = spec.once(&["--bootstrap"]);
    let node: TestNode = spec.start();
    let admin = raftkv_client::TlsFiles {
        ca: d.join("ca.crt"),
        cert: d.join("admin.crt"),
        key: d.join("admin.key"),
        server_name: None,
    }
    .load()
    .expect("openssl's files load");
    let channel = node.channel_as(Some(admin.clone()));
    wait_for("the node leads", || async {
        let status = admin_status(channel.clone()).await.ok()?;
        (status.role == pb::Role::Leader as i32).then_some(())
    })
    .await;
    let kv = node.client_as(Some(admin));
    put(&kv, "made-by", "openssl").await;
    assert_eq!(
        get(&kv, "made-by", false).await.as_deref(),
        Some(&b"openssl"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_tls_on_a_non_loopback_address_warns() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = raftkv_testkit::NodeSpec::new(dir.path(), 1)
        .listen("0.0.0.0:0")
        .flags(&["--advertise", "127.0.0.1:1"])
        .start();
    wait_for("the warning is logged", || async {
        node.log().contains("serving without TLS").then_some(())
    })
    .await;
    // On loopback it does not warn.
    let cluster = TestCluster::start(1).await;
    assert!(!cluster.nodes[0].log().contains("serving without TLS"));
}
