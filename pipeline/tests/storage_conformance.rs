//! One conformance suite, run against every storage backend: memory, local folder, and GCS
//! through a real fake-gcs-server on loopback.

use crate::support;

use std::sync::Arc;

use autotune::client::{Options, RetryConfig};
use autotune::storage::{
    self, MultipartUpload, PutMode, Store, StoreError, gcs::GcsStore, local::LocalStore,
    memory::MemoryStore,
};
use bytes::Bytes;
use futures::TryStreamExt;

async fn read(store: &dyn Store, key: &str) -> Vec<u8> {
    storage::get_bytes(store, key, u64::MAX)
        .await
        .unwrap()
        .to_vec()
}

async fn put_get_and_generations(store: Arc<dyn Store>) {
    let a = store
        .put("dir/a.txt", Bytes::from("one"), PutMode::Overwrite)
        .await
        .unwrap();
    assert_eq!(a.key, "dir/a.txt");
    assert_eq!(a.size, 3);
    assert_eq!(read(&*store, "dir/a.txt").await, b"one");
    let got = store.get("dir/a.txt").await.unwrap();
    assert_eq!(
        got.generation, a.generation,
        "a read reports the version it reads"
    );
    let b = store
        .put("dir/a.txt", Bytes::from("two!"), PutMode::Overwrite)
        .await
        .unwrap();
    assert_ne!(
        a.generation, b.generation,
        "a rewrite changes the generation"
    );
    assert_eq!(read(&*store, "dir/a.txt").await, b"two!");
    let missing = store.get("dir/missing").await.unwrap_err();
    assert!(missing.is_not_found(), "{missing}");
    assert!(
        missing.to_string().contains("dir/missing"),
        "the error names the object: {missing}"
    );
}

/// `head` says what a listing would (size, generation) without reading the object, follows
/// rewrites, and tells a missing object as not found, naming it.
async fn head(store: Arc<dyn Store>) {
    let put = store
        .put("dir/h.txt", Bytes::from("hello"), PutMode::Overwrite)
        .await
        .unwrap();
    let h = store.head("dir/h.txt").await.unwrap();
    assert_eq!(
        (h.key.as_str(), h.size, &h.generation),
        ("dir/h.txt", 5, &put.generation)
    );
    let listed = storage::list_all(&*store, "dir/").await.unwrap();
    let listed = listed.iter().find(|m| m.key == "dir/h.txt").unwrap();
    assert_eq!(&h, listed, "head says what the listing says");
    let again = store
        .put("dir/h.txt", Bytes::from("hello, again"), PutMode::Overwrite)
        .await
        .unwrap();
    let h = store.head("dir/h.txt").await.unwrap();
    assert_eq!((h.size, &h.generation), (12, &again.generation));
    let missing = store.head("dir/missing").await.unwrap_err();
    assert!(missing.is_not_found(), "{missing}");
    assert!(
        missing.to_string().contains("dir/missing"),
        "the error names the object: {missing}"
    );
}

async fn create_only(store: Arc<dyn Store>) {
    store
        .put("lock.json", Bytes::from("x"), PutMode::Create)
        .await
        .unwrap();
    let err = store
        .put("lock.json", Bytes::from("y"), PutMode::Create)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err}");
    assert_eq!(
        read(&*store, "lock.json").await,
        b"x",
        "a refused create changes nothing"
    );
}

async fn compare_and_swap(store: Arc<dyn Store>) {
    let v1 = store
        .put("cas.json", Bytes::from("1"), PutMode::Create)
        .await
        .unwrap();
    let v2 = store
        .put(
            "cas.json",
            Bytes::from("2"),
            PutMode::Update(v1.generation.clone()),
        )
        .await
        .unwrap();
    let err = store
        .put(
            "cas.json",
            Bytes::from("3"),
            PutMode::Update(v1.generation.clone()),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Precondition { .. }), "{err}");
    assert_eq!(read(&*store, "cas.json").await, b"2");
    let err = store
        .put(
            "absent.json",
            Bytes::from("3"),
            PutMode::Update(v2.generation.clone()),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Precondition { .. }), "{err}");
}

