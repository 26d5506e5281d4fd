//! The resumable upload session (Google's protocol,
//! <https://cloud.google.com/storage/docs/performing-resumable-uploads>): the session's start,
//! the chunks (`Content-Range: bytes A-B/*`, the last one `A-B/TOTAL`), the `308` answers whose
//! `Range: bytes=0-N` says how much is persisted, the status query (`bytes */*` or
//! `bytes */TOTAL`) after a failed or interrupted chunk, and the answer that completes the
//! object.

use async_trait::async_trait;
use bytes::{Buf, Bytes, BytesMut};
use reqwest::Method;
use reqwest::header::CONTENT_RANGE;

use super::{GcsStore, content_type, failure};
use crate::client::retry::{Backoff, Failed, Idempotency, retryable};
use crate::client::{Answer, Client, Error};
use crate::storage::{MultipartUpload, ObjectMeta, PutMode, Store, StoreError};

/// Resumable chunks must be multiples of 256 KiB.
pub(super) const CHUNK: usize = 32 * 256 * 1024;

/// The bookkeeping of a resumable upload, without any I/O. `buf` holds every byte the server
/// has not acknowledged, from offset `acked` on: what a failed chunk needs to be sent again, and
/// what has not been sent yet.
#[derive(Debug, Default)]
struct Unacked {
    buf: BytesMut,
    acked: u64,
}

/// The next chunk to send: its `Content-Range`, its bytes, and the offset just past them.
#[derive(Debug)]
struct Chunk {
    range: String,
    data: Bytes,
    end: u64,
}

/// What a session's answer says, before the object of a completed upload is read from it.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// This many bytes are persisted.
    Persisted(u64),
    /// The object is complete (`200` or `201` to the last chunk or a status query of it).
    Complete,
}

/// An answer the protocol does not allow at this point: the status it came with, and why.
#[derive(Debug, PartialEq, Eq)]
struct Refused {
    status: u16,
    message: String,
}

impl Refused {
    fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

/// The `Content-Range` of a status query: `bytes */TOTAL`, or `bytes */*` while the size is
/// unknown.
fn status_query(total: Option<u64>) -> String {
    total.map_or_else(|| "bytes */*".to_owned(), |t| format!("bytes */{t}"))
}

/// Reads a session's answer (`status` and its `Range` header) to a chunk or a status query:
/// `308` with the persisted range (none: nothing persisted), or the finished object, which only
/// an upload whose size is known (`total`) can have.
fn reply(status: u16, range: Option<&str>, total: Option<u64>) -> Result<Reply, Refused> {
    match status {
        200 | 201 if total.is_some() => Ok(Reply::Complete),
        308 => {
            let Some(range) = range else {
                return Ok(Reply::Persisted(0));
            };
            let end = range
                .strip_prefix("bytes=0-")
                .and_then(|n| n.trim().parse::<u64>().ok())
                .ok_or_else(|| Refused::new(308, format!("unreadable Range header {range:?}")))?;
            Ok(Reply::Persisted(end + 1))
        }
        status => Err(Refused::new(
            status,
            "unexpected answer to a resumable upload chunk",
        )),
    }
}

impl Unacked {
    /// The first `len` unacknowledged bytes (at most what is buffered) as a chunk, the last one
    /// of the object when `total` is given; `None` when there is nothing to send.
    fn chunk(&self, len: usize, total: Option<u64>) -> Option<Chunk> {
        let len = len.min(self.buf.len());
        if len == 0 {
            return None;
        }
        let end = self.acked + len as u64;
        let range = match total {
            Some(t) => format!("bytes {}-{}/{t}", self.acked, end - 1),
            None => format!("bytes {}-{}/*", self.acked, end - 1),
        };
        Some(Chunk {
            range,
            data: Bytes::copy_from_slice(&self.buf[..len]),
            end,
        })
    }

