//! What a run says is what happened (issue 20, truthfulness): a deferred run ends the
//! execution's cycles, an unchanged run does not claim a tuning, a waiting run blames rejects
//! only when there are some. In process, with the scripted tuner of [`crate::run`].

use autotune::status::RunStatus;

use crate::run::{Follow, Scripted, bucket, config, job, run, samples};

#[tokio::test]
async fn a_deferred_run_ends_the_executions_cycles() {
    let store = bucket();
    samples(&*store, 0, 20, &[]).await;
    let busy = Scripted::busy(
        Follow::Succeed,
        &["projects/p/locations/us-central1/tuningJobs/7"],
    );
    let mut c = config();
    c.max_cycles = 3;
    let cycles = job(&store, &busy, c)
        .run_cycles(std::future::pending(), false)
        .await;
    assert_eq!(cycles.last.status, RunStatus::Deferred);
    assert_eq!(
        cycles.cycles.len(),
        1,
        "listing again finds the same busy slots: {}",
        cycles.cycles_stopped
    );
    assert!(
        cycles.cycles_stopped.starts_with("deferred:"),
        "{}",
        cycles.cycles_stopped
    );
}

#[tokio::test]
async fn an_unchanged_run_does_not_say_it_tuned() {
    let store = bucket();
    samples(&*store, 0, 20, &[]).await;
    let tuner = Scripted::new(Follow::Succeed);
    let j = job(&store, &tuner, config());
    let first = run(&j).await;
    samples(&*store, 0, 20, &[]).await;
    let o = run(&j).await;
    assert_eq!(o.status, RunStatus::Unchanged, "{}", o.reason);
    assert!(!o.reason.contains("tuning succeeded"), "{}", o.reason);
    assert!(
        o.reason.contains("nothing was tuned")
            && o.reason.contains(first.run_id.as_deref().unwrap()),
        "{}",
        o.reason
    );
}

#[tokio::test]
async fn a_waiting_run_blames_rejects_only_when_there_are_some() {
    let store = bucket();
    samples(&*store, 0, 20, &[]).await;
    let tuner = Scripted::new(Follow::Succeed);
    let j = job(&store, &tuner, config());
    run(&j).await;
    // Six samples uploaded again with the same bytes, and one deleted (so the datasets
    // differ): six changed by the listing, none with new content.
    samples(&*store, 0, 6, &[]).await;
    for ext in ["txt", "json"] {
        store
            .delete(&format!("raw_training_data/s019.{ext}"))
            .await
            .unwrap();
    }
    let o = run(&j).await;
    assert_eq!(o.status, RunStatus::Waiting, "{}", o.reason);
    assert!(!o.reason.contains("rejects"), "{}", o.reason);
    assert!(
        o.reason.contains("6 had content already seen"),
        "{}",
        o.reason
    );
}

/// `counts.ambiguous` counts stems with more candidates than a pair, not names the bucket
/// cannot represent (those are `invalid_name` rejects, counted by category).
#[tokio::test]
async fn invalid_names_are_not_counted_as_ambiguous() {
    use std::os::unix::ffi::OsStrExt;
    let (dir, store) = local_bucket().await;
    let bad = dir
        .path()
        .join("raw_training_data")
        .join(std::ffi::OsStr::from_bytes(b"not-utf8-\xff.txt"));
    std::fs::write(bad, "x").unwrap();
    let o = run_with_one_invalid_name(&store).await;
    assert_eq!(o.counts.ambiguous, 0, "{:?}", o.counts);
}

/// A successful run of `store` that rejects exactly one name as `invalid_name`.
async fn run_with_one_invalid_name(
    store: &std::sync::Arc<dyn autotune::storage::Store>,
) -> autotune::run::Outcome {
    let tuner = Scripted::new(Follow::Succeed);
    let o = run(&job(store, &tuner, config())).await;
    assert_eq!(o.status, RunStatus::Success, "{}", o.reason);
    assert_eq!(
        o.counts
            .rejected_by_category
            .get(&autotune::sample::Category::InvalidName),
        Some(&1),
        "{:?}",
        o.counts
    );
    o
}

/// A local folder as the bucket, with 20 text pairs.
async fn local_bucket() -> (
    tempfile::TempDir,
    std::sync::Arc<dyn autotune::storage::Store>,
) {
    let dir = tempfile::tempdir().unwrap();
    let store: std::sync::Arc<dyn autotune::storage::Store> = std::sync::Arc::new(
        autotune::storage::local::LocalStore::new(dir.path().to_str().unwrap()).unwrap(),
    );
    samples(&*store, 0, 20, &[]).await;
    (dir, store)
}

/// Issue 20: a file in an input folder whose name has the local backend's temporary pattern
/// (hidden, `.autotune-tmp-`, hex digits) and that no write holds was skipped without a word;
/// it is an `invalid_name` reject naming the object and what to do, and the other samples train.
#[tokio::test]
async fn a_temporary_looking_name_in_an_input_folder_is_reported() {
    let (dir, store) = local_bucket().await;
    let name = ".s100.txt.autotune-tmp-0123456789abcdef0123456789abcdef";
    let path = dir.path().join("raw_training_data").join(name);
    std::fs::write(&path, "hello").unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let o = run_with_one_invalid_name(&store).await;
    let rejects_uri = o.rejected_uri.clone().expect("rejects are written");
    let rejects = std::fs::read_to_string(rejects_uri.strip_prefix("file://").unwrap()).unwrap();
    assert!(
        rejects.contains(name) && rejects.contains("temporary file") && rejects.contains("rename"),
        "{rejects}"
    );
}
