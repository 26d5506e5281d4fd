//! The line store of incremental builds: every line a successful run converted, kept beside its
//! datasets (`model_lines_<run id>.bin.zst`, named by the run record's `lines_uri`) so that the
//! next run takes the lines of unchanged samples from it instead of reading their objects again.
//!
//! ```text
//!  zstd( "autotune-lines\x01" settings[32]
//!        { line_key[32] key_len:u32 key text_len:u32 text }*   in sample-key order )
//! ```
//! `settings` digests everything a line depends on besides its sample: the converter's
//! settings, MAX_TEXT_BYTES, PERSONAL_DATA and the converter's version; a store made under other settings is
//! not used at all. `line_key` digests the sample's content digest (from the baseline's
//! manifest: a sample whose raw and label generations are the manifest's has the content the
//! manifest names) with its object names and URIs, so a line is taken only for the very sample
//! and content it was made from. The store is read once, as one stream, alongside the build's
//! own walk in sample-key order (a merge join): memory stays flat in the number of samples.
//! A store that cannot be read, or is cut short, only costs reads: its samples are read again.
//! Stores of earlier versions (gzip, `.bin.gz`) are read as well ([`crate::compress`]).

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::compress;
use crate::convert::{Converter, Uris};
use crate::sample::Sample;
use crate::storage::{self, MultipartUpload, Store, StoreError};

/// The first bytes of a line store: the format's name and version.
const MAGIC: &[u8; 15] = b"autotune-lines\x01";
/// Compressed bytes buffered before a part is uploaded.
const PART: usize = 1 << 20;
/// A key or line longer than this is a damaged store.
const MAX_FIELD: u32 = 1 << 30;

/// The digest of everything a line depends on besides its sample (see the module docs).
pub(crate) fn settings_digest(
    converter: &Converter,
    max_text_bytes: u64,
    personal: crate::screen::Mode,
) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"autotune lines\0");
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(b"\0");
    // `Debug` spells out every setting of the converter and its parsed templates.
    h.update(format!("{converter:?}").as_bytes());
    h.update(max_text_bytes.to_be_bytes());
    // PERSONAL_DATA: a line redacted, or kept whole, under another mode is another line.
    h.update(personal.as_str().as_bytes());
    h.finalize().into()
}