    /// Takes the server's word for how much it has: drops the acknowledged bytes from the
    /// buffer, and says whether that is progress. It may not go back, nor beyond what was sent
    /// (`sent_end`).
    fn advance(&mut self, persisted: u64, sent_end: u64) -> Result<bool, Refused> {
        if persisted < self.acked || persisted > sent_end {
            return Err(Refused::new(
                308,
                format!(
                    "the upload session reports {persisted} bytes persisted, outside the {}..={sent_end} it can have",
                    self.acked
                ),
            ));
        }
        let progress = persisted > self.acked;
        self.buf.advance((persisted - self.acked) as usize);
        self.acked = persisted;
        Ok(progress)
    }
}

/// A resumable upload: a session, driven over HTTP by what [`Unacked`] says to send.
pub(super) struct ResumableUpload {
    store: GcsStore,
    key: String,
    uri: String,
    session: Option<String>,
    unacked: Unacked,
}

/// What a session says about itself.
enum SessionState {
    /// This many bytes are persisted.
    Persisted(u64),
    /// The object is complete.
    Done(ObjectMeta),
}

impl ResumableUpload {
    pub(super) fn new(store: GcsStore, key: &str) -> Self {
        Self {
            uri: store.uri(key),
            store,
            key: key.to_owned(),
            session: None,
            unacked: Unacked {
                buf: BytesMut::with_capacity(CHUNK),
                acked: 0,
            },
        }
    }

    fn client(&self) -> &Client {
        self.store.client()
    }

    fn api_error(&self, status: u16, message: String) -> StoreError {
        StoreError::Api {
            uri: self.uri.clone(),
            status,
            message,
        }
    }

    fn refused(&self, r: Refused) -> StoreError {
        self.api_error(r.status, r.message)
    }

    async fn session(&mut self) -> Result<String, StoreError> {
        if let Some(s) = &self.session {
            return Ok(s.clone());
        }
        let meta = serde_json::json!({
            "name": self.store.name(&self.key),
            "contentType": content_type(&self.key),
        });
        let url = self.store.upload_url();
        let answer = self
            .store
            .send("start upload", &self.uri, || {
                self.client()
                    .request(Method::POST, &url)
                    .query(&[("uploadType", "resumable")])
                    .json(&meta)
            })
            .await?;
        let location = answer
            .header("location")
            .ok_or_else(|| {
                self.api_error(
                    answer.status.as_u16(),
                    "resumable upload started without a Location header".to_owned(),
                )
            })?
            .to_owned();
        self.session = Some(location.clone());
        Ok(location)
    }

    /// Reads a session's answer: `308` with the persisted range, or the finished object.
    fn state_of(&self, answer: &Answer, total: Option<u64>) -> Result<SessionState, StoreError> {
        match reply(answer.status.as_u16(), answer.header("range"), total)
            .map_err(|r| self.refused(r))?
        {
            Reply::Complete => Ok(SessionState::Done(
                self.store.parse_object(answer, &self.uri)?,
            )),
            Reply::Persisted(n) => Ok(SessionState::Persisted(n)),
        }
    }

    /// Takes the server's word for how much it has ([`Unacked::advance`]).
    fn advance(&mut self, persisted: u64, sent_end: u64) -> Result<bool, StoreError> {
        self.unacked
            .advance(persisted, sent_end)
            .map_err(|r| self.refused(r))
    }

    /// The error of a chunk that failed for good. A 404 or 410 means the session is gone
    /// (expired after a week, or cancelled), not the object.
    fn chunk_failure(&self, error: Error, attempts: usize, backoff: &Backoff) -> StoreError {
        if let Some(status @ (404 | 410)) = error.status() {
            return self.api_error(
                status,
                "the resumable upload session no longer exists (expired or cancelled)".to_owned(),
            );
        }
        failure(
            "upload",
            &self.uri,
            Failed {
                error,
                attempts,
                elapsed: backoff.elapsed(),
            },
            None,
        )
    }

    /// Asks the session how far it got (`bytes */TOTAL`, or `*/*` while the size is unknown).
    async fn query(&self, session: &str, total: Option<u64>) -> Result<SessionState, StoreError> {
        let range = status_query(total);
        let answer = self
            .store
            .send("upload (status query)", &self.uri, || {
                self.client()
                    .request(Method::PUT, session)
                    .header(CONTENT_RANGE, &range)
                    .body(Bytes::new())
            })
            .await
            .map_err(|e| match e {
                StoreError::NotFound { uri } => StoreError::Api {
                    uri,
                    status: 404,
                    message: "the resumable upload session no longer exists (expired or cancelled)"
                        .to_owned(),
                },
                e => e,
            })?;
        self.state_of(&answer, total)
    }

