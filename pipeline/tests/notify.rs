//! Notifications against a loopback fake of Pub/Sub (`tests/support/fake_pubsub.rs`, bodies
//! checked against pubsub.v1.json) and a webhook receiver here that verifies each signature
//! the way the README tells receivers to. Retries and deadlines run on a paused clock: the
//! fakes live on their own threads and the real clock; clients that talk to a live fake run
//! no per-call timer, and the dead-sink tests use only sinks that never answer.

use crate::support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autotune::client::Credentials;
use autotune::notify::{self, Config, Event, Notice, Notifier, NotifyError};
use autotune::status::RunStatus;
use reqwest::Url;
use serde_json::{Value, json};
use support::fake_pubsub::FakePubSub;
use support::loopback::{Flood, Loopback, Received, Reply, refused_url, static_token};
use tokio::time::Instant;

const TOPIC: &str = "projects/test-project/topics/autotune-events";
const SECRET: &str = "a long random string both sides know";
const RUN: &str = "20261124-100000-abcdef";

/// One webhook delivery as the receiver saw it.
#[derive(Debug, Clone)]
struct Delivery {
    body: Vec<u8>,
    signature: String,
    verified: bool,
    event: Option<String>,
    id_header: Option<String>,
    content_type: Option<String>,
}

/// The receiver's own check, written from the README recipe (not autotune's code): HMAC-SHA256
/// of the raw body with the shared secret, compared in constant time with the hex after
/// `sha256=`.
fn receiver_verifies(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(tag) = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
    else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    ring::hmac::verify(&key, body, &tag).is_ok()
}

/// A webhook receiver on loopback: verifies and records every delivery, answers the scripted
/// statuses first, then 204.
struct Receiver {
    url: Url,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    _server: Loopback,
}

impl Receiver {
    fn start() -> Self {
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::<Reply>::new()));
        let (d, s) = (deliveries.clone(), script.clone());
        let server = Loopback::start(move |r: Received| {
            let signature = r
                .header("x-autotune-signature")
                .unwrap_or_default()
                .to_owned();
            d.lock().unwrap().push(Delivery {
                verified: receiver_verifies(SECRET.as_bytes(), &r.body, &signature),
                body: r.body.to_vec(),
                signature,
                event: r.header("x-autotune-event").map(str::to_owned),
                id_header: r.header("x-autotune-delivery").map(str::to_owned),
                content_type: r.header("content-type").map(str::to_owned),
            });
            s.lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| Reply::json(204, json!({})))
        });
        Self {
            url: Url::parse(&format!("{}/hooks/autotune", server.url)).unwrap(),
            deliveries,
            script,
            _server: server,
        }
    }

    fn answer_first(&self, statuses: &[u16]) {
        self.script.lock().unwrap().extend(
            statuses
                .iter()
                .map(|s| Reply::json(*s, json!({"error": "busy"}))),
        );
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }
}

/// Sinks on the fakes; no per-call timer (the clock may be paused), no overall deadline.
fn config(pubsub: Option<&FakePubSub>, webhook: Option<&Receiver>) -> Config {
    Config {
        topic: pubsub.map(|_| TOPIC.to_owned()),
        webhook: webhook.map(|r| r.url.clone()),
        webhook_secret: webhook.map(|_| SECRET.to_owned()),
        http: Config::default_http().without_timers(),
        deadline: None,
        pubsub_root: pubsub.map_or_else(|| Config::PUBSUB_ROOT.to_owned(), |p| p.url.clone()),
    }
}

fn notifier(config: Config) -> Notifier {
    Notifier::with_credentials(config, Credentials::given(static_token())).unwrap()
}

fn blessed() -> Notice {
    Notice::new(Event::Blessed, RUN, RunStatus::Success).with_details(json!({
        "candidate": {"model": "projects/p/locations/l/models/1@2", "exact_match": 0.81},
        "champion": {"model": "projects/p/locations/l/models/1@1", "exact_match": 0.74},
    }))
}