async fn racing_creates_and_swaps(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let s = store.clone();
            tokio::spawn(async move {
                s.put("race.json", Bytes::from(format!("{i}")), PutMode::Create)
                    .await
            })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(wins, 1, "exactly one create wins");
    let generation = store.get("race.json").await.unwrap().generation;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let s = store.clone();
            let g = generation.clone();
            tokio::spawn(async move {
                s.put(
                    "race.json",
                    Bytes::from(format!("t{i}")),
                    PutMode::Update(g),
                )
                .await
            })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(StoreError::Precondition { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(wins, 1, "exactly one compare-and-swap wins");
}

async fn listing(store: Arc<dyn Store>) {
    let names = [
        "raw/a.txt",
        "raw/sub/b c.txt",
        "raw/sub/deep/ü#?%.json",
        "rawish.txt",
        "other/x.txt",
    ];
    for n in names {
        store
            .put(n, Bytes::from(n.to_owned()), PutMode::Overwrite)
            .await
            .unwrap();
    }
    let mut listed: Vec<_> = store.list("raw/").try_collect().await.unwrap();
    listed.sort_by(|a, b| a.key.cmp(&b.key));
    let keys: Vec<_> = listed.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(
        keys,
        ["raw/a.txt", "raw/sub/b c.txt", "raw/sub/deep/ü#?%.json"]
    );
    for m in &listed {
        assert_eq!(m.size, m.key.len() as u64);
        assert_eq!(
            read(&*store, &m.key).await,
            m.key.as_bytes(),
            "odd names round-trip"
        );
        assert_eq!(store.get(&m.key).await.unwrap().generation, m.generation);
    }
    let all: Vec<_> = store.list("").try_collect().await.unwrap();
    assert_eq!(all.len(), names.len());
    let none: Vec<_> = store.list("nothing/").try_collect().await.unwrap();
    assert!(none.is_empty());
    // Key ranges: [start, end), either bound open; together they are the whole listing.
    let range = async |start: Option<&str>, end: Option<&str>| {
        let mut keys: Vec<String> = store
            .list_range("raw/", start, end)
            .map_ok(|m| m.key)
            .try_collect()
            .await
            .unwrap();
        keys.sort();
        keys
    };
    assert_eq!(range(None, Some("raw/sub/b")).await, ["raw/a.txt"]);
    assert_eq!(
        range(Some("raw/sub/b"), Some("raw/sub/deep/ü#?%.json")).await,
        ["raw/sub/b c.txt"]
    );
    assert_eq!(
        range(Some("raw/sub/deep/ü#?%.json"), None).await,
        ["raw/sub/deep/ü#?%.json"]
    );
    assert_eq!(range(None, None).await.len(), 3);
    // Key order (bytewise): a folder's keys come after its name and a `/`.
    for n in [
        "order/a0.txt",
        "order/a/x.txt",
        "order/a.txt",
        "order/a-b.txt",
    ] {
        store
            .put(n, Bytes::from("x"), PutMode::Overwrite)
            .await
            .unwrap();
    }
    let order: Vec<String> = store
        .list("order/")
        .map_ok(|m| m.key)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        order,
        [
            "order/a-b.txt",
            "order/a.txt",
            "order/a/x.txt",
            "order/a0.txt"
        ]
    );
    // Folder hints: the folders right under a prefix, on stores that list ranges by
    // themselves; none elsewhere (a hint, never a listing).
    let hint = store.folder_hint("raw/").await.unwrap();
    if store.lists_ranges() {
        assert_eq!(hint, ["raw/sub/"]);
        assert_eq!(
            store.folder_hint("").await.unwrap(),
            ["order/", "other/", "raw/"]
        );
    } else {
        assert!(hint.is_empty(), "{hint:?}");
    }

    // The same bytes under two names list the same checksum (a renamed media sample keeps
    // its content digest without being read); local folders give none.
    for (name, body) in [
        ("copies/one.png", "same bytes"),
        ("copies/two.png", "same bytes"),
        ("copies/three.png", "other bytes"),
    ] {
        store
            .put(name, Bytes::from(body), PutMode::Overwrite)
            .await
            .unwrap();
    }
    let mut copies: Vec<_> = store.list("copies/").try_collect().await.unwrap();
    copies.sort_by(|a, b| a.key.cmp(&b.key));
    let sums: Vec<_> = copies.iter().map(|m| m.checksum.clone()).collect();
    if store.uri("").starts_with("file://") {
        assert_eq!(sums, [None, None, None]);
    } else {
        let [one, three, two] = &sums[..] else {
            unreachable!()
        };
        assert!(one.is_some(), "{sums:?}");
        assert_eq!(one, two, "{sums:?}");
        assert_ne!(one, three, "{sums:?}");
    }
}

async fn multipart(store: Arc<dyn Store>) {
    // 20 MiB in uneven parts: several resumable chunks on GCS.
    let part: Vec<u8> = (0..1_000_003u32).map(|i| (i % 251) as u8).collect();
    let mut up = store.put_multipart("out/big.jsonl").await.unwrap();
    let mut expected = Vec::new();
    for _ in 0..21 {
        up.put_part(Bytes::from(part.clone())).await.unwrap();
        expected.extend_from_slice(&part);
    }
    let visible: Vec<_> = store.list("out/").try_collect().await.unwrap();
    assert!(
        visible.is_empty(),
        "nothing under the final name before complete: {visible:?}"
    );
    let meta = up.complete().await.unwrap();
    assert_eq!(meta.size, expected.len() as u64);
    assert!(
        read(&*store, "out/big.jsonl").await == expected,
        "content survives"
    );

    let mut up = store.put_multipart("out/aborted.jsonl").await.unwrap();
    up.put_part(Bytes::from(part.clone())).await.unwrap();
    up.abort().await.unwrap();
    let mut up: Box<dyn MultipartUpload> = store.put_multipart("out/dropped.jsonl").await.unwrap();
    up.put_part(Bytes::from(part.clone())).await.unwrap();
    drop(up);
    let keys: Vec<_> = store
        .list("out/")
        .map_ok(|m| m.key)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    assert_eq!(
        keys,
        ["out/big.jsonl"],
        "aborted and dropped uploads leave nothing"
    );

    let empty = store.put_multipart("out/empty.jsonl").await.unwrap();
    assert_eq!(empty.complete().await.unwrap().size, 0);
    assert!(read(&*store, "out/empty.jsonl").await.is_empty());
}

async fn delete_and_bad_names(store: Arc<dyn Store>) {
    store
        .put("d/x", Bytes::from("x"), PutMode::Overwrite)
        .await
        .unwrap();
    store.delete("d/x").await.unwrap();
    assert!(store.get("d/x").await.unwrap_err().is_not_found());
    assert!(store.delete("d/x").await.unwrap_err().is_not_found());
    for bad in ["../escape", "a//b", ""] {
        let err = store
            .put(bad, Bytes::new(), PutMode::Overwrite)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidKey { .. }),
            "{bad:?}: {err}"
        );
    }
}