    /// Sends the first `len` buffered bytes (the last chunk when `total` is given) until the
    /// server has persisted some of them. Failed or interrupted chunks are retried from the
    /// offset the session reports. Returns the object once the upload is complete.
    async fn push(
        &mut self,
        len: usize,
        total: Option<u64>,
    ) -> Result<Option<ObjectMeta>, StoreError> {
        let session = self.session().await?;
        let retry = self.client().options().retry;
        let mut backoff = retry.backoff();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let Some(Chunk { range, data, end }) = self.unacked.chunk(len, total) else {
                // Everything is persisted but the object was not reported: ask.
                let error = match self.query(&session, total).await? {
                    SessionState::Done(meta) => return Ok(Some(meta)),
                    SessionState::Persisted(n) => {
                        self.advance(n, self.unacked.acked)?;
                        self.api_error(
                            308,
                            "the upload session has every byte but does not complete".to_owned(),
                        )
                    }
                };
                // No progress without an error to retry by: bounded by the same policy.
                let Some(delay) = backoff.next_delay(None) else {
                    return Err(error);
                };
                tokio::time::sleep(delay).await;
                continue;
            };
            let rb = self
                .client()
                .request(Method::PUT, &session)
                .header(CONTENT_RANGE, range);
            let error = match self.client().upload(rb, data).await {
                Ok(answer) => match self.state_of(&answer, total)? {
                    SessionState::Done(meta) => return Ok(Some(meta)),
                    SessionState::Persisted(n) => {
                        if self.advance(n, end)? {
                            return Ok(None);
                        }
                        // A 308 that moved nothing: count it as a failed attempt.
                        self.api_error(
                            308,
                            "the upload session persisted nothing of the chunk".to_owned(),
                        )
                    }
                },
                Err(e) if retryable(&e, Idempotency::Idempotent) => {
                    let delay = backoff.next_delay(e.retry_after());
                    let Some(delay) = delay else {
                        return Err(self.chunk_failure(e, attempts, &backoff));
                    };
                    tracing::warn!(uri = %self.uri, error = %e, attempt = attempts, "an upload chunk failed; asking the session how far it got");
                    tokio::time::sleep(delay).await;
                    if matches!(e, Error::Connect { .. }) {
                        // It never reached the server: nothing to ask.
                        continue;
                    }
                    match self.query(&session, total).await? {
                        SessionState::Done(meta) => return Ok(Some(meta)),
                        SessionState::Persisted(n) => {
                            if self.advance(n, end)? {
                                return Ok(None);
                            }
                        }
                    }
                    continue;
                }
                Err(e) => return Err(self.chunk_failure(e, attempts, &backoff)),
            };
            // No progress without an error to retry by: bounded by the same policy.
            let Some(delay) = backoff.next_delay(None) else {
                return Err(error);
            };
            tokio::time::sleep(delay).await;
        }
    }
}

#[async_trait]
impl MultipartUpload for ResumableUpload {
    async fn put_part(&mut self, data: Bytes) -> Result<(), StoreError> {
        self.unacked.buf.extend_from_slice(&data);
        // Keep at least one byte back, so the final chunk is never empty: an empty final
        // chunk is a status query, which the emulator mishandles.
        while self.unacked.buf.len() > CHUNK {
            self.push(CHUNK, None).await?;
        }
        Ok(())
    }

    async fn complete(mut self: Box<Self>) -> Result<ObjectMeta, StoreError> {
        if self.session.is_none() {
            let data = std::mem::take(&mut self.unacked.buf).freeze();
            return self
                .store
                .multipart_put(&self.key, data, &PutMode::Overwrite)
                .await;
        }
        let total = self.unacked.acked + self.unacked.buf.len() as u64;
        loop {
            if let Some(meta) = self.push(self.unacked.buf.len(), Some(total)).await? {
                return Ok(meta);
            }
        }
    }