#[tokio::test(start_paused = true)]
async fn a_notice_is_published_with_its_attributes_and_json_data() {
    let pubsub = FakePubSub::start(&[TOPIC]);
    let n = notifier(config(Some(&pubsub), None));
    n.send(&blessed()).await;

    let messages = pubsub.messages();
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(m.topic, TOPIC);
    let attributes: Vec<(&str, &str)> = m
        .attributes
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        attributes,
        [("event", "blessed"), ("run_id", RUN), ("status", "success")]
    );
    let data = m.json();
    assert_eq!(data["event"], "blessed");
    assert_eq!(data["run_id"], RUN);
    assert_eq!(data["status"], "success");
    assert_eq!(data["source"], "autotune");
    assert_eq!(data["details"], blessed().details);
    assert_eq!(data["id"].as_str().unwrap().len(), 36, "a UUID: {data}");
    assert!(
        chrono::DateTime::parse_from_rfc3339(data["time"].as_str().unwrap()).is_ok(),
        "{data}"
    );
    assert!(pubsub.violations().is_empty(), "{:?}", pubsub.violations());

    // Every event goes out under its documented name.
    for e in Event::ALL {
        n.send(&Notice::new(e, RUN, RunStatus::Running)).await;
    }
    let names: Vec<String> = pubsub.messages()[1..]
        .iter()
        .map(|m| m.attributes["event"].clone())
        .collect();
    assert_eq!(
        names,
        [
            "tuning_submitted",
            "tuning_succeeded",
            "tuning_failed",
            "blessed",
            "not_blessed",
            "promoted",
            "rolled_back"
        ]
    );
    assert!(pubsub.violations().is_empty(), "{:?}", pubsub.violations());
}