/// Two folders apart, the raw one longer than a listing page: listed at once, merged and
/// paired as the pages arrive, whole and in key ranges, on every backend.
async fn two_folders_paired_as_listed(store: Arc<dyn Store>) {
    use autotune::inventory::{self, Rules};
    use futures::StreamExt;
    const PAIRS: usize = 1050;
    let mut names: Vec<String> = Vec::new();
    for i in 0..PAIRS {
        names.push(format!("data/raw/s{i:04}.txt"));
        names.push(format!("data/labels/s{i:04}.json"));
    }
    names.push("data/raw/lonely.txt".to_owned());
    futures::stream::iter(&names)
        .map(|n| {
            let store = store.clone();
            async move {
                let body = if n.starts_with("data/labels/") {
                    "\"a\""
                } else {
                    "q"
                };
                store.put(n, Bytes::from(body), PutMode::Overwrite).await
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    let rules = Rules::new(autotune_layout::Layout::new(
        "data/raw",
        "data/labels",
        "out",
        "meta",
    ));
    for splits in [vec![], vec!["s0300".to_owned(), "s0700".to_owned()]] {
        let inv = inventory::take_in_ranges(&*store, &rules, &splits, &mut |_| {})
            .await
            .unwrap();
        assert_eq!(inv.samples.len(), PAIRS, "{splits:?}");
        assert!(
            inv.samples
                .iter()
                .enumerate()
                .all(|(i, s)| s.key == format!("s{i:04}")
                    && s.raw.meta.key == format!("data/raw/s{i:04}.txt")
                    && s.label.meta.key == format!("data/labels/s{i:04}.json")),
            "{splits:?}"
        );
        assert_eq!((inv.unpaired_raw, inv.unpaired_labels), (1, 0));
        assert!(inv.groups_held <= 10, "{splits:?}: {}", inv.groups_held);
    }
}

macro_rules! conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn put_get_and_generations() {
                let (s, _g) = $make;
                super::put_get_and_generations(s).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn head() {
                let (s, _g) = $make;
                super::head(s).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn create_only() {
                let (s, _g) = $make;
                super::create_only(s).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn compare_and_swap() {
                let (s, _g) = $make;
                super::compare_and_swap(s).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn racing_creates_and_swaps() {
                let (s, _g) = $make;
                super::racing_creates_and_swaps(s).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn listing() {
                let (s, _g) = $make;
                super::listing(s).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn multipart() {
                let (s, _g) = $make;
                super::multipart(s).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn two_folders_paired_as_listed() {
                let (s, _g) = $make;
                super::two_folders_paired_as_listed(s).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn delete_and_bad_names() {
                let (s, _g) = $make;
                super::delete_and_bad_names(s).await
            }
        }
    };
}

fn memory() -> (Arc<dyn Store>, ()) {
    let name = uuid::Uuid::new_v4().to_string();
    (Arc::new(MemoryStore::named(&name)), ())
}

fn local() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path().to_str().unwrap()).unwrap();
    (Arc::new(store), dir)
}

fn gcs() -> (Arc<dyn Store>, support::FakeGcs) {
    let emulator = support::FakeGcs::start();
    let bucket = emulator.bucket();
    let store = GcsStore::with_emulator(&format!("{bucket}/root"), Some(&emulator.host)).unwrap();
    (Arc::new(store), emulator)
}

conformance!(memory_backend, memory());
conformance!(local_backend, local());
conformance!(gcs_backend, gcs());

/// A loopback server answering GETs with `answers` in turn (then 404), counting requests.
async fn scripted_server(
    answers: Vec<(u16, &'static str)>,
) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        let mut answers = answers.into_iter();
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 8192];
            let mut got = 0;
            while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                let n = sock.read(&mut buf[got..]).await.unwrap();
                if n == 0 {
                    break;
                }
                got += n;
            }
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (status, body) = answers.next().unwrap_or((404, "{}"));
            let reply = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(reply.as_bytes()).await;
        }
    });
    (host, count)
}

/// The default deadlines, and quick retries: one try and four retries, 10 ms apart and more.
fn quick_retries() -> Options {
    Options {
        retry: RetryConfig {
            min_delay: std::time::Duration::from_millis(10),
            max_delay: std::time::Duration::from_millis(200),
            max_retries: Some(4),
            deadline: None,
        },
        ..Options::default()
    }
}

#[tokio::test]
async fn gcs_retries_transient_failures_then_reports_the_last() {
    let page = r#"{"items":[{"name":"root/a.txt","size":"3","generation":"7"}]}"#;
    let (host, count) = scripted_server(vec![(503, "{}"), (429, "{}"), (200, page)]).await;
    let store = GcsStore::with_options("bucket/root", Some(&host), quick_retries()).unwrap();
    let listed: Vec<_> = store.list("").try_collect().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, "a.txt");
    assert_eq!(listed[0].generation, "7");
    assert_eq!(
        count.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "two retries"
    );

    let busy = r#"{"error":{"code":503,"message":"backend busy"}}"#;
    let (host, count) = scripted_server(vec![(503, busy); 10]).await;
    let store = GcsStore::with_options("bucket", Some(&host), quick_retries()).unwrap();
    let err = store.get("x.txt").await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Api { status: 503, message, .. } if message == "backend busy"),
        "{err}"
    );
    assert_eq!(
        count.load(std::sync::atomic::Ordering::SeqCst),
        5,
        "one try and four retries"
    );
}

/// What only a folder on disk can do to its reader: links, FIFOs, `..`, a full disk. The local
/// backend never opens or lists anything outside its root, never blocks on opening, and leaves
/// no temporary file behind on any failure (issue 9, items 4, 5 and 8).
mod local_only {
    use super::*;

