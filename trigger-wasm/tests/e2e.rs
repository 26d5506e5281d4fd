//! End to end: the compiled component under `wasmtime serve -S cli`, in front of a loopback
//! fake of the Run Admin API, the metadata server and the JWKS endpoint.
//!
//! The component is built with `cargo build --target wasm32-wasip2 --release -p trigger-wasm`
//! (a no-op when up to date; `TRIGGER_WASM` overrides). wasmtime comes from WASMTIME, PATH or
//! ~/.cargo/bin; without it these tests fail, they do not skip.

#![allow(
    clippy::print_stderr,
    reason = "a failing end-to-end test shows the component's log"
)]

mod common;

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

fn oidc() -> String {
    format!("Bearer {}", test_key().sign(&good_claims()))
}

fn fake() -> FakeGoogle {
    FakeGoogle::start(FakeBehaviour {
        jwks: test_key().jwks(),
        ..FakeBehaviour::default()
    })
}

fn binary_event(port: u16, auth: &str, id: &str, ty: &str, object: &str) -> Resp {
    let mut h = ce_headers(id, ty, object);
    h.push(("authorization".into(), auth.into()));
    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    post(port, &h, &object_body(object, "1700000000000001"))
}

#[test]
fn accepted_event_starts_one_execution_and_a_running_one_suppresses_the_next() {
    let fake = fake();
    let served = Served::start(&base_env(&fake), &[]);
    let r = binary_event(
        served.port,
        &oidc(),
        "ev-1",
        "finalized",
        "raw_training_data/a/b.png",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let body = r.json();
    assert_eq!(body["outcome"], "started");
    assert!(
        body["execution"]
            .as_str()
            .unwrap()
            .ends_with("/executions/tune-job-abc12")
    );

    let runs = fake.run_calls();
    assert_eq!(runs.len(), 1, "exactly one :run request");
    let run = &runs[0];
    assert_eq!(run.method, "POST");
    assert_eq!(run.path, format!("{JOB_PATH}:run"));
    assert_eq!(
        run.header("authorization"),
        Some(&*format!("Bearer {ACCESS_TOKEN}"))
    );
    let sent: Value = serde_json::from_slice(&run.body).expect(":run body is JSON");
    let problems = check_against_discovery(&sent, "GoogleCloudRunV2RunJobRequest");
    assert!(
        problems.is_empty(),
        "body does not match run.v2.json: {problems:?}"
    );
    let env = sent["overrides"]["containerOverrides"][0]["env"]
        .as_array()
        .unwrap();
    let get = |n: &str| {
        env.iter()
            .find(|e| e["name"] == n)
            .map_or(Value::Null, |e| e["value"].clone())
    };
    assert_eq!(get("TRIGGER_BUCKET"), json!(BUCKET));
    assert_eq!(get("TRIGGER_OBJECT"), json!("raw_training_data/a/b.png"));
    assert_eq!(get("TRIGGER_GENERATION"), json!("1700000000000001"));
    assert_eq!(get("TRIGGER_EVENT_ID"), json!("ev-1"));
    // Storm control read the job before starting it.
    let paths: Vec<String> = fake.requests().iter().map(|r| r.path.clone()).collect();
    let get_idx = paths.iter().position(|p| p == JOB_PATH).expect("jobs.get");
    let run_idx = paths.iter().position(|p| p.ends_with(":run")).unwrap();
    assert!(get_idx < run_idx, "{paths:?}");

    // The fake now reports the execution as running: the next upload starts nothing.
    let r = binary_event(served.port, &oidc(), "ev-2", "finalized", "labels/b.json");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["outcome"], "already_running");
    assert_eq!(
        fake.run_calls().len(),
        1,
        "a running execution must suppress a second start"
    );
}

#[test]
fn an_object_whose_name_the_binding_percent_encodes_starts_the_job() {
    // Issue 10 item 6: spaces, '%' and non-ASCII arrive percent-encoded in ce-subject.
    let name = "raw_training_data/naïve café 100%.txt";
    assert_eq!(
        ce_headers("ev-enc", "finalized", name)[5].1,
        "objects/raw_training_data/na%C3%AFve%20caf%C3%A9%20100%25.txt",
        "headers as the cloudevents SDKs make them"
    );
    let fake = fake();
    let served = Served::start(&base_env(&fake), &[]);
    let r = binary_event(served.port, &oidc(), "ev-enc", "finalized", name);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["outcome"], "started");
    let runs = fake.run_calls();
    assert_eq!(runs.len(), 1);
    let sent: Value = serde_json::from_slice(&runs[0].body).unwrap();
    let env = &sent["overrides"]["containerOverrides"][0]["env"];
    assert_eq!(env[1], json!({"name": "TRIGGER_OBJECT", "value": name}));
}

