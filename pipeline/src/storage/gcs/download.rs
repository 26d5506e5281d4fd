//! Media reads: a download that survives a broken connection by asking for the rest of the
//! same generation (`Range: bytes=N-`), with the client's back-off.

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use reqwest::Method;

use super::{GcsStore, failure};
use crate::client::Error;
use crate::client::retry::{self, Backoff, Failed, Idempotency, retryable};
use crate::storage::{ByteStream, GetResult, Store, StoreError, validate_key};

/// The age of a downloaded object by the server's clock: `Date` less `Last-Modified` (HTTP
/// dates, to the second). `None` when either header is missing or unreadable.
fn server_age(headers: &reqwest::header::HeaderMap) -> Option<std::time::Duration> {
    let at = |name: reqwest::header::HeaderName| {
        let v = headers.get(name)?.to_str().ok()?;
        chrono::DateTime::parse_from_rfc2822(v).ok()
    };
    let now = at(reqwest::header::DATE)?;
    let modified = at(reqwest::header::LAST_MODIFIED)?;
    (now - modified)
        .to_std()
        .ok()
        .or(Some(std::time::Duration::ZERO))
}

impl GcsStore {
    /// Opens a media read of `key`: its generation and size, and a body that resumes where a
    /// broken connection stopped.
    pub(super) async fn download(&self, key: &str) -> Result<GetResult, StoreError> {
        validate_key(key)?;
        let uri = self.uri(key);
        let url = self.object_url(key);
        let client = self.client();
        let download = retry::retry(
            &client.options().retry,
            &format!("read {uri}"),
            |e| retryable(e, Idempotency::Idempotent),
            || client.download(client.request(Method::GET, &url).query(&[("alt", "media")])),
        )
        .await
        .map_err(|f| failure("read", &uri, f, None))?;
        let age = server_age(&download.headers);
        let generation = download
            .headers
            .get("x-goog-generation")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // Without the headers, ask for the metadata; the body we stream is that version's
        // unless the object changed in between, which only the lock cares about and the lock's
        // compare-and-swap then catches.
        let (generation, size) = if let (Some(g), Some(s)) = (generation, download.content_length) {
            (g, s)
        } else {
            let m = self.head(key).await?;
            (m.generation, m.size)
        };
        let body = Resuming {
            store: self.clone(),
            uri,
            url,
            generation: generation.clone(),
            body: Some(download.body),
            received: 0,
            backoff: None,
            attempts: 0,
            done: false,
        }
        .into_stream();
        Ok(GetResult {
            generation,
            size,
            body,
            age,
        })
    }
}

/// A media download that survives a broken connection: it asks again for the rest
/// (`Range: bytes=N-`) of the same generation, with the client's back-off; the policy restarts
/// whenever bytes arrive. A generation that is gone (the object was replaced) ends the read
/// with an error rather than splicing two versions.
struct Resuming {
    store: GcsStore,
    uri: String,
    url: String,
    generation: String,
    body: Option<BoxStream<'static, Result<Bytes, Error>>>,
    received: u64,
    backoff: Option<Backoff>,
    attempts: usize,
    done: bool,
}

impl Resuming {
    fn into_stream(self) -> ByteStream {
        stream::unfold(self, |mut s| async move {
            if s.done {
                return None;
            }
            match s.next().await {
                Ok(Some(piece)) => Some((Ok(piece), s)),
                Ok(None) => None,
                Err(e) => {
                    s.done = true;
                    Some((Err(e), s))
                }
            }
        })
        .boxed()
    }

    async fn next(&mut self) -> Result<Option<Bytes>, StoreError> {
        loop {
            let error = match self.body.as_mut() {
                Some(body) => match body.next().await {
                    None => return Ok(None),
                    Some(Ok(piece)) => {
                        self.received += piece.len() as u64;
                        self.backoff = None;
                        self.attempts = 0;
                        return Ok(Some(piece));
                    }
                    Some(Err(e)) => {
                        self.body = None;
                        e
                    }
                },
                None => match reopen(&self.store, &self.url, &self.generation, self.received).await
                {
                    Ok(body) => {
                        self.body = Some(body);
                        continue;
                    }
                    Err(e) => e,
                },
            };
            self.attempts += 1;
            let client = self.store.client();
            let backoff = self
                .backoff
                .get_or_insert_with(|| client.options().retry.backoff());
            let elapsed = backoff.elapsed();
            let delay = if retryable(&error, Idempotency::Idempotent) {
                backoff.next_delay(error.retry_after())
            } else {
                None
            };
            let Some(delay) = delay else {
                return Err(match error.status() {
                    Some(404 | 412) => StoreError::Api {
                        uri: self.uri.clone(),
                        status: error.status().unwrap_or_default(),
                        message: format!(
                            "the object changed while it was read (generation {} is gone)",
                            self.generation
                        ),
                    },
                    _ => failure(
                        "read",
                        &self.uri,
                        Failed {
                            error,
                            attempts: self.attempts,
                            elapsed,
                        },
                        None,
                    ),
                });
            };
            tracing::warn!(uri = %self.uri, error = %error, received = self.received, "a read broke off; resuming where it stopped");
            tokio::time::sleep(delay).await;
        }
    }
}