    /// An in-place edit that restores the old modification time is still a new version
    /// (issue 9 item 12): the change time is part of the generation.
    #[tokio::test]
    async fn an_edit_that_restores_the_mtime_is_a_new_generation() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().to_str().unwrap()).unwrap();
        store
            .put("a/x.txt", Bytes::from("first"), PutMode::Overwrite)
            .await
            .unwrap();
        let path = dir.path().join("a/x.txt");
        let before = store.get("a/x.txt").await.unwrap().generation;
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, "other").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
        let after = store.get("a/x.txt").await.unwrap().generation;
        assert_ne!(before, after, "same size, same mtime, new content");
    }
    use std::os::unix::fs::symlink;
    use std::path::Path;
    use std::time::Duration;

    /// A bucket folder beside a folder outside it, holding a secret.
    fn bucket_and_outside() -> (tempfile::TempDir, std::path::PathBuf, LocalStore) {
        let parent = tempfile::tempdir().unwrap();
        let bucket = parent.path().join("bucket");
        let outside = parent.path().join("outside");
        std::fs::create_dir_all(&bucket).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret.txt"), "SECRET").unwrap();
        let store = LocalStore::new(bucket.to_str().unwrap()).unwrap();
        (parent, bucket, store)
    }

    async fn list(store: &LocalStore, prefix: &str) -> Vec<Result<String, StoreError>> {
        use futures::StreamExt;
        store.list(prefix).map(|r| r.map(|m| m.key)).collect().await
    }

    fn not_regular(err: &StoreError, object: &str) {
        assert!(
            matches!(err, StoreError::NotARegularFile { .. }),
            "not_a_regular_file expected: {err}"
        );
        assert!(err.to_string().contains(object), "names {object}: {err}");
    }

    #[tokio::test]
    async fn a_file_swapped_for_a_symlink_after_listing_is_not_followed() {
        let (parent, bucket, store) = bucket_and_outside();
        store
            .put("raw/a.txt", Bytes::from("mine"), PutMode::Overwrite)
            .await
            .unwrap();
        let listed = list(&store, "raw/").await;
        assert_eq!(listed.len(), 1);
        std::fs::remove_file(bucket.join("raw/a.txt")).unwrap();
        symlink(
            parent.path().join("outside/secret.txt"),
            bucket.join("raw/a.txt"),
        )
        .unwrap();
        let err = store.get("raw/a.txt").await.unwrap_err();
        not_regular(&err, "raw/a.txt");
        // A relative link inside the bucket is not followed either.
        std::fs::remove_file(bucket.join("raw/a.txt")).unwrap();
        std::fs::write(bucket.join("raw/b.txt"), "b").unwrap();
        symlink("b.txt", bucket.join("raw/a.txt")).unwrap();
        not_regular(&store.get("raw/a.txt").await.unwrap_err(), "raw/a.txt");
        // A link in the listing is reported as unusable, never as an object.
        let listed = list(&store, "raw/").await;
        assert_eq!(listed.len(), 2, "{listed:?}");
        not_regular(listed[0].as_ref().unwrap_err(), "raw/a.txt");
        assert_eq!(listed[1].as_ref().unwrap(), "raw/b.txt");
    }

    #[tokio::test]
    async fn a_symlinked_folder_is_neither_listed_nor_read() {
        let (parent, bucket, store) = bucket_and_outside();
        symlink(parent.path().join("outside"), bucket.join("raw")).unwrap();
        let listed = list(&store, "raw/").await;
        assert_eq!(listed.len(), 1, "one error, no objects: {listed:?}");
        let err = listed[0].as_ref().unwrap_err();
        assert!(err.to_string().contains("raw"), "names the folder: {err}");
        assert!(err.to_string().contains("symbolic link"), "says why: {err}");
        not_regular(
            &store.get("raw/secret.txt").await.unwrap_err(),
            "raw/secret.txt",
        );
        // Listing the whole bucket reports the link and does not descend into it.
        let all = list(&store, "").await;
        assert_eq!(all.len(), 1, "{all:?}");
        not_regular(all[0].as_ref().unwrap_err(), "raw");
        // Writing through the link is refused too: nothing lands outside.
        let err = store
            .put("raw/new.txt", Bytes::from("x"), PutMode::Overwrite)
            .await
            .unwrap_err();
        not_regular(&err, "raw/new.txt");
        assert!(!parent.path().join("outside/new.txt").exists());
        assert!(store.delete("raw/secret.txt").await.is_err());
        assert!(parent.path().join("outside/secret.txt").exists());
    }

    #[tokio::test]
    async fn dot_dot_prefixes_and_keys_are_refused() {
        let (_parent, _bucket, store) = bucket_and_outside();
        for prefix in [
            "../",
            "../outside/",
            "a/../../outside/",
            "/etc/",
            "..",
            "a//b/",
        ] {
            let listed = list(&store, prefix).await;
            assert_eq!(listed.len(), 1, "{prefix:?}: {listed:?}");
            let err = listed[0].as_ref().unwrap_err();
            assert!(
                matches!(err, StoreError::InvalidKey { .. }),
                "{prefix:?}: {err}"
            );
        }
        for key in [
            "../outside/secret.txt",
            "/etc/passwd",
            "a/../../outside/secret.txt",
        ] {
            let err = store.get(key).await.unwrap_err();
            assert!(matches!(err, StoreError::InvalidKey { .. }), "{key}: {err}");
        }
    }

    /// Opens a FIFO for writing, which releases a reader blocked in `open`, so that a test of
    /// today's code fails instead of hanging.
    fn unblock(fifo: &Path) {
        let _ = std::fs::OpenOptions::new().write(true).open(fifo);
    }

    fn mkfifo(path: &Path) {
        let ok = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mkfifo {}", path.display());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fifo_is_never_opened_for_reading_nor_listed_as_an_object() {
        let (_parent, bucket, store) = bucket_and_outside();
        store
            .put("raw/f.txt", Bytes::from("x"), PutMode::Overwrite)
            .await
            .unwrap();
        assert_eq!(list(&store, "raw/").await.len(), 1);
        let fifo = bucket.join("raw/f.txt");
        std::fs::remove_file(&fifo).unwrap();
        mkfifo(&fifo);
        let got = tokio::time::timeout(Duration::from_secs(5), store.get("raw/f.txt")).await;
        let Ok(got) = got else {
            unblock(&fifo);
            panic!("opening a FIFO blocked the read");
        };
        let err = got.unwrap_err();
        not_regular(&err, "raw/f.txt");
        assert!(err.to_string().contains("FIFO"), "says what it is: {err}");
        let listed = list(&store, "raw/").await;
        assert_eq!(listed.len(), 1, "{listed:?}");
        not_regular(listed[0].as_ref().unwrap_err(), "raw/f.txt");
    }

    /// Files whose names mark them as temporary uploads.
    fn temporaries(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in walkdir(dir) {
            let name = e.file_name().unwrap().to_string_lossy().into_owned();
            if name.contains(".autotune-tmp-") {
                out.push(e.display().to_string());
            }
        }
        out
    }

    fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walkdir(&p));
            } else {
                out.push(p);
            }
        }
        out
    }

    /// A tmpfs of `size` mounted on a fresh folder, unmounted on drop; `None` where mounting is
    /// not allowed (not root).
    struct Tmpfs(tempfile::TempDir);

    impl Tmpfs {
        fn mount(size: &str) -> Option<Self> {
            let dir = tempfile::tempdir().unwrap();
            let ok = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            ok.then_some(Self(dir))
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(self.0.path())
                .status();
        }
    }

    #[tokio::test]
    async fn a_full_disk_leaves_no_temporary_file() {
        let Some(fs) = Tmpfs::mount("64k") else {
            eprintln!("skipped: mounting a tmpfs needs root");
            return;
        };
        let store = LocalStore::new(fs.0.path().to_str().unwrap()).unwrap();
        // The upload buffers 1 MiB: the disk fills when the buffer is flushed by complete.
        let mut up = store.put_multipart("out/train.jsonl").await.unwrap();
        up.put_part(Bytes::from(vec![b'x'; 200 * 1024]))
            .await
            .unwrap();
        let err = up.complete().await.unwrap_err();
        assert!(err.to_string().contains("out/train.jsonl"), "{err}");
        assert!(
            temporaries(fs.0.path()).is_empty(),
            "{:?}",
            temporaries(fs.0.path())
        );
        // Parts past the buffer fail in put_part; dropping the upload cleans up.
        let mut up = store.put_multipart("out/train.jsonl").await.unwrap();
        let mut failed = false;
        for _ in 0..8 {
            if up
                .put_part(Bytes::from(vec![b'x'; 512 * 1024]))
                .await
                .is_err()
            {
                failed = true;
                break;
            }
        }
        assert!(failed, "a 64 KiB disk takes 4 MiB");
        drop(up);
        assert!(
            temporaries(fs.0.path()).is_empty(),
            "{:?}",
            temporaries(fs.0.path())
        );
        // A small put that does not fit fails the same way.
        let err = store
            .put(
                "out/x",
                Bytes::from(vec![0; 128 * 1024]),
                PutMode::Overwrite,
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("out/x"), "{err}");
        assert!(temporaries(fs.0.path()).is_empty());
        assert!(list(&store, "").await.is_empty());
    }

    #[tokio::test]
    async fn a_failed_publish_leaves_no_temporary_file() {
        let (_parent, bucket, store) = bucket_and_outside();
        let mut up = store.put_multipart("out/train.jsonl").await.unwrap();
        up.put_part(Bytes::from("line\n")).await.unwrap();
        // A folder where the file should go: the rename fails.
        std::fs::create_dir_all(bucket.join("out/train.jsonl/x")).unwrap();
        assert!(up.complete().await.is_err());
        assert!(
            temporaries(&bucket).is_empty(),
            "{:?}",
            temporaries(&bucket)
        );
    }

    #[tokio::test]
    async fn temporaries_of_a_killed_writer_are_removed_by_clean_up() {
        let (_parent, bucket, store) = bucket_and_outside();
        std::fs::create_dir_all(bucket.join("out/run1")).unwrap();
        let stale = bucket.join("out/run1/.train.jsonl.autotune-tmp-0123456789abcdef");
        std::fs::write(&stale, "half a file").unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(old)
            .unwrap();
        // A live upload's temporary file (locked by its writer) stays, even when old.
        let mut live = store.put_multipart("out/run2/train.jsonl").await.unwrap();
        live.put_part(Bytes::from("x")).await.unwrap();
        let live_tmp = temporaries(&bucket.join("out/run2"));
        assert_eq!(live_tmp.len(), 1);
        std::fs::File::options()
            .write(true)
            .open(&live_tmp[0])
            .unwrap()
            .set_modified(old)
            .unwrap();
        // A fresh one (its writer may be between creating and locking it) stays too.
        let fresh = bucket.join("out/.x.autotune-tmp-fedcba9876543210");
        std::fs::write(&fresh, "new").unwrap();
        // Someone else's file that only looks similar stays.
        std::fs::write(bucket.join("out/run1/notes.txt"), "keep").unwrap();
        let removed = store.clean_up("out/").await.unwrap();
        assert_eq!(removed, 1);
        assert!(!stale.exists());
        assert!(fresh.exists());
        assert!(bucket.join("out/run1/notes.txt").exists());
        assert_eq!(temporaries(&bucket.join("out/run2")), live_tmp);
        live.complete().await.unwrap();
        assert_eq!(read(&store, "out/run2/train.jsonl").await, b"x");
    }
}

