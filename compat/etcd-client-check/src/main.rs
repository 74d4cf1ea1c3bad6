//! etcd's Rust client (`etcd-client`) against a raftkv cluster: put, get,
//! prefix, transactions, a watch, leases and the cluster's status, each
//! checked. Run by the node's test `test_etcd_rust` with two endpoints: the
//! first (a follower) takes every call but the leases' keep-alive, the
//! second (the leader) the leases, as one client would after being told
//! where the leader is. Prints "all checks passed" and exits 0, or names
//! the first check that failed and exits 1.

use std::time::Duration;

use anyhow::bail;
use anyhow::ensure;
use anyhow::Context;
use etcd_client::Client;
use etcd_client::Compare;
use etcd_client::CompareOp;
use etcd_client::DeleteOptions;
use etcd_client::EventType;
use etcd_client::GetOptions;
use etcd_client::LeaseGrantOptions;
use etcd_client::LeaseTimeToLiveOptions;
use etcd_client::PutOptions;
use etcd_client::Txn;
use etcd_client::TxnOp;
use etcd_client::TxnOpResponse;
use etcd_client::WatchOptions;

/// Longest wait for one answer.
const PATIENCE: Duration = Duration::from_secs(20);

#[tokio::main]
async fn main() {
    let endpoints: Vec<String> = std::env::args().skip(1).collect();
    let [any, leader] = endpoints.as_slice() else {
        eprintln!("usage: etcd-client-check ENDPOINT LEADER_ENDPOINT");
        std::process::exit(2);
    };
    match tokio::time::timeout(PATIENCE * 10, checks(any, leader)).await {
        Ok(Ok(())) => println!("etcd-client: all checks passed"),
        Ok(Err(e)) => {
            eprintln!("etcd-client check failed: {e:#}");
            std::process::exit(1);
        }
        Err(_) => {
            eprintln!("etcd-client checks did not finish in time");
            std::process::exit(1);
        }
    }
}

async fn get_value(c: &mut Client, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let got = c.get(key, None).await.context("get")?;
    Ok(got.kvs().first().map(|kv| kv.value().to_vec()))
}

