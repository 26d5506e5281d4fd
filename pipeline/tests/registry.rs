//! The champion alias in the Vertex AI Model Registry, against a loopback fake
//! (`tests/support/fake_registry.rs`, bodies and answers checked against aiplatform.v1.json).
//! Retries run on a paused clock: the fake lives on its own thread and the real clock, and the
//! registry runs no per-call timer while it talks to the live fake.

use crate::support;

use std::time::Duration;

use autotune::client::{Credentials, Options};
use autotune::registry::{self, NoRegistry, Registry, RegistryError, VertexRegistry};
use serde_json::json;
use support::fake_registry::FakeRegistry;
use support::loopback::{Loopback, Reply, static_token};
use tokio::time::Instant;

fn registry_at(root: &str, http: Options) -> VertexRegistry {
    VertexRegistry::with_credentials(
        registry::Config {
            hosts: autotune::locations::Hosts::custom(root),
            http,
        },
        Credentials::given(static_token()),
    )
    .unwrap()
}

fn registry(fake: &FakeRegistry) -> VertexRegistry {
    registry_at(&fake.url, Options::default().without_timers())
}

fn merges(fake: &FakeRegistry) -> Vec<(String, serde_json::Value)> {
    fake.calls()
        .into_iter()
        .filter(|c| c.path.ends_with(":mergeVersionAliases"))
        .map(|c| (c.path, c.body.unwrap_or_default()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn promote_moves_the_alias_within_a_model_and_champion_reads_it_back() {
    let fake = FakeRegistry::start();
    let m = fake.add_model("987654321", 3);
    let r = registry(&fake);

    assert_eq!(r.champion(&m).await.unwrap(), None, "no champion yet");
    r.promote(&format!("{m}@2"), None).await.unwrap();
    assert_eq!(fake.holders("champion"), [format!("{m}@2")]);
    assert_eq!(r.champion(&m).await.unwrap(), Some(format!("{m}@2")));
    assert_eq!(
        r.champion(&format!("{m}@3")).await.unwrap(),
        Some(format!("{m}@2")),
        "any version name of the Model reads the Model's alias"
    );
    assert_eq!(
        merges(&fake),
        [(
            format!("/v1/{m}@2:mergeVersionAliases"),
            json!({"versionAliases": ["champion"]})
        )]
    );

    r.promote(&format!("{m}@3"), Some(&format!("{m}@2")))
        .await
        .unwrap();
    assert_eq!(fake.holders("champion"), [format!("{m}@3")]);
    assert_eq!(fake.aliases(&format!("{m}@2")), Vec::<String>::new());
    assert_eq!(
        fake.aliases(&format!("{m}@1")),
        ["default"],
        "default stays"
    );
    assert_eq!(
        merges(&fake).len(),
        2,
        "within one Model the alias moves in one call"
    );

    // Idempotent: again, and again, the same state.
    r.promote(&format!("{m}@3"), Some(&format!("{m}@2")))
        .await
        .unwrap();
    r.promote(&format!("{m}@3"), Some(&format!("{m}@2")))
        .await
        .unwrap();
    assert_eq!(fake.holders("champion"), [format!("{m}@3")]);
    assert_eq!(r.champion(&m).await.unwrap(), Some(format!("{m}@3")));
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[tokio::test(start_paused = true)]
async fn across_models_the_old_one_loses_the_alias() {
    let fake = FakeRegistry::start();
    let old = fake.add_model("111", 2);
    let new = fake.add_model("222", 1);
    let r = registry(&fake);
    r.promote(&format!("{old}@2"), None).await.unwrap();

    r.promote(&format!("{new}@1"), Some(&format!("{old}@2")))
        .await
        .unwrap();
    assert_eq!(fake.holders("champion"), [format!("{new}@1")]);
    assert_eq!(r.champion(&old).await.unwrap(), None);
    assert_eq!(r.champion(&new).await.unwrap(), Some(format!("{new}@1")));
    let m = merges(&fake);
    assert_eq!(
        m[1..],
        [
            (
                format!("/v1/{new}@1:mergeVersionAliases"),
                json!({"versionAliases": ["champion"]})
            ),
            (
                format!("/v1/{old}@2:mergeVersionAliases"),
                json!({"versionAliases": ["-champion"]})
            ),
        ]
    );

    // Idempotent: the old Model no longer holds it, so nothing more is removed.
    r.promote(&format!("{new}@1"), Some(&format!("{old}@2")))
        .await
        .unwrap();
    assert_eq!(fake.holders("champion"), [format!("{new}@1")]);
    assert_eq!(merges(&fake).len(), 4, "one merge on the new version only");

    // Rolling back across Models moves it back the same way.
    r.promote(&format!("{old}@2"), Some(&format!("{new}@1")))
        .await
        .unwrap();
    assert_eq!(fake.holders("champion"), [format!("{old}@2")]);
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[tokio::test(start_paused = true)]
async fn a_half_done_or_hand_moved_alias_is_repaired() {
    let fake = FakeRegistry::start();
    let old = fake.add_model("111", 3);
    let new = fake.add_model("222", 1);
    // A crash after the new version got the alias and before the old Model lost it: both
    // carry it; someone also moved the old Model's alias by hand to @3.
    fake.set_alias(&format!("{old}@3"), "champion");
    fake.set_alias(&format!("{new}@1"), "champion");

    let r = registry(&fake);
    r.promote(&format!("{new}@1"), Some(&format!("{old}@2")))
        .await
        .unwrap();
    assert_eq!(fake.holders("champion"), [format!("{new}@1")]);
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried() {
    let fake = FakeRegistry::start();
    let m = fake.add_model("333", 2);
    let r = registry(&fake);
    fake.fail_next([503, 429, 500]);
    let started = Instant::now();
    r.promote(&format!("{m}@2"), None).await.unwrap();
    assert_eq!(fake.holders("champion"), [format!("{m}@2")]);
    assert_eq!(fake.calls().len(), 4, "three failures, then the merge");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "retries back off"
    );

    fake.fail_next([503]);
    assert_eq!(r.champion(&m).await.unwrap(), Some(format!("{m}@2")));
}

#[tokio::test(start_paused = true)]
async fn refusals_and_bad_names_are_clear_errors() {
    let fake = FakeRegistry::start();
    let m = fake.add_model("444", 2);
    let r = registry(&fake);

    fake.fail_next([403]);
    let e = r.promote(&format!("{m}@2"), None).await.unwrap_err();
    let RegistryError::Api { status, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(*status, Some(403));
    let text = e.to_string();
    assert!(text.contains(&format!("{m}@2")), "{text}");
    assert!(text.contains("HTTP 403"), "{text}");
    assert_eq!(fake.calls().len(), 1, "a refusal is not retried");

    // A version that does not exist is a refusal too (404 on the new version).
    let e = r.promote(&format!("{m}@9"), None).await.unwrap_err();
    assert!(e.to_string().contains("HTTP 404"), "{e}");

    let calls = fake.calls().len();
    for bad in [
        format!("{m}@champion"),
        m.clone(),
        "projects/p/locations/l/endpoints/1@2".to_owned(),
        "987654321@2".to_owned(),
    ] {
        let e = r.promote(&bad, None).await.unwrap_err();
        assert!(matches!(e, RegistryError::InvalidName { .. }), "{bad}: {e}");
        assert!(e.to_string().contains(&bad), "{e}");
    }
    let e = r
        .promote(&format!("{m}@2"), Some("not-a-model"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not-a-model"), "{e}");
    let e = r.champion("models/1").await.unwrap_err();
    assert!(matches!(e, RegistryError::InvalidName { .. }), "{e}");
    assert_eq!(fake.calls().len(), calls, "no call for a bad name");
    assert_eq!(fake.holders("champion"), Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_registry_fails_within_its_deadlines() {
    // Accepts connections and never answers; real per-call deadlines on a paused clock.
    let silent = Loopback::start(|_| Reply::hang());
    let http = Options::default().with_timeout(Some(Duration::from_secs(10)));
    let retry = http.retry;
    let r = registry_at(&silent.url, http);
    let started = Instant::now();
    let e = r
        .promote("projects/p/locations/l/models/1@2", None)
        .await
        .unwrap_err();
    let bound = retry.deadline.unwrap() + Duration::from_secs(2 * 10);
    assert!(started.elapsed() <= bound, "{:?}", started.elapsed());
    assert!(matches!(e, RegistryError::Api { status: None, .. }), "{e}");
}

#[tokio::test]
async fn the_dry_run_registry_does_nothing() {
    let r = NoRegistry;
    assert_eq!(
        r.champion("projects/p/locations/l/models/1").await.unwrap(),
        None
    );
    r.promote("projects/p/locations/l/models/1@2", None)
        .await
        .unwrap();
}