/// A loopback endpoint that accepts connections and never answers: a frozen storage server.
struct Frozen {
    host: String,
}

impl Frozen {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in listener.incoming() {
                held.push(s);
            }
        });
        Self { host }
    }
}

/// Issue 9 item 6: with the storage endpoint frozen, every operation fails within its deadline
/// (the default one: 60 s per attempt, retries within 2 minutes), naming the operation and the
/// object, instead of hanging. On a paused clock: the endpoint never answers, so the clock only
/// jumps from one deadline to the next.
#[tokio::test(start_paused = true)]
async fn a_frozen_endpoint_fails_within_the_deadline() {
    let frozen = Frozen::start();
    let store = GcsStore::with_emulator("bucket/root", Some(&frozen.host)).unwrap();
    let limit = std::time::Duration::from_secs(60 + 120 + 60);
    let started = tokio::time::Instant::now();
    let err = tokio::time::timeout(limit, store.get("x.txt"))
        .await
        .expect("the read gives up within its deadline")
        .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("gs://bucket/root/x.txt"), "{message}");
    assert!(message.contains("read"), "names the operation: {message}");
    assert!(message.contains("no answer within 1m"), "{message}");
    assert!(
        started.elapsed() <= std::time::Duration::from_secs(60 + 120),
        "{:?}",
        started.elapsed()
    );

    let started = tokio::time::Instant::now();
    let err = tokio::time::timeout(limit, store.list("raw/").try_collect::<Vec<_>>())
        .await
        .expect("the listing gives up within its deadline")
        .unwrap_err();
    assert!(err.to_string().contains("gs://bucket/root/raw/"), "{err}");
    assert!(err.to_string().contains("list"), "{err}");
    assert!(started.elapsed() <= std::time::Duration::from_secs(60 + 120));

    let err = tokio::time::timeout(
        limit,
        store.put("lock.json", Bytes::from("{}"), PutMode::Create),
    )
    .await
    .expect("the write gives up within its deadline")
    .unwrap_err();
    assert!(
        err.to_string().contains("gs://bucket/root/lock.json"),
        "{err}"
    );
    assert!(err.to_string().contains("write"), "{err}");

    let mut up = store.put_multipart("out/big.jsonl").await.unwrap();
    let err = tokio::time::timeout(limit, async {
        up.put_part(Bytes::from(vec![7u8; 9 << 20])).await?;
        up.complete().await
    })
    .await
    .expect("the upload gives up within its deadline")
    .unwrap_err();
    assert!(
        err.to_string().contains("gs://bucket/root/out/big.jsonl"),
        "{err}"
    );
}