    async fn abort(self: Box<Self>) -> Result<(), StoreError> {
        if let Some(session) = &self.session {
            // GCS answers 499 to a cancelled session; nothing to check.
            let _ = self
                .client()
                .call(self.client().request(Method::DELETE, session))
                .await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::{Act, Fake, Request};
    use super::*;
    use crate::storage::Store;

    const UNIT: usize = 256 * 1024;

    fn unacked(data: &[u8], acked: u64) -> Unacked {
        Unacked {
            buf: BytesMut::from(data),
            acked,
        }
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn chunks_carry_their_content_range_and_status_queries_their_total() {
        let bytes = data(1000);
        let u = unacked(&bytes, 0);
        let c = u.chunk(600, None).unwrap();
        assert_eq!((c.range.as_str(), c.end), ("bytes 0-599/*", 600));
        assert_eq!(&c.data[..], &bytes[..600]);
        // The last chunk names the total; a length past the buffer is cut to it.
        let c = u.chunk(5000, Some(1000)).unwrap();
        assert_eq!((c.range.as_str(), c.end), ("bytes 0-999/1000", 1000));
        assert!(
            u.chunk(0, None).is_none(),
            "nothing to send: a status query"
        );
        assert!(unacked(&[], 7).chunk(10, Some(7)).is_none());
        assert_eq!(status_query(None), "bytes */*");
        assert_eq!(status_query(Some(1000)), "bytes */1000");
    }

    #[test]
    fn a_308_range_moves_the_next_chunk_past_it() {
        let bytes = data(1000);
        let mut u = unacked(&bytes, 0);
        let sent = u.chunk(600, None).unwrap();
        let persisted = reply(308, Some("bytes=0-299"), None).unwrap();
        assert_eq!(persisted, Reply::Persisted(300));
        assert!(u.advance(300, sent.end).unwrap(), "progress");
        let next = u.chunk(600, None).unwrap();
        assert_eq!(next.range, "bytes 300-899/*");
        assert_eq!(&next.data[..], &bytes[300..900], "from byte 300 on");
        // The whole of it acknowledged: the last chunk is what is left.
        assert!(u.advance(900, next.end).unwrap());
        let last = u.chunk(usize::MAX, Some(1000)).unwrap();
        assert_eq!(last.range, "bytes 900-999/1000");
        assert_eq!(&last.data[..], &bytes[900..]);
        // Spaces around the number are tolerated.
        assert_eq!(
            reply(308, Some("bytes=0- 41 "), Some(1000)),
            Ok(Reply::Persisted(42))
        );
    }

    #[test]
    fn a_308_without_range_means_nothing_is_persisted() {
        assert_eq!(reply(308, None, None), Ok(Reply::Persisted(0)));
        assert_eq!(reply(308, None, Some(10)), Ok(Reply::Persisted(0)));
        // Before anything was acknowledged: no progress, the same chunk goes again from 0.
        let bytes = data(100);
        let mut u = unacked(&bytes, 0);
        assert!(!u.advance(0, 100).unwrap());
        assert_eq!(u.chunk(100, None).unwrap().range, "bytes 0-99/*");
        // After bytes were acknowledged the server may not go back: refused, not resent.
        assert!(u.advance(50, 100).unwrap());
        let e = u.advance(0, 100).unwrap_err();
        assert_eq!(e.status, 308);
        assert!(e.message.contains("0 bytes persisted"), "{}", e.message);
        assert_eq!(u.acked, 50, "unchanged");
        assert_eq!(u.buf.len(), 50);
    }

    #[test]
    fn answers_outside_the_protocol_are_refused() {
        assert_eq!(reply(200, None, Some(5)), Ok(Reply::Complete));
        assert_eq!(reply(201, None, Some(5)), Ok(Reply::Complete));
        // Complete while the size is still unknown cannot be.
        let e = reply(200, None, None).unwrap_err();
        assert_eq!(e.status, 200);
        assert!(e.message.contains("unexpected answer"), "{}", e.message);
        assert_eq!(reply(204, None, Some(5)).unwrap_err().status, 204);
        for range in ["bytes=5-9", "bytes 0-9", "bytes=0-", "bytes=0-x"] {
            let e = reply(308, Some(range), None).unwrap_err();
            assert_eq!(e.status, 308);
            assert!(e.message.contains("unreadable Range"), "{range}: {e:?}");
        }
        // Beyond what was sent.
        let mut u = unacked(&data(100), 0);
        let e = u.advance(101, 100).unwrap_err();
        assert!(e.message.contains("outside the 0..=100"), "{}", e.message);
        assert_eq!((u.acked, u.buf.len()), (0, 100), "unchanged");
    }

    /// A session on a loopback fake: the start answers with the session's `Location`; every
    /// `PUT` (a chunk or a status query) takes the next of `answers`; a cancel answers 499.
    fn session(answers: Vec<Act>) -> Fake {
        let mut answers = std::collections::VecDeque::from(answers);
        Fake::start(move |r, base| match r.method.as_str() {
            "POST" => {
                assert_eq!(
                    r.target,
                    "/upload/storage/v1/b/bucket/o?uploadType=resumable"
                );
                Act::Answer(200, vec![("Location", format!("{base}/session/1"))], vec![])
            }
            "PUT" => answers
                .pop_front()
                .unwrap_or_else(|| Act::Answer(400, vec![], b"unscripted request".to_vec())),
            _ => Act::Answer(499, vec![], vec![]),
        })
    }

    fn persisted(n: usize) -> Act {
        Act::Answer(308, vec![("Range", format!("bytes=0-{}", n - 1))], vec![])
    }

    fn nothing_persisted() -> Act {
        Act::Answer(308, vec![], vec![])
    }

    fn object(size: usize) -> Act {
        let body = serde_json::json!({
            "name": "out/big.jsonl", "size": size.to_string(), "generation": "17",
            "crc32c": "AAAAAA==",
        });
        Act::Answer(200, vec![], body.to_string().into_bytes())
    }

    fn status(code: u16) -> Act {
        Act::Answer(code, vec![], vec![])
    }

    /// The `Content-Range` of every `PUT` to the session, and the bytes it carried.
    fn puts(fake: &Fake) -> Vec<(String, Vec<u8>)> {
        fake.requests()
            .into_iter()
            .filter(|r: &Request| r.method == "PUT")
            .map(|r| {
                assert_eq!(r.target, "/session/1");
                (r.header("content-range").unwrap_or("").to_owned(), r.body)
            })
            .collect()
    }

    fn ranges(puts: &[(String, Vec<u8>)]) -> Vec<&str> {
        puts.iter().map(|(r, _)| r.as_str()).collect()
    }

    /// Streams `bytes` (one part) through a resumable upload of `out/big.jsonl`.
    async fn upload(fake: &Fake, bytes: &[u8]) -> Result<ObjectMeta, StoreError> {
        let mut up = fake.store().put_multipart("out/big.jsonl").await?;
        up.put_part(Bytes::copy_from_slice(bytes)).await?;
        up.complete().await
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_308_makes_the_next_chunk_start_after_its_range() {
        let total = CHUNK + 100;
        let fake = session(vec![persisted(UNIT), object(total)]);
        let bytes = data(total);
        let meta = upload(&fake, &bytes).await.unwrap();
        assert_eq!(
            (meta.key.as_str(), meta.size),
            ("out/big.jsonl", total as u64)
        );
        assert_eq!(meta.generation, "17");
        let puts = puts(&fake);
        assert_eq!(
            ranges(&puts),
            [
                format!("bytes 0-{}/*", CHUNK - 1),
                format!("bytes {UNIT}-{}/{total}", total - 1)
            ]
        );
        assert!(puts[0].1 == bytes[..CHUNK], "the first chunk, whole");
        assert!(
            puts[1].1 == bytes[UNIT..],
            "the rest, from the byte after the Range"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_interrupted_chunk_resumes_from_what_the_session_reports() {
        let total = CHUNK + 100;
        let fake = session(vec![
            // The connection breaks mid-chunk; the session has four units of it.
            Act::HangUp,
            persisted(4 * UNIT),
            // The last chunk fails with a 503; its status query finds the object complete.
            status(503),
            object(total),
        ]);
        let bytes = data(total);
        let meta = upload(&fake, &bytes).await.unwrap();
        assert_eq!(meta.size, total as u64);
        let puts = puts(&fake);
        assert_eq!(
            ranges(&puts),
            [
                format!("bytes 0-{}/*", CHUNK - 1),
                "bytes */*".to_owned(),
                format!("bytes {}-{}/{total}", 4 * UNIT, total - 1),
                format!("bytes */{total}"),
            ]
        );
        assert!(
            puts[1].1.is_empty() && puts[3].1.is_empty(),
            "status queries are empty"
        );
        assert!(puts[2].1 == bytes[4 * UNIT..]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_status_query_without_range_resends_the_chunk_from_zero() {
        let total = CHUNK + 100;
        let fake = session(vec![
            status(503),
            nothing_persisted(),
            persisted(CHUNK),
            Act::Answer(
                201,
                vec![],
                b"{\"name\":\"out/big.jsonl\",\"size\":8388708}".to_vec(),
            ),
        ]);
        let bytes = data(total);
        let meta = upload(&fake, &bytes).await.unwrap();
        assert_eq!(meta.size, total as u64, "201 ends it too");
        let puts = puts(&fake);
        let first = format!("bytes 0-{}/*", CHUNK - 1);
        assert_eq!(
            ranges(&puts),
            [
                first.as_str(),
                "bytes */*",
                first.as_str(),
                &format!("bytes {CHUNK}-{}/{total}", total - 1),
            ]
        );
        assert!(puts[2].1 == bytes[..CHUNK], "the same chunk again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_308_that_persists_nothing_is_retried_within_the_policy() {
        let fake = session((0..10).map(|_| nothing_persisted()).collect());
        let e = upload(&fake, &data(CHUNK + 1)).await.unwrap_err();
        match &e {
            StoreError::Api {
                uri,
                status,
                message,
            } => {
                assert_eq!((uri.as_str(), *status), ("gs://bucket/out/big.jsonl", 308));
                assert!(message.contains("persisted nothing"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let puts = puts(&fake);
        assert_eq!(
            puts.len(),
            4,
            "one attempt and 3 retries: {:?}",
            ranges(&puts)
        );
        assert!(
            puts.iter()
                .all(|(r, _)| r == &format!("bytes 0-{}/*", CHUNK - 1))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_that_is_gone_fails_with_a_clear_error() {
        for code in [404, 410] {
            let fake = session(vec![status(code)]);
            let e = upload(&fake, &data(CHUNK + 1)).await.unwrap_err();
            match &e {
                StoreError::Api {
                    status, message, ..
                } => {
                    assert_eq!(*status, code);
                    assert!(message.contains("no longer exists"), "{message}");
                }
                other => panic!("{code}: {other:?}"),
            }
            assert_eq!(puts(&fake).len(), 1, "{code}: not retried");
        }
        // Gone when asked after a failed chunk.
        let fake = session(vec![status(503), status(404)]);
        let e = upload(&fake, &data(CHUNK + 1)).await.unwrap_err();
        match &e {
            StoreError::Api {
                status, message, ..
            } => {
                assert_eq!(*status, 404);
                assert!(message.contains("no longer exists"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(ranges(&puts(&fake))[1], "bytes */*");
    }

    #[tokio::test(start_paused = true)]
    async fn small_uploads_take_one_request_and_abort_cancels_a_session() {
        // Under a chunk: no session, one multipart write.
        let meta_body =
            serde_json::json!({"name": "out/big.jsonl", "size": "3", "generation": "1"});
        let fake_small = Fake::start(move |r, _| {
            assert!(r.target.contains("uploadType=multipart"), "{}", r.target);
            Act::Answer(200, vec![], meta_body.to_string().into_bytes())
        });
        let meta = upload(&fake_small, b"abc").await.unwrap();
        assert_eq!(meta.size, 3);
        assert_eq!(fake_small.requests().len(), 1);
        // Past a chunk: a session, which abort cancels.
        let fake_big = session(vec![persisted(CHUNK)]);
        let mut up = fake_big
            .store()
            .put_multipart("out/big.jsonl")
            .await
            .unwrap();
        up.put_part(Bytes::from(data(CHUNK + 1))).await.unwrap();
        up.abort().await.unwrap();
        let last = fake_big.requests().pop().unwrap();
        assert_eq!(
            (last.method.as_str(), last.target.as_str()),
            ("DELETE", "/session/1")
        );
    }
}
