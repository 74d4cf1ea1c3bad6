//! The retry and outcome rules of [`Client`], against scripted nodes.

use std::sync::atomic::Ordering;

use tonic::metadata::MetadataValue;
use tonic::Code;
use tonic::Status;

use super::*;

fn client(endpoints: &[&str]) -> Client {
    let endpoints = endpoints.iter().map(|e| e.to_string()).collect();
    let mut options = ClientOptions::new(endpoints, Duration::from_secs(1));
    options.retry_pause = (Duration::from_millis(1), Duration::from_millis(2));
    Client::connect(options).unwrap()
}

/// A call whose every attempt gets the next status of `answers`, then
/// succeeds; it counts its attempts.
fn scripted(
    may_repeat: bool,
    answers: Vec<Status>,
) -> (Call<u64>, Arc<std::sync::atomic::AtomicUsize>) {
    use futures::FutureExt;
    let attempts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = attempts.clone();
    let answers = Arc::new(Mutex::new(answers.into_iter()));
    let call = Call {
        may_repeat,
        send: Box::new(move |_, _| {
            let n = count.fetch_add(1, Ordering::SeqCst) as u64;
            let answer = lock(&answers).next();
            async move { answer.map_or(Ok(n), Err) }.boxed()
        }),
    };
    (call, attempts)
}

fn not_leader(id: u64, address: &str) -> Status {
    let mut status = Status::unavailable("redirect");
    let metadata = status.metadata_mut();
    metadata.insert(
        raftkv_proto::REASON_METADATA,
        MetadataValue::from_static(raftkv_proto::REASON_NOT_LEADER),
    );
    metadata.insert(
        raftkv_proto::LEADER_ID_METADATA,
        id.to_string().parse().unwrap(),
    );
    metadata.insert(raftkv_proto::LEADER_ADDR_METADATA, address.parse().unwrap());
    status
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

#[tokio::test]
async fn a_redirect_is_followed_to_the_leader_it_names() {
    let client = client(&["127.0.0.1:1"]);
    client.set_leader(Some("127.0.0.1:1".into()));
    let (call, attempts) = scripted(false, vec![not_leader(2, "127.0.0.1:2")]);
    let mut retries = Vec::new();
    let served = client
        .run(&call, soon(), &mut |kind| retries.push(kind))
        .await
        .unwrap();
    assert_eq!(served.address, "127.0.0.1:2");
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    assert_eq!(retries, vec!["not_leader"]);
    assert_eq!(client.node_id("127.0.0.1:2"), Some(2));
}

#[tokio::test]
async fn a_write_whose_outcome_is_open_is_not_repeated() {
    let client = client(&["127.0.0.1:1"]);
    client.set_leader(Some("127.0.0.1:1".into()));
    let (call, attempts) = scripted(false, vec![Status::unavailable("gone")]);
    let error = client.run(&call, soon(), &mut |_| {}).await.unwrap_err();
    assert_eq!(error.failure, Failure::Unknown("unavailable"));
    assert!(error.is_unknown());
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    // The leader may be gone: the next call looks for it again.
    assert_eq!(client.known_leader(), None);
}

#[tokio::test]
async fn a_read_is_repeated_and_a_refusal_is_final() {
    let client = client(&["127.0.0.1:1"]);
    client.set_leader(Some("127.0.0.1:1".into()));
    let (read, attempts) = scripted(true, vec![not_leader(1, "127.0.0.1:1")]);
    assert!(client.run(&read, soon(), &mut |_| {}).await.is_ok());
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    let (refused, attempts) = scripted(true, vec![Status::invalid_argument("empty key")]);
    let error = client.run(&refused, soon(), &mut |_| {}).await.unwrap_err();
    assert_eq!(error.failure, Failure::Failed("invalid_argument"));
    assert_eq!(error.code(), Some(Code::InvalidArgument));
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_client_bound_to_a_node_tries_once_and_follows_nobody() {
    let client = client(&["127.0.0.1:1"]).node("127.0.0.1:3").unwrap();
    let (call, attempts) = scripted(true, vec![not_leader(2, "127.0.0.1:2")]);
    let error = client.run(&call, soon(), &mut |_| {}).await.unwrap_err();
    assert!(matches!(error.failure, Failure::Retry { .. }));
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn nothing_is_sent_after_the_deadline() {
    let client = client(&["127.0.0.1:1"]);
    client.set_leader(Some("127.0.0.1:1".into()));
    let (call, attempts) = scripted(true, vec![]);
    let error = client
        .run(&call, Instant::now(), &mut |_| {})
        .await
        .unwrap_err();
    assert!(matches!(error.error, ClientError::Timeout(_)));
    assert_eq!(attempts.load(Ordering::SeqCst), 0);
}