const MIB: usize = 1 << 20;

/// Deterministic bytes that differ at every offset that matters.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i >> 16) as u8)
        .collect()
}

/// Streams `data` through a resumable upload in uneven parts and returns what the store said.
async fn upload(
    store: &GcsStore,
    key: &str,
    data: &[u8],
) -> Result<storage::ObjectMeta, StoreError> {
    let mut up = store.put_multipart(key).await?;
    for part in data.chunks(3 * MIB + 17) {
        up.put_part(Bytes::copy_from_slice(part)).await?;
    }
    up.complete().await
}

fn scripted() -> (support::scripted_gcs::ScriptedGcs, GcsStore) {
    let fake = support::scripted_gcs::ScriptedGcs::start();
    let store = GcsStore::with_options("bucket", Some(&fake.host), quick_retries()).unwrap();
    (fake, store)
}

/// Issue 10 item 3: a 308 whose `Range` says only half the chunk was persisted; the upload
/// resumes from there.
#[tokio::test]
async fn a_resumable_upload_resumes_from_the_persisted_offset() {
    use support::scripted_gcs::ChunkFault;
    let (fake, store) = scripted();
    fake.fail_chunks([
        ChunkFault::PersistOnly(4 * MIB),
        ChunkFault::Pass,
        ChunkFault::PersistOnly(MIB / 4),
    ]);
    let data = pattern(20 * MIB + 12345);
    let meta = upload(&store, "out/half.jsonl", &data).await.unwrap();
    assert_eq!(meta.size, data.len() as u64);
    assert!(
        fake.object("out/half.jsonl").unwrap() == data,
        "byte-identical"
    );
    assert_eq!(fake.violations(), Vec::<String>::new());
}

/// Issue 10 item 3: the connection drops in the middle of a chunk; the uploader asks the
/// session how far it got and sends the rest.
#[tokio::test]
async fn a_resumable_upload_survives_a_connection_dropped_mid_chunk() {
    use support::scripted_gcs::ChunkFault;
    let (fake, store) = scripted();
    fake.fail_chunks([
        ChunkFault::Pass,
        ChunkFault::DropAfter(3 * MIB + 1000),
        ChunkFault::DropAfter(100),
    ]);
    let data = pattern(19 * MIB + 1);
    let meta = upload(&store, "out/dropped.jsonl", &data).await.unwrap();
    assert_eq!(meta.size, data.len() as u64);
    assert!(
        fake.object("out/dropped.jsonl").unwrap() == data,
        "byte-identical"
    );
    assert_eq!(fake.violations(), Vec::<String>::new());
    let (_, status_queries, _) = fake.counts();
    assert!(
        status_queries >= 2,
        "the session is asked after each drop: {status_queries}"
    );
}

