//! One conformance suite, run against every storage backend: memory, local folder, and GCS
//! through a real fake-gcs-server on loopback.

mod support;

use std::sync::Arc;

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

#[tokio::test]
async fn gcs_retries_transient_failures_then_reports_the_last() {
    let page = r#"{"items":[{"name":"root/a.txt","size":"3","generation":"7"}]}"#;
    let (host, count) = scripted_server(vec![(503, "{}"), (429, "{}"), (200, page)]).await;
    let store = GcsStore::with_emulator("bucket/root", Some(&host)).unwrap();
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
    let store = GcsStore::with_emulator("bucket", Some(&host)).unwrap();
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