#[test]
fn every_event_form_is_accepted() {
    let fake = fake();
    let served = Served::start(&base_env(&fake), &[]);
    let structured = [
        ("application/cloudevents+json", "structured_finalized.json"),
        (
            "application/cloudevents+json",
            "structured_finalized_base64.json",
        ),
        (
            "application/cloudevents+json",
            "structured_message_published.json",
        ),
        ("application/json", "pubsub_finalize.json"),
        ("application/json", "pubsub_finalize_no_payload.json"),
    ];
    for (ct, f) in structured {
        fake.set(|b| b.latest = None);
        fake.clear();
        let r = post(
            served.port,
            &[("content-type", ct), ("authorization", &oidc())],
            &fixture(f),
        );
        assert_eq!(r.status, 200, "{f}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["outcome"], "started", "{f}");
        assert_eq!(fake.run_calls().len(), 1, "{f}");
    }
}

#[test]
fn ignored_events_and_bad_tokens_start_nothing() {
    let fake = fake();
    let served = Served::start(&base_env(&fake), &[]);
    let ignored = [
        (
            "finalized",
            "training_datasets/run-1/sft_train.jsonl",
            "JSONL_FOLDER",
        ),
        (
            "finalized",
            "trained_model/model_metadata_20261124_100000.json",
            "MODEL_META_FOLDER",
        ),
        ("finalized", "elsewhere/a.png", "neither"),
        ("finalized", "raw_training_data/a.exe", "extension"),
        (
            "deleted",
            "raw_training_data/a.png",
            "not an object finalize",
        ),
        (
            "metadataUpdated",
            "raw_training_data/a.png",
            "not an object finalize",
        ),
    ];
    for (ty, object, why) in ignored {
        let r = binary_event(served.port, &oidc(), "ev", ty, object);
        assert_eq!(r.status, 200, "{object}");
        let b = r.json();
        assert_eq!(b["outcome"], "ignored", "{object}");
        assert!(b["reason"].as_str().unwrap().contains(why), "{object}: {b}");
    }
    // Another bucket.
    let mut v: Value = serde_json::from_slice(&fixture("pubsub_finalize.json")).unwrap();
    v["message"]["attributes"]["bucketId"] = json!("other-bucket");
    v["message"]["attributes"]["payloadFormat"] = json!("NONE");
    let r = post(
        served.port,
        &[("authorization", &oidc())],
        v.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert!(r.json()["reason"].as_str().unwrap().contains("BUCKET_NAME"));

    let k = test_key();
    let bad_tokens = [
        String::new(),
        "Bearer garbage".into(),
        format!(
            "Bearer {}",
            k.sign(&with(&good_claims(), "aud", json!("https://other/")))
        ),
        format!(
            "Bearer {}",
            k.sign(&with(&good_claims(), "email", json!("x@evil.example")))
        ),
        format!(
            "Bearer {}",
            k.sign(&with(&good_claims(), "exp", json!(now() - 600)))
        ),
        format!("Bearer {}", other_key().sign(&good_claims())),
    ];
    for auth in &bad_tokens {
        let r = binary_event(
            served.port,
            auth,
            "ev",
            "finalized",
            "raw_training_data/a.png",
        );
        assert_eq!(r.status, 401, "{auth}");
    }
    assert_eq!(fake.run_calls().len(), 0, "nothing may start");
    assert_eq!(
        fake.count(|r| r.path.starts_with("/computeMetadata")),
        0,
        "ignored or refused events must not even fetch a token"
    );
}

#[test]
fn transient_and_permanent_upstream_failures() {
    let fake = fake();
    let mut env = base_env(&fake);
    env.retain(|(k, _)| k != "UPSTREAM_TIMEOUT_MS");
    env.push(("UPSTREAM_TIMEOUT_MS".into(), "500".into()));
    let served = Served::start(&env, &[]);
    let send = || {
        binary_event(
            served.port,
            &oidc(),
            "ev",
            "finalized",
            "raw_training_data/x.txt",
        )
    };

    fake.set(|b| {
        b.run_status = 429;
        b.run_error_body =
            r#"{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}"#
                .into();
    });
    let r = send();
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.json()["reason"]
            .as_str()
            .unwrap()
            .contains("RESOURCE_EXHAUSTED")
    );

    fake.set(|b| {
        b.run_status = 403;
        b.run_error_body = r#"{"error":{"code":403,"message":"Permission 'run.jobs.runWithOverrides' denied","status":"PERMISSION_DENIED"}}"#.into();
    });
    let r = send();
    assert_eq!(r.status, 500);
    assert!(
        r.json()["reason"]
            .as_str()
            .unwrap()
            .contains("runWithOverrides")
    );
    assert!(
        served.stderr().contains("runWithOverrides"),
        "Google's message must be logged"
    );

    fake.set(|b| {
        b.run_status = 200;
        b.run_delay = std::time::Duration::from_millis(1500);
    });
    let r = send();
    assert_eq!(r.status, 503, "a timeout asks for redelivery");
    fake.set(|b| b.run_delay = std::time::Duration::ZERO);

    fake.set(|b| b.metadata_status = 500);
    assert_eq!(send().status, 503);
}

#[test]
fn caches_survive_between_requests_when_the_instance_is_reused() {
    let fake = fake();
    fake.set(|b| b.start_marks_running = false);
    let served = Served::start(&base_env(&fake), &["--max-instance-reuse-count", "1000"]);
    for i in 0..5 {
        let r = binary_event(
            served.port,
            &oidc(),
            &format!("ev-{i}"),
            "finalized",
            "labels/x.json",
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    assert_eq!(fake.run_calls().len(), 5);
    assert_eq!(
        fake.count(|r| r.path.starts_with("/computeMetadata")),
        1,
        "token cached"
    );
    assert_eq!(
        fake.count(|r| r.path == "/oauth2/v3/certs"),
        1,
        "JWKS cached"
    );
}

#[test]
fn preloaded_jwks_json_means_no_jwks_fetch() {
    let fake = fake();
    // Should the component fetch JWKS_URL anyway, that request fails and is counted.
    fake.set(|b| b.jwks_status = 503);
    let mut env = base_env(&fake);
    env.push((
        "JWKS_JSON".into(),
        String::from_utf8(test_key().jwks()).unwrap(),
    ));
    // A fresh instance per request (serve's default): each one parses JWKS_JSON itself.
    let served = Served::start(&env, &[]);
    let r = binary_event(
        served.port,
        &oidc(),
        "ev-pre",
        "finalized",
        "raw_training_data/pre/a.png",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["outcome"], "started");
    let r = binary_event(
        served.port,
        &oidc(),
        "ev-pre-2",
        "finalized",
        "training_datasets/run-1/sft_train.jsonl",
    );
    assert_eq!(r.json()["outcome"], "ignored");
    let r = binary_event(
        served.port,
        &format!("Bearer {}", other_key().sign(&good_claims())),
        "ev-forged",
        "finalized",
        "raw_training_data/pre/b.png",
    );
    assert_eq!(
        r.status, 401,
        "a forged token is refused by the preloaded key"
    );
    assert_eq!(fake.run_calls().len(), 1, "exactly one :run request");
    assert_eq!(
        fake.count(|r| r.path == "/oauth2/v3/certs"),
        0,
        "the JWKS endpoint must not be asked"
    );

    // A malformed JWKS_JSON answers 500 naming the setting and starts nothing.
    let mut bad = base_env(&fake);
    bad.push(("JWKS_JSON".into(), "{\"keys\": 1}".into()));
    let served = Served::start(&bad, &[]);
    let r = binary_event(
        served.port,
        &oidc(),
        "ev-bad",
        "finalized",
        "raw_training_data/pre/c.png",
    );
    assert_eq!(r.status, 500);
    assert!(
        r.json()["reason"]
            .as_str()
            .unwrap()
            .contains("setting JWKS_JSON"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(fake.run_calls().len(), 1);
    assert_eq!(fake.count(|r| r.path == "/oauth2/v3/certs"), 0);
}

/// Method, raw headers, body.
type RawRequest = (String, Vec<(String, Vec<u8>)>, Vec<u8>);

/// A malformed or hostile request; each must be answered 4xx without a trap. One arm per kind
/// of damage, so the table is long.
#[allow(clippy::too_many_lines)]
fn hostile(rng: &mut StdRng, i: usize) -> RawRequest {
    let mut headers: Vec<(String, Vec<u8>)> = vec![("x-trigger-token".into(), SECRET.into())];
    let rand_bytes =
        |rng: &mut StdRng, n: usize| (0..n).map(|_| rng.r#gen::<u8>()).collect::<Vec<u8>>();
    let valid = fixture("pubsub_finalize.json");
    let structured = fixture("structured_finalized.json");
    let method = "POST".to_owned();
    let body = match i % 16 {
        0 => {
            let n = rng.gen_range(0..4096);
            rand_bytes(rng, n)
        }
        1 => {
            let cut = rng.gen_range(0..valid.len() - 1);
            valid[..cut].to_vec()
        }
        2 => "[".repeat(rng.gen_range(1..200_000)).into_bytes(),
        3 => format!(
            "{{\"message\":{}}}",
            "{\"a\":".repeat(rng.gen_range(100..5000))
        )
        .into_bytes(),
        4 => {
            let mut v: Value = serde_json::from_slice(&valid).unwrap();
            v["message"]["data"] =
                Value::from(String::from_utf8_lossy(&rand_bytes(rng, 64)).into_owned());
            v.to_string().into_bytes()
        }
        5 => {
            // ce-* headers with random or missing attributes.
            headers.push((
                "ce-specversion".into(),
                if rng.gen_bool(0.5) {
                    b"1.0".to_vec()
                } else {
                    rand_bytes(rng, 3)
                },
            ));
            if rng.gen_bool(0.5) {
                headers.push(("ce-id".into(), b"x".to_vec()));
            }
            headers.push((
                "ce-type".into(),
                b"google.cloud.storage.object.v1.finalized".to_vec(),
            ));
            headers.push((
                "ce-source".into(),
                rand_bytes(rng, 10)
                    .into_iter()
                    .filter(u8::is_ascii_alphanumeric)
                    .collect(),
            ));
            rand_bytes(rng, 100)
        }
        6 => {
            // A structured event with one attribute replaced by a value of the wrong type.
            headers.push((
                "content-type".into(),
                b"application/cloudevents+json".to_vec(),
            ));
            let mut v: Value = serde_json::from_slice(&structured).unwrap();
            let keys = [
                "specversion",
                "id",
                "type",
                "source",
                "subject",
                "data",
                "datacontenttype",
                "data_base64",
            ];
            let k = keys[rng.gen_range(0..keys.len())];
            let bad = [
                json!(12345),
                json!([1, 2, 3]),
                json!(true),
                json!({"name": {"x": 1}}),
            ];
            v[k] = bad[rng.gen_range(0..bad.len())].clone();
            if k == "specversion" || k == "id" {
                v[k] = json!("\u{0000}\u{ffff}");
            }
            v.to_string().into_bytes()
        }
        7 => {
            let mut v: Value = serde_json::from_slice(&valid).unwrap();
            let attrs = ["eventType", "bucketId", "objectId", "objectGeneration"];
            let a = attrs[rng.gen_range(0..attrs.len())];
            v["message"]["attributes"][a] = if a == "objectGeneration" {
                json!("-1")
            } else {
                json!(rng.r#gen::<u32>())
            };
            v.to_string().into_bytes()
        }
        8 => {
            // Oversized body: 413.
            if i % 160 == 8 {
                vec![b' '; 1024 * 1024 + 1 + rng.gen_range(0..4096)]
            } else {
                b"{}".to_vec()
            }
        }
        9 => {
            headers.push((
                "content-type".into(),
                b"application/cloudevents-batch+json".to_vec(),
            ));
            b"[{}]".to_vec()
        }
        10 => {
            // Non-UTF-8 and odd header values.
            headers.push(("content-type".into(), vec![0xff, 0xfe, b'/', 0x80]));
            headers.push(("ce-specversion".into(), vec![0xc3, 0x28]));
            rand_bytes(rng, 50)
        }
        11 => {
            // Long header values and many headers.
            for j in 0..50 {
                headers.push((format!("x-h{j}"), vec![b'a'; rng.gen_range(1..500)]));
            }
            b"{\"message\":{\"attributes\":{}}}".to_vec()
        }
        12 => {
            // Wrong or missing shared secret: 401.
            headers[0].1 = if rng.gen_bool(0.5) {
                rand_bytes(rng, 20)
                    .into_iter()
                    .filter(u8::is_ascii_alphanumeric)
                    .collect()
            } else {
                Vec::new()
            };
            if headers[0].1.is_empty() {
                headers.remove(0);
            }
            valid.clone()
        }
        13 => {
            let mut v: Value = serde_json::from_slice(&valid).unwrap();
            v["message"]["attributes"]["objectId"] = json!("raw_training_data/other.png");
            v.to_string().into_bytes()
        }
        14 => {
            serde_json::to_vec(&json!({"specversion": "1.0", "id": "", "type": "t", "source": "s"}))
                .unwrap()
        }
        _ => {
            let junk = [
                "null",
                "true",
                "1e999999",
                "\"\\ud800\"",
                "{\"message\":null}",
                "{\"message\":[]}",
                "{}",
                "",
            ];
            junk[rng.gen_range(0..junk.len())].as_bytes().to_vec()
        }
    };
    (method, headers, body)
}

#[test]
fn ten_thousand_hostile_requests_are_answered_4xx_without_a_trap() {
    let fake = fake();
    let mut env = base_env(&fake);
    env.push(("AUTH_MODE".into(), "token".into()));
    env.push(("TRIGGER_TOKEN".into(), SECRET.into()));
    let mut served = Served::start(&env, &[]);
    let mut rng = StdRng::seed_from_u64(0x7219_6e5e);
    let mut by_status = std::collections::BTreeMap::new();
    for i in 0..9_000 {
        let (method, headers, body) = hostile(&mut rng, i);
        let h: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        let r = raw_request(served.port, &method, &h, &body);
        assert!(
            (400..500).contains(&r.status),
            "request {i} answered {}: {} (headers {headers:?}, body {:?})",
            r.status,
            String::from_utf8_lossy(&r.body),
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
        *by_status.entry(r.status).or_insert(0) += 1;
    }
    // OIDC mode: hostile bearer tokens.
    let mut oenv = base_env(&fake);
    oenv.push(("AUTH_MODE".into(), "oidc".into()));
    let mut oserved = Served::start(&oenv, &[]);
    let k = test_key();
    let valid = fixture("pubsub_finalize.json");
    for i in 0..1_000 {
        let token = match i % 6 {
            0 => b64url(
                &(0..rng.gen_range(0..300))
                    .map(|_| rng.r#gen::<u8>())
                    .collect::<Vec<_>>(),
            ),
            1 => format!("{}.{}.{}", b64url(b"{\"alg\":\"none\"}"), b64url(b"{}"), ""),
            2 => k.sign_with_header(
                &json!({"alg": "RS256", "kid": rng.r#gen::<u64>().to_string()}),
                &good_claims(),
            ),
            3 => {
                let t = k.sign(&good_claims());
                let mut b = t.into_bytes();
                let n = b.len();
                let pos = rng.gen_range(0..n);
                b[pos] = if b[pos] == b'A' { b'B' } else { b'A' };
                String::from_utf8(b).unwrap()
            }
            4 => ".".repeat(rng.gen_range(0..10_000)),
            _ => k.sign(&with(&good_claims(), "email_verified", json!("false"))),
        };
        let auth = format!("Bearer {token}");
        let r = post(oserved.port, &[("authorization", &auth)], &valid);
        assert!(
            r.status == 401 || r.status == 400 || r.status == 431,
            "oidc request {i} answered {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        *by_status.entry(r.status).or_insert(0) += 1;
    }
    eprintln!("hostile requests by status: {by_status:?}");
    assert!(served.alive() && oserved.alive());
    for log in [served.stderr(), oserved.stderr()] {
        for needle in [
            "panicked",
            "wasm trap",
            "wasm backtrace",
            "error while executing",
        ] {
            assert!(
                !log.contains(needle),
                "component log contains {needle:?}:\n{}",
                &log[..log.len().min(4000)]
            );
        }
    }
    assert_eq!(
        fake.run_calls().len(),
        0,
        "no hostile request may start the job"
    );
    assert!(
        by_status.contains_key(&400)
            && by_status.contains_key(&401)
            && by_status.contains_key(&413)
    );
}