/// Issue 10 item 3: bursts of 503 on the session start, on chunks and on the last chunk
/// (one of them after the chunk was persisted), then success.
#[tokio::test]
async fn a_resumable_upload_retries_503_bursts() {
    use support::scripted_gcs::{ChunkFault, WriteFault};
    let (fake, store) = scripted();
    fake.fail_writes([WriteFault::Status(503), WriteFault::Status(429)]);
    fake.fail_chunks([
        ChunkFault::Status(503),
        ChunkFault::Status(503),
        ChunkFault::Pass,
        ChunkFault::PersistThen(503),
        ChunkFault::Status(500),
        ChunkFault::PersistThen(503),
    ]);
    let data = pattern(17 * MIB + 3);
    let meta = upload(&store, "out/bursts.jsonl", &data).await.unwrap();
    assert_eq!(meta.size, data.len() as u64);
    assert!(
        fake.object("out/bursts.jsonl").unwrap() == data,
        "byte-identical"
    );
    assert_eq!(fake.violations(), Vec::<String>::new());
}

/// Issue 10 item 3: single-request writes are retried on 429 and 5xx; a create-only write
/// whose first answer was lost after it took effect still succeeds once, and a real conflict
/// is still refused.
#[tokio::test]
async fn single_request_writes_are_retried_and_stay_create_only() {
    use support::scripted_gcs::WriteFault;
    let (fake, store) = scripted();
    fake.fail_writes([WriteFault::Status(503), WriteFault::Status(429)]);
    let meta = store
        .put("lock.json", Bytes::from("mine"), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(fake.object("lock.json").unwrap(), "mine");
    let err = store
        .put("lock.json", Bytes::from("theirs"), PutMode::Create)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err}");

    fake.fail_writes([WriteFault::StoreThen(503)]);
    let swapped = store
        .put(
            "lock.json",
            Bytes::from("renewed"),
            PutMode::Update(meta.generation.clone()),
        )
        .await
        .expect("the swap that took effect is recognised as ours");
    assert_eq!(fake.object("lock.json").unwrap(), "renewed");
    assert_ne!(swapped.generation, meta.generation);

    fake.fail_writes([WriteFault::StoreThen(500)]);
    store
        .put("other.json", Bytes::from("x"), PutMode::Create)
        .await
        .expect("the create that took effect is recognised as ours");
    assert_eq!(fake.violations(), Vec::<String>::new());
}

/// Storage takes its tokens as Vertex AI does: here from a metadata server at a given host (as
/// `GCE_METADATA_HOST` names one), and every storage request carries one (the fake refuses the
/// others).
#[tokio::test]
async fn storage_takes_tokens_from_gce_metadata_host() {
    use autotune::client::Credentials;
    use autotune::storage::gcs::Config;
    let fake = support::scripted_gcs::ScriptedGcs::start();
    fake.require_tokens();
    let credentials = Credentials::metadata_server(&fake.host);
    let config = Config::with_credentials(
        &format!("http://{}", fake.host),
        Arc::new(credentials),
        quick_retries(),
    );
    let store = GcsStore::open("bucket", config).unwrap();
    store
        .put("a.json", Bytes::from("{}"), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(read(&store, "a.json").await, b"{}");
    assert_eq!(fake.metadata_tokens(), 1, "one token, cached");
    assert_eq!(fake.unauthorised(), 0);
}

/// Issue 9 item 6 at process level: `autotune run` against a frozen storage endpoint ends with
/// a `failed` outcome naming the operation and the object, after HTTP_TIMEOUT per attempt and
/// HTTP_RETRIES retries with back-off (here at most 3 × 1 s + 1–2 s + 2–4 s), not never.
#[test]
fn a_run_against_a_frozen_storage_endpoint_fails_in_bounded_time() {
    let frozen = Frozen::start();
    let started = std::time::Instant::now();
    let out = support::autotune()
        .arg("run")
        .env("BUCKET_NAME", "gs://frozen-bucket")
        .env("STORAGE_EMULATOR_HOST", &frozen.host)
        .env("HTTP_CONNECT_TIMEOUT", "1s")
        .env("HTTP_TIMEOUT", "1s")
        .env("HTTP_RETRIES", "2")
        .env("HTTP_RETRY_DEADLINE", "10s")
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcome["status"], "failed");
    let reason = outcome["reason"].as_str().unwrap();
    assert!(
        reason.contains("gs://frozen-bucket/trained_model/training.lock.json"),
        "{reason}"
    );
    assert!(reason.contains("read failed"), "{reason}");
    assert!(reason.contains("no answer within 1s"), "{reason}");
    assert!(reason.contains("gave up after 3 attempts"), "{reason}");
    assert!(
        elapsed >= std::time::Duration::from_secs(3),
        "three attempts of 1 s: {elapsed:?}"
    );
    assert!(elapsed < std::time::Duration::from_secs(60), "{elapsed:?}");

    let bad = support::autotune()
        .args(["run", "--bucket-name", "memory://x", "--http-timeout", "0s"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("HTTP_TIMEOUT"));
}

/// `GCE_METADATA_HOST` in the real environment reaches storage's credentials (Application
/// Default Credentials), in a child process since the environment is process-wide.
#[test]
fn storage_honours_gce_metadata_host_from_the_environment() {
    let fake = support::scripted_gcs::ScriptedGcs::start();
    fake.require_tokens();
    let home = tempfile::tempdir().unwrap();
    let mut c = std::process::Command::new(std::env::current_exe().unwrap());
    c.args([
        "--exact",
        "storage_conformance::child_writes_with_environment_credentials",
        "--ignored",
        "--nocapture",
    ]);
    for k in [
        "GOOGLE_APPLICATION_CREDENTIALS",
        "STORAGE_EMULATOR_HOST",
        "GOOGLE_CLOUD_QUOTA_PROJECT",
    ] {
        c.env_remove(k);
    }
    c.env("GCE_METADATA_HOST", &fake.host)
        .env("FAKE_GCS_URL", format!("http://{}", fake.host))
        .env("HOME", home.path());
    let out = c.output().unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fake.object("env.json").unwrap(), "{}");
    assert!(fake.metadata_tokens() >= 1);
    assert_eq!(fake.unauthorised(), 0);
}