/// The key of a sample's line: its content digest, object names and URIs.
pub(crate) fn line_key(sample: &Sample, uris: &Uris, content: &[u8; 32]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for part in [
        sample.key.as_bytes(),
        sample.raw.meta.key.as_bytes(),
        sample.label.meta.key.as_bytes(),
        uris.raw.as_bytes(),
        uris.label.as_bytes(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.update(sample.raw.meta.size.to_be_bytes());
    h.update(content);
    h.finalize().into()
}

/// A line store being written, streamed in compressed parts.
pub(crate) struct Writer {
    upload: Box<dyn MultipartUpload>,
    enc: compress::Encoder,
    pub lines: u64,
    pub uri: String,
}

impl Writer {
    pub(crate) async fn create(
        store: &dyn Store,
        key: &str,
        settings: &[u8; 32],
    ) -> Result<Self, StoreError> {
        let mut w = Self {
            upload: store.put_multipart(key).await?,
            enc: compress::encoder(Vec::with_capacity(PART)),
            lines: 0,
            uri: store.uri(key),
        };
        w.put(&[MAGIC, settings.as_slice()]).await?;
        Ok(w)
    }

    async fn put(&mut self, pieces: &[&[u8]]) -> Result<(), StoreError> {
        for p in pieces {
            self.enc.write_all(p).await.expect("writing to memory");
        }
        if self.enc.get_ref().len() >= PART {
            let chunk = std::mem::replace(self.enc.get_mut(), Vec::with_capacity(PART));
            self.upload.put_part(Bytes::from(chunk)).await?;
        }
        Ok(())
    }

    /// Adds a sample's line; lines are added in sample-key order.
    pub(crate) async fn add(
        &mut self,
        line_key: &[u8; 32],
        key: &str,
        text: &str,
    ) -> Result<(), StoreError> {
        let len = |s: &str| u32::try_from(s.len()).unwrap_or(u32::MAX).to_be_bytes();
        self.lines += 1;
        self.put(&[
            line_key,
            &len(key),
            key.as_bytes(),
            &len(text),
            text.as_bytes(),
        ])
        .await
    }

    /// Publishes the store.
    pub(crate) async fn finish(mut self) -> Result<String, StoreError> {
        self.enc.shutdown().await.expect("writing to memory");
        let rest = std::mem::take(self.enc.get_mut());
        if !rest.is_empty() {
            self.upload.put_part(Bytes::from(rest)).await?;
        }
        self.upload.complete().await?;
        Ok(self.uri)
    }
}

/// A length-prefixed UTF-8 field.
async fn read_field(input: &mut (dyn AsyncRead + Send + Unpin)) -> std::io::Result<String> {
    let n = input.read_u32().await?;
    if n > MAX_FIELD {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a field is too long",
        ));
    }
    let mut buf = vec![0u8; n as usize];
    input.read_exact(&mut buf).await?;
    String::from_utf8(buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// One stored line.
struct Entry {
    line_key: [u8; 32],
    key: String,
    text: String,
}

/// A previous run's line store, read as one stream in sample-key order.
pub(crate) struct Reader {
    input: Option<Box<dyn AsyncRead + Send + Unpin>>,
    pending: Option<Entry>,
    uri: String,
}

impl Reader {
    /// Opens the store at `key`; `None` (logged) when it is missing, unreadable or made under
    /// other settings.
    pub(crate) async fn open(store: &dyn Store, key: &str, settings: &[u8; 32]) -> Option<Self> {
        let uri = store.uri(key);
        let got = match store.get(key).await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(lines = %uri, error = %e, "the last run's lines cannot be read; every sample is read");
                return None;
            }
        };
        let mut input = match compress::decoder(storage::into_async_read(got.body)).await {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(lines = %uri, error = %e, "the last run's lines cannot be read; every sample is read");
                return None;
            }
        };
        let mut head = [0u8; MAGIC.len() + 32];
        if let Err(e) = input.read_exact(&mut head).await {
            tracing::warn!(lines = %uri, error = %e, "the last run's lines are damaged; every sample is read");
            return None;
        }
        if &head[..MAGIC.len()] != MAGIC || &head[MAGIC.len()..] != settings {
            tracing::info!(lines = %uri, "the conversion settings or the converter changed since the last run; every sample is converted again");
            return None;
        }
        Some(Self {
            input: Some(input),
            pending: None,
            uri,
        })
    }

    async fn next_entry(
        input: &mut (dyn AsyncRead + Send + Unpin),
    ) -> std::io::Result<Option<Entry>> {
        let mut line_key = [0u8; 32];
        match input.read_exact(&mut line_key).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let key = read_field(input).await?;
        let text = read_field(input).await?;
        Ok(Some(Entry {
            line_key,
            key,
            text,
        }))
    }

    /// The stored line of sample `key` if it was made under `line_key`. Called in sample-key
    /// order; entries of keys before `key` are skipped.
    pub(crate) async fn take(&mut self, key: &str, line_key: &[u8; 32]) -> Option<String> {
        loop {
            if self.pending.is_none() {
                let input = self.input.as_mut()?;
                match Self::next_entry(&mut **input).await {
                    Ok(Some(e)) => self.pending = Some(e),
                    Ok(None) => {
                        self.input = None;
                        return None;
                    }
                    Err(e) => {
                        tracing::warn!(lines = %self.uri, error = %e, "the last run's lines are cut short; the samples after are read");
                        self.input = None;
                        return None;
                    }
                }
            }
            let e = self.pending.as_ref()?;
            match e.key.as_str().cmp(key) {
                std::cmp::Ordering::Less => self.pending = None,
                std::cmp::Ordering::Greater => return None,
                std::cmp::Ordering::Equal => {
                    let e = self.pending.take()?;
                    return (e.line_key == *line_key).then_some(e.text);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStore;

    async fn written(store: &dyn Store, settings: &[u8; 32], entries: &[(&str, u8)]) {
        let mut w = Writer::create(store, "lines.bin.gz", settings)
            .await
            .unwrap();
        for (key, k) in entries {
            w.add(&[*k; 32], key, &format!("line of {key}"))
                .await
                .unwrap();
        }
        w.finish().await.unwrap();
    }

    #[tokio::test]
    async fn lines_are_found_by_key_in_order_and_only_for_their_content() {
        let store = MemoryStore::named(&uuid::Uuid::new_v4().to_string());
        let settings = [7; 32];
        written(&store, &settings, &[("a", 1), ("b", 2), ("c", 3), ("e", 5)]).await;
        let mut r = Reader::open(&store, "lines.bin.gz", &settings)
            .await
            .unwrap();
        assert_eq!(r.take("a", &[1; 32]).await.as_deref(), Some("line of a"));
        // `b` is skipped over; `c` with other content is no hit, and is used up.
        assert_eq!(r.take("c", &[9; 32]).await, None);
        assert_eq!(r.take("d", &[4; 32]).await, None, "absent");
        assert_eq!(r.take("e", &[5; 32]).await.as_deref(), Some("line of e"));
        assert_eq!(r.take("f", &[6; 32]).await, None, "past the end");
    }

    #[tokio::test]
    async fn a_store_made_under_other_settings_or_damaged_is_not_used() {
        let store = MemoryStore::named(&uuid::Uuid::new_v4().to_string());
        written(&store, &[1; 32], &[("a", 1)]).await;
        assert!(
            Reader::open(&store, "lines.bin.gz", &[2; 32])
                .await
                .is_none()
        );
        assert!(
            Reader::open(&store, "missing.bin.gz", &[1; 32])
                .await
                .is_none()
        );
        store
            .put(
                "lines.bin.gz",
                Bytes::from_static(b"not gzip"),
                storage::PutMode::Overwrite,
            )
            .await
            .unwrap();
        assert!(
            Reader::open(&store, "lines.bin.gz", &[1; 32])
                .await
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_store_is_zstd_and_a_gzip_store_of_an_earlier_version_still_serves() {
        let store = MemoryStore::named(&uuid::Uuid::new_v4().to_string());
        let settings = [7; 32];
        written(&store, &settings, &[("a", 1), ("b", 2)]).await;
        let bytes = storage::get_bytes(&store, "lines.bin.gz", u64::MAX)
            .await
            .unwrap();
        assert!(compress::is_zstd(&bytes), "new stores are zstd");

        // The same store as an earlier autotune wrote it: gzip.
        let gz = compress::as_gzip(&bytes).await;
        store
            .put("old.bin.gz", Bytes::from(gz), storage::PutMode::Overwrite)
            .await
            .unwrap();
        let mut r = Reader::open(&store, "old.bin.gz", &settings).await.unwrap();
        assert_eq!(r.take("b", &[2; 32]).await.as_deref(), Some("line of b"));
    }

    #[test]
    fn the_settings_digest_changes_with_every_conversion_setting() {
        let base = Converter::default();
        let d = |c: &Converter, max: u64| settings_digest(c, max, crate::screen::Mode::Redact);
        let mut prompt = base.clone();
        prompt.prompt = Some("Q:".into());
        let mut field = base.clone();
        field.label_field = Some("/answer".into());
        let all = [
            d(&base, 100),
            d(&base, 101),
            d(&prompt, 100),
            d(&field, 100),
            settings_digest(&base, 100, crate::screen::Mode::Reject),
            settings_digest(&base, 100, crate::screen::Mode::Off),
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(d(&base, 100), d(&Converter::default(), 100));
    }
}