#[tokio::test(start_paused = true)]
async fn the_webhook_is_signed_and_a_tampered_body_fails_verification() {
    let receiver = Receiver::start();
    let n = notifier(config(None, Some(&receiver)));
    n.send(&blessed()).await;

    let deliveries = receiver.deliveries();
    assert_eq!(deliveries.len(), 1);
    let d = &deliveries[0];
    assert!(d.verified, "the receiver could not verify {}", d.signature);
    assert_eq!(d.content_type.as_deref(), Some("application/json"));
    assert_eq!(d.event.as_deref(), Some("blessed"));
    let body: Value = serde_json::from_slice(&d.body).unwrap();
    assert_eq!(body["event"], "blessed");
    assert_eq!(body["run_id"], RUN);
    assert_eq!(body["details"], blessed().details);
    assert_eq!(d.id_header.as_deref(), body["id"].as_str(), "dedupe key");
    assert!(notify::verify(SECRET.as_bytes(), &d.body, &d.signature));

    // The body, the secret or the signature changed: verification fails.
    let mut tampered = d.body.clone();
    let at = tampered.windows(7).position(|w| w == b"blessed").unwrap();
    tampered[at..at + 7].copy_from_slice(b"BLESSED");
    assert!(!receiver_verifies(
        SECRET.as_bytes(),
        &tampered,
        &d.signature
    ));
    assert!(!notify::verify(SECRET.as_bytes(), &tampered, &d.signature));
    assert!(!receiver_verifies(b"another secret", &d.body, &d.signature));
    let mut forged = d.signature.clone();
    forged.replace_range(
        forged.len() - 1..,
        if forged.ends_with('0') { "1" } else { "0" },
    );
    assert!(!receiver_verifies(SECRET.as_bytes(), &d.body, &forged));
    // What the receiver computes is what autotune sends.
    assert_eq!(d.signature, notify::signature(SECRET.as_bytes(), &d.body));
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_until_delivered() {
    let pubsub = FakePubSub::start(&[TOPIC]);
    pubsub.fail_next([503, 429]);
    let receiver = Receiver::start();
    receiver.answer_first(&[500, 503]);
    let n = notifier(config(Some(&pubsub), Some(&receiver)));
    let started = Instant::now();
    n.send(&Notice::new(Event::NotBlessed, RUN, RunStatus::Success))
        .await;

    assert_eq!(pubsub.attempts(), 3, "two failures, then published");
    assert_eq!(pubsub.messages().len(), 1);
    assert_eq!(pubsub.messages()[0].attributes["event"], "not_blessed");
    let deliveries = receiver.deliveries();
    assert_eq!(deliveries.len(), 3, "two failures, then delivered");
    assert!(deliveries.iter().all(|d| d.verified));
    assert!(
        deliveries.iter().all(|d| d.body == deliveries[0].body),
        "a retry sends the same body (same id), so receivers can dedupe"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "retries wait: {:?}",
        started.elapsed()
    );
    assert!(pubsub.violations().is_empty(), "{:?}", pubsub.violations());
}

#[tokio::test(start_paused = true)]
async fn final_refusals_are_not_retried() {
    // An unknown topic (404) and a receiver that refuses (400): one attempt each.
    let pubsub = FakePubSub::start(&["projects/test-project/topics/another"]);
    let receiver = Receiver::start();
    receiver.answer_first(&[400]);
    let n = notifier(config(Some(&pubsub), Some(&receiver)));
    n.send(&Notice::new(Event::Failed, RUN, RunStatus::Failed))
        .await;
    assert_eq!(pubsub.attempts(), 1);
    assert!(pubsub.messages().is_empty());
    assert_eq!(receiver.deliveries().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_dead_sink_never_fails_send_and_returns_within_its_deadlines() {
    // Pub/Sub refuses connections; the webhook accepts them and never answers. Real deadlines
    // (connect 5 s, answer 10 s, retries started within 30 s), on a paused clock.
    let silent = Loopback::start(|_| Reply::hang());
    let config = Config {
        topic: Some(TOPIC.to_owned()),
        webhook: Some(Url::parse(&format!("{}/hook", silent.url)).unwrap()),
        webhook_secret: Some(SECRET.to_owned()),
        pubsub_root: refused_url(),
        ..Config::default()
    };
    let bound = config.deadline.unwrap();
    let n = notifier(config);
    let started = Instant::now();
    n.send(&Notice::new(Event::Promoted, RUN, RunStatus::Success))
        .await;
    let took = started.elapsed();
    assert!(took <= bound, "send took {took:?}, more than {bound:?}");
    assert!(
        took >= Duration::from_secs(1),
        "the sinks were retried before giving up: {took:?}"
    );

    // The overall deadline holds even when the retry policy alone would go on for longer.
    let config = Config {
        webhook: Some(Url::parse(&format!("{}/hook", silent.url)).unwrap()),
        webhook_secret: Some(SECRET.to_owned()),
        http: autotune::client::Options {
            retry: autotune::client::RetryConfig {
                max_retries: None,
                deadline: None,
                ..Config::default_http().retry
            },
            ..Config::default_http()
        },
        deadline: Some(Duration::from_secs(45)),
        ..Config::default()
    };
    let n = notifier(config);
    let started = Instant::now();
    n.send(&Notice::new(Event::RolledBack, RUN, RunStatus::Success))
        .await;
    assert_eq!(started.elapsed(), Duration::from_secs(45));
}

/// Issue 20 item 15: a run posts its notices and goes on; they are delivered in order by a
/// background task, and the wait for them at the end is bounded whatever the receiver does.
#[tokio::test]
async fn posted_notices_are_delivered_in_order() {
    let receiver = Receiver::start();
    let n = Arc::new(notifier(config(None, Some(&receiver))));
    for e in EVENTS {
        n.post(Notice::new(e, RUN, RunStatus::Success));
    }
    n.flush(Duration::from_secs(60)).await;
    let got: Vec<String> = receiver
        .deliveries()
        .iter()
        .map(|d| {
            serde_json::from_slice::<serde_json::Value>(&d.body).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        got,
        [
            "tuning_submitted",
            "tuning_succeeded",
            "blessed",
            "promoted"
        ]
    );
}

const EVENTS: [Event; 4] = [
    Event::Submitted,
    Event::Succeeded,
    Event::Blessed,
    Event::Promoted,
];

/// A receiver that never answers: posting costs nothing, the wait for delivery ends at its
/// bound (on the paused clock).
#[tokio::test(start_paused = true)]
async fn the_wait_for_posted_notices_is_bounded() {
    let silent = Loopback::start(|_| Reply::hang());
    let n = Arc::new(notifier(Config {
        webhook: Some(Url::parse(&format!("{}/hook", silent.url)).unwrap()),
        webhook_secret: Some(SECRET.to_owned()),
        ..Config::default()
    }));
    let started = Instant::now();
    for e in EVENTS {
        n.post(Notice::new(e, RUN, RunStatus::Success));
    }
    assert_eq!(started.elapsed(), Duration::ZERO, "posting never waits");
    let logs = logs_of(n.flush(Duration::from_secs(5))).await;
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert!(
        logs.contains("4 notification(s) not delivered within 5s"),
        "{logs}"
    );
}

#[tokio::test(start_paused = true)]
async fn one_dead_sink_does_not_keep_the_other_from_delivering() {
    let pubsub = FakePubSub::start(&[TOPIC]);
    let config = Config {
        webhook: Some(Url::parse(&format!("{}/hook", refused_url())).unwrap()),
        webhook_secret: Some(SECRET.to_owned()),
        ..config(Some(&pubsub), None)
    };
    let n = notifier(config);
    n.send(&Notice::new(Event::Succeeded, RUN, RunStatus::Success))
        .await;
    assert_eq!(pubsub.messages().len(), 1);
}

/// Log lines captured in the production JSON format (what Cloud Logging reads).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every log line of `f`, down to debug, as the production JSON format writes them.
async fn logs_of(f: impl std::future::Future<Output = ()>) -> String {
    use tracing::instrument::WithSubscriber;
    use tracing_subscriber::prelude::*;
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_stackdriver::layer().with_writer(move || writer.clone()))
        .with(tracing_subscriber::filter::LevelFilter::DEBUG);
    f.with_subscriber(subscriber).await;
    String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
}

/// Slack- and Discord-style hooks carry their credential in the path or the query: a failed
/// delivery logs the receiver's scheme, host and the status, never its path, its query or
/// what it answered.
#[tokio::test(start_paused = true)]
async fn failed_deliveries_log_neither_the_webhook_url_nor_the_answer() {
    const PATH_SECRET: &str = "T0001/B0002/XOXB-PATH-SECRET";
    const QUERY_SECRET: &str = "QUERY-SECRET-42";
    const BODY_SECRET: &str = "ANSWER-SECRET-STACKTRACE";
    let answered = Loopback::start(|_| Reply::json(500, json!({"error": BODY_SECRET})));
    let hook = |root: &str| {
        Url::parse(&format!(
            "{root}/services/{PATH_SECRET}?token={QUERY_SECRET}"
        ))
        .unwrap()
    };
    let pubsub = Loopback::start(|_| {
        Reply::json(
            403,
            json!({"error": {"code": 403, "message": BODY_SECRET, "status": "PERMISSION_DENIED"}}),
        )
    });
    // A receiver that answers an error (retried, then given up), and one that refuses
    // connections (reqwest's own messages name the URL).
    for root in [answered.url.clone(), refused_url()] {
        let config = Config {
            topic: Some(TOPIC.to_owned()),
            pubsub_root: pubsub.url.clone(),
            webhook: Some(hook(&root)),
            webhook_secret: Some(SECRET.to_owned()),
            ..config(None, None)
        };
        let n = notifier(config);
        let logs = logs_of(Box::pin(n.send(&Notice::new(
            Event::Failed,
            RUN,
            RunStatus::Failed,
        ))))
        .await;
        for secret in [
            "XOXB-PATH-SECRET",
            "B0002",
            QUERY_SECRET,
            BODY_SECRET,
            "/services",
        ] {
            assert!(!logs.contains(secret), "{secret} logged:\n{logs}");
        }
        let host = root.trim_start_matches("http://");
        assert!(logs.contains(host), "the receiver's host is named:\n{logs}");
        assert!(
            logs.contains("not delivered"),
            "the failure itself is logged:\n{logs}"
        );
        if root == answered.url {
            assert!(logs.contains("HTTP 500"), "the status is logged:\n{logs}");
            assert!(
                logs.contains("HTTP 403"),
                "Pub/Sub's status is logged:\n{logs}"
            );
        }
    }
}

/// A hostile or broken receiver answering gigabytes costs a bounded read, not the memory.
#[tokio::test(start_paused = true)]
async fn huge_answers_are_not_read() {
    const GIB3: u64 = 3 << 30;
    const BOUND: u64 = 64 << 20;
    for status in [200, 500] {
        let hook = Flood::start(status, GIB3, BOUND);
        let pubsub = Flood::start(status, GIB3, BOUND);
        let config = Config {
            topic: Some(TOPIC.to_owned()),
            pubsub_root: pubsub.url.clone(),
            webhook: Some(Url::parse(&format!("{}/hook", hook.url)).unwrap()),
            webhook_secret: Some(SECRET.to_owned()),
            ..config(None, None)
        };
        let n = notifier(config);
        let logs = logs_of(Box::pin(n.send(&Notice::new(
            Event::Promoted,
            RUN,
            RunStatus::Success,
        ))))
        .await;
        for (what, flood) in [("webhook", &hook), ("Pub/Sub", &pubsub)] {
            // What the socket buffers took, not the answer: far below the 64 MiB the flood
            // would send to a client that reads on.
            assert!(
                flood.most_sent() < 16 << 20,
                "{what} answering {status}: {} bytes let through\n{logs}",
                flood.most_sent()
            );
        }
        assert!(
            !logs.contains("      "),
            "the answer is not logged:\n{logs}"
        );
    }
}

#[tokio::test]
async fn every_event_is_a_structured_log_line_even_without_sinks() {
    use tracing_subscriber::prelude::*;
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_stackdriver::layer().with_writer(move || writer.clone()));
    let _guard = tracing::subscriber::set_default(subscriber);

    let n = Notifier::log_only();
    assert!(!n.has_sinks());
    n.send(
        &Notice::new(Event::NotBlessed, RUN, RunStatus::Success)
            .with_details(json!({"reason": "delta below EVAL_MIN_DELTA"})),
    )
    .await;

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line: Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "not_blessed")
        .unwrap_or_else(|| panic!("no log line with event=not_blessed in:\n{text}"));
    // Cloud Logging's jsonPayload: tracing-stackdriver writes field names in camelCase.
    assert_eq!(line["severity"], "INFO");
    assert_eq!(line["runId"], RUN);
    assert_eq!(line["status"], "success");
    assert!(
        line.get("details").is_none(),
        "the details (JSON) go to the sinks; the log line stays flat: {line}"
    );
    assert!(
        line["message"].as_str().unwrap().contains("not_blessed"),
        "{line}"
    );
}

#[test]
fn bad_settings_are_refused_with_clear_messages() {
    let with = |change: &dyn Fn(&mut Config)| {
        let mut c = Config::default();
        change(&mut c);
        Notifier::with_credentials(c, Credentials::given(static_token())).map(|_| ())
    };
    let url = |s: &str| Some(Url::parse(s).unwrap());
    let secret = Some(SECRET.to_owned());

    let e = with(&|c| c.topic = Some("autotune-events".into())).unwrap_err();
    assert!(matches!(e, NotifyError::Topic { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("NOTIFY_TOPIC \"autotune-events\""), "{text}");
    assert!(
        text.contains("projects/PROJECT_ID/topics/TOPIC_ID"),
        "{text}"
    );
    let e = with(&|c| c.topic = Some("projects/p/subscriptions/autotune".into())).unwrap_err();
    assert!(e.to_string().contains("/topics/"), "{e}");

    let e = with(&|c| {
        c.webhook = url("http://hooks.example.com/autotune");
        c.webhook_secret.clone_from(&secret);
    })
    .unwrap_err();
    assert!(matches!(e, NotifyError::Webhook { .. }), "{e}");
    assert!(e.to_string().contains("must be https"), "{e}");
    assert!(e.to_string().contains("hooks.example.com"), "{e}");

    let e = with(&|c| {
        c.webhook = url("ftp://hooks.example.com/x");
        c.webhook_secret.clone_from(&secret);
    })
    .unwrap_err();
    assert!(e.to_string().contains("https"), "{e}");

    let e = with(&|c| {
        c.webhook = url("https://user:pw@hooks.example.com/x");
        c.webhook_secret.clone_from(&secret);
    })
    .unwrap_err();
    assert!(e.to_string().contains("credentials"), "{e}");

    let e = with(&|c| c.webhook = url("https://hooks.example.com/x")).unwrap_err();
    assert!(matches!(e, NotifyError::Secret(_)), "{e}");
    assert!(e.to_string().contains("NOTIFY_WEBHOOK_SECRET"), "{e}");
    let e = with(&|c| {
        c.webhook = url("https://hooks.example.com/x");
        c.webhook_secret = Some(String::new());
    })
    .unwrap_err();
    assert!(matches!(e, NotifyError::Secret(_)), "{e}");
    let e = with(&|c| c.webhook_secret.clone_from(&secret)).unwrap_err();
    assert!(e.to_string().contains("NOTIFY_WEBHOOK is not"), "{e}");

    // https anywhere; plain http on loopback only.
    for ok in [
        "https://hooks.example.com/autotune",
        "http://127.0.0.1:8080/hook",
        "http://[::1]:8080/hook",
        "http://localhost/hook",
    ] {
        with(&|c| {
            c.webhook = url(ok);
            c.webhook_secret.clone_from(&secret);
        })
        .unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    with(&|c| c.topic = Some(TOPIC.into())).unwrap();

    // Neither the secret nor a token in the webhook's path shows in Debug output or errors.
    let c = Config {
        webhook: url("https://hooks.example.com/services/T0001/XOXB-TOKEN"),
        webhook_secret: secret.clone(),
        ..Config::default()
    };
    for shown in [
        format!("{c:?}"),
        format!(
            "{:?}",
            Notifier::with_credentials(c, Credentials::given(static_token())).unwrap()
        ),
    ] {
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(!shown.contains("XOXB-TOKEN"), "{shown}");
        assert!(shown.contains("https://hooks.example.com/…"), "{shown}");
    }
    let e = with(&|c| c.webhook = url("http://hooks.example.com/services/XOXB-TOKEN")).unwrap_err();
    assert!(!e.to_string().contains("XOXB-TOKEN"), "{e}");
}

/// The Pub/Sub endpoint receives a bearer token: https to Google only (plain http on loopback,
/// for the fakes), refused as a setting naming PUBSUB_API_ENDPOINT before anything is sent.
#[test]
fn the_pubsub_endpoint_is_https_to_google_only() {
    let with = |root: &str| {
        let c = Config {
            topic: Some(TOPIC.to_owned()),
            pubsub_root: root.to_owned(),
            ..Config::default()
        };
        Notifier::with_credentials(c, Credentials::given(static_token())).map(|_| ())
    };
    for bad in [
        "http://pubsub.googleapis.com",
        "http://receiver.example.com",
        "https://receiver.example.com",
        "https://pubsub.googleapis.com.evil.example.com",
        "https://evilgoogleapis.com",
        "https://user:pw@pubsub.googleapis.com",
        "ftp://pubsub.googleapis.com",
        "https://pubsub.googleapis.com/?key=x",
        "http://10.0.0.1",
        "pubsub.googleapis.com",
        "",
    ] {
        let e = with(bad).unwrap_err();
        assert!(matches!(e, NotifyError::Endpoint(_)), "{bad}: {e}");
        assert_eq!(e.setting(), "PUBSUB_API_ENDPOINT", "{bad}: {e}");
        let text = e.to_string();
        assert!(text.starts_with("PUBSUB_API_ENDPOINT"), "{bad}: {text}");
    }
    for ok in [
        "https://pubsub.googleapis.com",
        "https://pubsub.googleapis.com/",
        "https://us-central1-pubsub.googleapis.com",
        "https://pubsub-myendpoint.p.googleapis.com",
        "http://127.0.0.1:8085",
        "http://localhost:8085",
        "http://[::1]:8085",
    ] {
        with(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
}
