//! etcd's own command-line client, `etcdctl` (Debian's `etcd-client`, which
//! `.ci/run` installs), against raftkv clusters: a script of the commands
//! an operator runs (keys, transactions, leases, the cluster's state and
//! leadership), sent to a follower, across a leader kill, and over mutual
//! TLS with the roles its certificates carry.

use std::io::Write;
use std::process::Command;
use std::process::Stdio;

use raftkv_testkit::TestCerts;
use raftkv_testkit::TestCluster;
use raftkv_testkit::PATIENCE;

/// Runs `etcdctl` (API v3) against `endpoints` with `args`, `input` on its
/// standard input; its output and error output, or both together when it
/// fails.
fn run_etcdctl(endpoints: &str, args: &[&str], input: &str) -> Result<(String, String), String> {
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(["--dial-timeout=5s", "--command-timeout=20s"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etcdctl runs (Debian's etcd-client; .ci/run installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("etcdctl reads its input");
    let out = child.wait_with_output().expect("etcdctl ends");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok((stdout, stderr))
    } else {
        Err(format!("{stdout}{stderr}"))
    }
}

/// [`run_etcdctl`]'s output alone.
fn etcdctl(endpoints: &str, args: &[&str], input: &str) -> Result<String, String> {
    run_etcdctl(endpoints, args, input).map(|(stdout, _)| stdout)
}

fn ok(endpoints: &str, args: &[&str]) -> String {
    etcdctl(endpoints, args, "").unwrap_or_else(|e| panic!("etcdctl {args:?}: {e}"))
}

/// The number after `"name":` in etcdctl's JSON output.
fn json_number(json: &str, name: &str) -> i64 {
    let at = json
        .find(&format!("\"{name}\":"))
        .unwrap_or_else(|| panic!("{name} in {json}"));
    json[at + name.len() + 3..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{name} in {json}"))
}

#[tokio::test]
async fn an_etcdctl_script_runs_against_a_follower_and_through_a_leader_kill() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let one = cluster.node(follower).address.clone();

    assert_eq!(ok(&one, &["put", "app/a", "1"]).trim(), "OK");
    ok(&one, &["put", "app/b", "2"]);
    let first = ok(&one, &["get", "app/a", "-w", "json"]);
    let created = json_number(&first, "mod_revision");
    ok(&one, &["put", "app/a", "3"]);
    assert_eq!(
        ok(&one, &["get", "app/", "--prefix"]),
        "app/a\n3\napp/b\n2\n"
    );
    assert_eq!(
        ok(
            &one,
            &[
                "get",
                "app/a",
                "--rev",
                &created.to_string(),
                "--print-value-only"
            ]
        ),
        "1\n"
    );
    assert_eq!(
        ok(
            &one,
            &["get", "app/", "--prefix", "--keys-only", "--limit", "1"]
        ),
        "app/a\n\n"
    );
    let json = ok(&one, &["get", "app/", "--prefix", "-w", "json"]);
    assert_eq!(json_number(&json, "count"), 2);

    // A transaction read from standard input, as `txn -i` takes it.
    let txn = "value(\"app/b\") = \"2\"\n\nput app/c 4\n\nput app/c 5\n\n";
    let answer = etcdctl(&one, &["txn"], txn).expect("txn");
    assert!(answer.starts_with("SUCCESS"), "{answer}");
    assert_eq!(ok(&one, &["get", "app/c", "--print-value-only"]), "4\n");

    let deleted = ok(&one, &["del", "app/", "--prefix", "--prev-kv"]);
    assert!(
        deleted.starts_with("3\n") && deleted.contains("app/c\n4\n"),
        "{deleted}"
    );

    // The cluster as etcdctl sees it.
    let all = cluster.endpoints();
    let status = ok(&all, &["endpoint", "status", "-w", "json"]);
    assert_eq!(status.matches("\"leader\":").count(), 3, "{status}");
    assert!(status.contains("\"version\":\"3.5.13\""), "{status}");
    // etcdctl reports health on its error output.
    let (_, health) = run_etcdctl(&all, &["endpoint", "health"], "").expect("health");
    assert_eq!(health.matches("is healthy").count(), 3, "{health}");
    let hashes = ok(&all, &["endpoint", "hashkv", "-w", "json"]);
    assert_eq!(hashes.matches("\"hash\":").count(), 3, "{hashes}");
    let members = ok(&one, &["member", "list"]);
    assert_eq!(members.lines().count(), 3, "{members}");
    assert!(members.contains(&format!("http://{one}")), "{members}");
    assert_eq!(ok(&one, &["alarm", "list"]), "");
    let current = json_number(&ok(&one, &["get", "x", "-w", "json"]), "revision");
    assert!(ok(&one, &["compaction", &current.to_string()]).contains("compacted revision"));
    let refused = etcdctl(&one, &["get", "app/a", "--rev", &created.to_string()], "").unwrap_err();
    assert!(
        refused.contains("required revision has been compacted"),
        "{refused}"
    );

    // Leases: grant, attach a key, look, renew, revoke (which deletes the key).
    let granted = ok(&one, &["lease", "grant", "60"]);
    let id = granted
        .split_whitespace()
        .nth(1)
        .expect("the lease id")
        .to_string();
    assert!(granted.contains("granted with TTL(60s)"), "{granted}");
    ok(&one, &["put", "leased", "v", &format!("--lease={id}")]);
    let ttl = ok(&one, &["lease", "timetolive", &id, "--keys"]);
    assert!(ttl.contains("attached keys([leased])"), "{ttl}");
    assert!(ok(&one, &["lease", "list"]).contains(&id));
    assert!(ok(&one, &["lease", "keep-alive", "--once", &id]).contains("keepalived with TTL(60)"));
    assert!(ok(&one, &["lease", "revoke", &id]).contains("revoked"));
    assert_eq!(ok(&one, &["get", "leased"]), "");
    assert!(ok(&one, &["lease", "timetolive", &id]).contains("already expired"));
    let gone = etcdctl(&one, &["lease", "keep-alive", "--once", &id], "").unwrap_err();
    assert!(gone.contains("requested lease not found"), "{gone}");

    // Leadership moved by etcdctl, then the new leader killed: etcdctl goes on.
    let moved = ok(&all, &["move-leader", &follower.to_string()]);
    assert!(moved.contains(&format!("to {follower}")), "{moved}");
    assert_eq!(
        cluster.leader_within(PATIENCE, Some(leader)).await,
        follower
    );
    cluster.node(follower).kill();
    cluster.leader_within(PATIENCE, Some(follower)).await;
    assert_eq!(ok(&all, &["put", "after", "kill"]).trim(), "OK");
    assert_eq!(ok(&all, &["get", "after", "--print-value-only"]), "kill\n");
}

#[tokio::test]
async fn etcdctl_works_over_mutual_tls_and_changes_need_the_admin_role() {
    let certs = TestCerts::new();
    let cluster = TestCluster::builder().tls(&certs).start(3).await;
    let leader = cluster.wait_for_leader().await;
    let all = cluster.endpoints();
    let ca = certs.ca().display().to_string();
    let (client_cert, client_key) = certs.issue("app", "app");
    let as_ = |cert: &std::path::Path, key: &std::path::Path| {
        vec![
            format!("--cacert={ca}"),
            format!("--cert={}", cert.display()),
            format!("--key={}", key.display()),
        ]
    };
    let admin = as_(
        &certs.dir().join("admin.crt"),
        &certs.dir().join("admin.key"),
    );
    let client = as_(&client_cert, &client_key);
    let run = |flags: &[String], args: &[&str]| {
        let mut all_args: Vec<&str> = flags.iter().map(String::as_str).collect();
        all_args.extend_from_slice(args);
        etcdctl(&all, &all_args, "")
    };

    // A client certificate reads and writes, and sees the members as https.
    assert_eq!(run(&client, &["put", "k", "v"]).unwrap().trim(), "OK");
    assert_eq!(
        run(&client, &["get", "k", "--print-value-only"]).unwrap(),
        "v\n"
    );
    let members = run(&client, &["member", "list"]).unwrap();
    assert_eq!(members.matches("https://").count(), 6, "{members}");
    // Steering the cluster needs the admin certificate.
    let target = (1..=3)
        .find(|id| *id != leader)
        .expect("a follower")
        .to_string();
    let refused = run(&client, &["move-leader", &target]).unwrap_err();
    assert!(
        refused.contains("PermissionDenied") || refused.contains("admin role"),
        "{refused}"
    );
    let moved = run(&admin, &["move-leader", &target]).unwrap();
    assert!(moved.contains(&format!("to {target}")), "{moved}");
    // No certificate: refused by the TLS handshake itself.
    let anonymous = etcdctl(
        &all,
        &[
            &format!("--cacert={ca}"),
            "--command-timeout=3s",
            "get",
            "k",
        ],
        "",
    )
    .unwrap_err();
    assert!(!anonymous.contains("\nv\n"), "{anonymous}");
}