async fn checks(any: &str, leader: &str) -> anyhow::Result<()> {
    let mut c = Client::connect([any], None).await.context("connect")?;
    let mut l = Client::connect([leader], None)
        .await
        .context("connect to the leader")?;

    // put and get
    c.put("/rs/a", "1", None).await.context("put")?;
    let got = c.get("/rs/a", None).await.context("get")?;
    let [kv] = got.kvs() else {
        bail!("get /rs/a: {:?}", got.kvs())
    };
    ensure!(kv.value() == b"1" && kv.version() == 1, "get /rs/a: {kv:?}");
    ensure!(
        get_value(&mut c, "/rs/missing").await?.is_none(),
        "a missing key"
    );

    // prefix, in key order
    c.put("/rs/b", "2", None).await.context("put")?;
    c.put("/rt", "not in the prefix", None)
        .await
        .context("put")?;
    let got = c
        .get("/rs/", Some(GetOptions::new().with_prefix()))
        .await
        .context("get --prefix")?;
    let keys: Vec<&[u8]> = got.kvs().iter().map(|kv| kv.key()).collect();
    ensure!(keys == [b"/rs/a", b"/rs/b"], "prefix: {keys:?}");

    // transactions: the success and the failure branch
    let txn = Txn::new()
        .when([
            Compare::value("/rs/a", CompareOp::Equal, "1"),
            Compare::version("/rs/b", CompareOp::Greater, 0),
        ])
        .and_then([TxnOp::put("/rs/a", "3", None)]);
    ensure!(c.txn(txn).await.context("txn")?.succeeded(), "txn succeeds");
    ensure!(
        get_value(&mut c, "/rs/a").await? == Some(b"3".to_vec()),
        "txn's put"
    );
    let txn = Txn::new()
        .when([Compare::value("/rs/a", CompareOp::Equal, "1")])
        .and_then([TxnOp::put("/rs/a", "never", None)])
        .or_else([TxnOp::get("/rs/b", None)]);
    let failed = c.txn(txn).await.context("txn")?;
    ensure!(!failed.succeeded(), "txn fails");
    match failed.op_responses().as_slice() {
        [TxnOpResponse::Get(get)] if get.kvs().len() == 1 && get.kvs()[0].value() == b"2" => {}
        other => bail!("txn's failure branch: {other:?}"),
    }

    // a watch sees a put and a delete after it was created
    let mut watch = c
        .watch("/rs/w/", Some(WatchOptions::new().with_prefix()))
        .await
        .context("watch")?;
    let created = tokio::time::timeout(PATIENCE, watch.message())
        .await
        .context("watch created in time")??
        .context("watch answers")?;
    ensure!(created.created(), "watch created: {created:?}");
    c.put("/rs/w/1", "x", None).await.context("put")?;
    c.delete("/rs/w/1", None).await.context("delete")?;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let message = tokio::time::timeout(PATIENCE, watch.message())
            .await
            .context("watch events in time")??
            .context("watch stream open")?;
        for event in message.events() {
            let kv = event.kv().context("an event's key")?;
            seen.push((event.event_type(), kv.key().to_vec(), kv.value().to_vec()));
        }
    }
    let expected = vec![
        (EventType::Put, b"/rs/w/1".to_vec(), b"x".to_vec()),
        (EventType::Delete, b"/rs/w/1".to_vec(), Vec::new()),
    ];
    ensure!(seen == expected, "watch events: {seen:?}");
    watch.cancel(created.watch_id()).await.context("cancel")?;

    // a lease: a key attached, kept alive, listed, revoked with its key
    let lease = l.lease_grant(30, None).await.context("lease grant")?.id();
    c.put("/rs/leased", "v", Some(PutOptions::new().with_lease(lease)))
        .await
        .context("put with a lease")?;
    let (mut keeper, mut answers) = l.lease_keep_alive(lease).await.context("keep-alive")?;
    keeper.keep_alive().await.context("keep-alive request")?;
    let kept = tokio::time::timeout(PATIENCE, answers.message())
        .await
        .context("keep-alive answer in time")??
        .context("keep-alive answer")?;
    ensure!(kept.id() == lease && kept.ttl() > 0, "keep-alive: {kept:?}");
    let alive = c
        .lease_time_to_live(lease, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .context("time to live")?;
    ensure!(
        (1..=30).contains(&alive.ttl()) && alive.keys() == [b"/rs/leased".to_vec()],
        "time to live: {alive:?}"
    );
    let listed = c.leases().await.context("leases")?;
    ensure!(
        listed.leases().iter().any(|l| l.id() == lease),
        "lease list: {listed:?}"
    );
    c.lease_revoke(lease).await.context("lease revoke")?;
    ensure!(
        get_value(&mut c, "/rs/leased").await?.is_none(),
        "revoked with its key"
    );

    // a lease whose id the client chooses, granted once
    let chosen = l
        .lease_grant(30, Some(LeaseGrantOptions::new().with_id(4243)))
        .await
        .context("lease grant with an id")?;
    ensure!(chosen.id() == 4243, "chosen id: {chosen:?}");
    match l
        .lease_grant(30, Some(LeaseGrantOptions::new().with_id(4243)))
        .await
    {
        Err(etcd_client::Error::GRpcStatus(status))
            if status.message() == "etcdserver: lease already exists" => {}
        other => bail!("a second grant of lease 4243: {other:?}"),
    }
    l.lease_revoke(4243).await.context("lease revoke")?;

    // the cluster as etcd describes it
    let status = c.status().await.context("status")?;
    ensure!(status.leader() != 0, "status names a leader: {status:?}");
    let members = c.member_list().await.context("member list")?;
    ensure!(members.members().len() == 3, "members: {members:?}");

    // delete a prefix
    let deleted = c
        .delete("/rs/", Some(DeleteOptions::new().with_prefix()))
        .await
        .context("delete --prefix")?;
    ensure!(deleted.deleted() == 2, "deleted: {}", deleted.deleted());
    Ok(())
}