#[tokio::test]
#[ignore = "run by storage_honours_gce_metadata_host_from_the_environment in a child process"]
async fn child_writes_with_environment_credentials() {
    let Ok(url) = std::env::var("FAKE_GCS_URL") else {
        eprintln!("FAKE_GCS_URL is unset: this test runs as a child of another");
        return;
    };
    // Cloud Storage as in production (credentials from the environment), at the fake's URL.
    let config = autotune::storage::gcs::Config {
        endpoint: url,
        ..autotune::storage::gcs::Config::google(quick_retries())
    };
    let store = GcsStore::open("bucket", config).unwrap();
    store
        .put("env.json", Bytes::from("{}"), PutMode::Overwrite)
        .await
        .unwrap();
}

/// A read whose connection breaks mid-body resumes where it stopped (`Range: bytes=N-`),
/// pinned to the generation it began with, and ends byte-identical.
#[tokio::test]
async fn a_read_that_breaks_mid_body_resumes_where_it_stopped() {
    use support::scripted_gcs::{Read, ReadFault};
    let (fake, store) = scripted();
    let data = pattern(3 * MIB + 5);
    let meta = store
        .put("big.bin", Bytes::from(data.clone()), PutMode::Overwrite)
        .await
        .unwrap();
    fake.fail_reads([ReadFault::DropAfter(MIB), ReadFault::DropAfter(100)]);
    assert!(read(&store, "big.bin").await == data, "byte-identical");
    // Three reads: the first, then two that ask for the rest of the same generation, each
    // from where the bytes stopped (at most 1 MiB, then at most 100 bytes more).
    let reads = fake.reads();
    assert_eq!(reads.len(), 3, "{reads:?}");
    assert_eq!(
        reads[0],
        Read {
            range: None,
            generation: None
        }
    );
    let mut last = 0;
    for (r, most) in reads[1..].iter().zip([MIB, MIB + 100]) {
        assert_eq!(
            r.generation.as_deref(),
            Some(meta.generation.as_str()),
            "{r:?}"
        );
        let from: usize = r
            .range
            .as_deref()
            .and_then(|x| x.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok())
            .unwrap_or_else(|| panic!("{r:?}"));
        assert!(from >= last && from <= most, "{reads:?}");
        last = from;
    }
    assert!(last > 0, "the read resumed past the start: {reads:?}");

    // The object replaced meanwhile: the read fails naming it, rather than splicing versions.
    fake.fail_reads([ReadFault::DropAfter(MIB)]);
    let got = store.get("big.bin").await.unwrap();
    fake.overwrite("big.bin", b"another version");
    let err = got
        .bytes_limited("gs://bucket/big.bin", u64::MAX)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("gs://bucket/big.bin"), "{err}");
    assert!(
        err.to_string().contains("changed while it was read"),
        "{err}"
    );
    assert_eq!(fake.violations(), Vec::<String>::new());
}

/// Issue 9 item 10: on Cloud Storage a lease's age is judged by the server's clock (the
/// object's `Last-Modified` against the answer's `Date`), so a run whose clock is ten minutes
/// ahead cannot take over a lease renewed a moment ago; where the store cannot tell (memory),
/// the local clock decides, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_age_is_judged_by_the_servers_clock() {
    use autotune::lease::{self, Status};
    // As a taker ten minutes ahead sees a lease renewed just now for five minutes: its
    // expires_at is five minutes in the taker's past.
    let now = chrono::Utc::now();
    let lease = serde_json::json!({
        "state": "held", "run_id": "victim", "owner": "elsewhere",
        "acquired_at": now - chrono::Duration::minutes(10),
        "expires_at": now - chrono::Duration::minutes(5),
        "duration_seconds": 300,
    });
    let body = Bytes::from(serde_json::to_vec(&lease).unwrap());
    let (gcs, _emulator) = gcs();
    let (mem, ()) = memory();
    for (store, live) in [(gcs, true), (mem, false)] {
        store
            .put("m/training.lock.json", body.clone(), PutMode::Overwrite)
            .await
            .unwrap();
        let status = lease::status(&*store, "m/training.lock.json")
            .await
            .unwrap();
        assert_eq!(
            matches!(status, Status::Live(_)),
            live,
            "{}: {status:?}",
            store.uri("")
        );
        let taken = lease::Lease::acquire(
            store.clone(),
            "m/training.lock.json",
            "skewed",
            "o",
            std::time::Duration::from_secs(300),
        )
        .await
        .unwrap();
        assert_eq!(
            matches!(taken, lease::Acquired::Held(_)),
            live,
            "{}: a live lease is never taken over",
            store.uri("")
        );
    }
}