/// The rest, from byte `received` on, of generation `generation` of the object at `url`.
async fn reopen(
    store: &GcsStore,
    url: &str,
    generation: &str,
    received: u64,
) -> Result<BoxStream<'static, Result<Bytes, Error>>, Error> {
    let client = store.client();
    let rb = client
        .request(Method::GET, url)
        .query(&[("alt", "media"), ("generation", generation)])
        .header(reqwest::header::RANGE, format!("bytes={received}-"));
    let download = client.download(rb).await?;
    if download.status.as_u16() != 206 && received > 0 {
        return Err(Error::Invalid {
            url: url.to_owned(),
            message: format!(
                "asked for the bytes from {received} on, the server answered {}",
                download.status
            ),
        });
    }
    Ok(download.body)
}

#[cfg(test)]
mod tests {
    use super::super::fake::{Act, Fake, Request};
    use super::*;

    const BODY: &[u8] = b"0123456789";

    /// The `Range` and `generation` of every media read.
    fn reads(fake: &Fake) -> Vec<(Option<String>, Option<String>)> {
        fake.requests()
            .iter()
            .map(|r: &Request| {
                assert_eq!(r.method, "GET");
                let generation = r
                    .target
                    .split(['?', '&'])
                    .find_map(|p| p.strip_prefix("generation="))
                    .map(str::to_owned);
                (r.header("range").map(str::to_owned), generation)
            })
            .collect()
    }

    /// A fake whose first read sends the head of all of `BODY` (generation 7) and its first
    /// four bytes, then hangs up; later reads get `rest`.
    fn broken_then(mut rest: impl FnMut(&Request) -> Act + Send + 'static) -> Fake {
        let mut first = true;
        Fake::start(move |r, _| {
            assert!(
                r.target
                    .starts_with("/storage/v1/b/bucket/o/big.bin?alt=media")
            );
            if std::mem::take(&mut first) {
                Act::Cut {
                    headers: vec![("x-goog-generation", "7".to_owned())],
                    body: BODY.to_vec(),
                    sent: 4,
                }
            } else {
                rest(r)
            }
        })
    }

    async fn read_all(fake: &Fake) -> Result<Vec<u8>, StoreError> {
        let got = fake.store().get("big.bin").await?;
        assert_eq!((got.generation.as_str(), got.size), ("7", 10));
        got.bytes_limited("gs://bucket/big.bin", u64::MAX)
            .await
            .map(|b| b.to_vec())
    }

    #[tokio::test(start_paused = true)]
    async fn a_broken_read_asks_for_the_rest_of_the_same_generation() {
        let fake = broken_then(|_| Act::Answer(206, vec![], BODY[4..].to_vec()));
        assert_eq!(read_all(&fake).await.unwrap(), BODY);
        assert_eq!(
            reads(&fake),
            [
                (None, None),
                (Some("bytes=4-".to_owned()), Some("7".to_owned()))
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_resumed_read_answered_whole_fails_rather_than_repeating_bytes() {
        let fake = broken_then(|_| Act::Answer(200, vec![], BODY.to_vec()));
        let e = read_all(&fake).await.unwrap_err().to_string();
        assert!(e.contains("gs://bucket/big.bin"), "{e}");
        assert!(e.contains("asked for the bytes from 4 on"), "{e}");
        assert_eq!(reads(&fake).len(), 2, "not retried");
    }

    #[tokio::test(start_paused = true)]
    async fn a_generation_gone_mid_read_ends_it_naming_the_change() {
        for code in [404, 412] {
            let fake = broken_then(move |_| Act::Answer(code, vec![], vec![]));
            let e = read_all(&fake).await.unwrap_err();
            match &e {
                StoreError::Api {
                    status, message, ..
                } => {
                    assert_eq!(*status, code);
                    assert!(message.contains("generation 7 is gone"), "{message}");
                }
                other => panic!("{code}: {other:?}"),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_that_keeps_breaking_gives_up_within_the_policy() {
        // Every resumption fails with a 503. The break and the failed resumptions share the
        // policy's 3 retries: the first read, then three resumptions.
        let fake = broken_then(|_| Act::Answer(503, vec![], vec![]));
        let e = read_all(&fake).await.unwrap_err();
        assert!(matches!(e, StoreError::Api { status: 503, .. }), "{e:?}");
        assert_eq!(reads(&fake).len(), 4, "{:?}", reads(&fake));
    }
}
