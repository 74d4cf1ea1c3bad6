//! hammer over mutual TLS, with a key-value-only client certificate.

use raftkv_testkit::TestCerts;
use raftkv_testkit::TestCluster;

use crate::support::hammer_binary;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hammer_verifies_a_cluster_over_mutual_tls() {
    let certs = TestCerts::new();
    certs.issue("loader", "loader");
    let cluster = TestCluster::builder().tls(&certs).start(3).await;
    let dir = tempfile::TempDir::new().expect("temp dir");
    let history = dir.path().join("history.jsonl");
    let mut args: Vec<String> = [
        "--endpoints",
        &cluster.endpoints(),
        "--duration",
        "2s",
        "--clients",
        "4",
        "--keys",
        "50",
        "--read-ratio",
        "0.3",
        "--cas-ratio",
        "0.2",
        "--verify",
        "--json",
        "--history",
        history.to_str().expect("path"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(certs.client_flags("loader"));
    let (code, stdout, stderr) = hammer_binary(args).await;
    assert_eq!(code, 0, "hammer failed over TLS: {stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("--json output parses");
    assert!(report["operations"].as_u64().expect("operations") > 0);
    assert_eq!(report["verify"]["lost_acknowledged_writes"], 0);
    let (code, verdict, _) =
        hammer_binary(vec!["check".into(), history.display().to_string()]).await;
    assert_eq!(code, 0, "history not linearizable: {verdict}");

    // Without a certificate nothing gets through, and hammer says so.
    let (code, _, _) = hammer_binary(
        [
            "--endpoints",
            &cluster.endpoints(),
            "--duration",
            "1s",
            "--clients",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    )
    .await;
    assert_ne!(code, 0, "plain-text hammer succeeded against a TLS cluster");
}
