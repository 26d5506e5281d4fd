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

