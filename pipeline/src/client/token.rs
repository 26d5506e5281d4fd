//! Access tokens. `gcp_auth` covers a service-account key (`GOOGLE_APPLICATION_CREDENTIALS`,
//! whose `token_uri` it honours), gcloud's application-default credentials and the metadata
//! server at its fixed address; [`MetadataServer`] adds the `GCE_METADATA_HOST` override
//! (GOOGLE-APIS.md §5), which `gcp_auth` ignores, so emulators and tests can stand in for the
//! metadata server. Storage and Vertex AI choose their credentials the same way, here.
//!
//! Deadlines are the caller's: [`crate::client::Client`] bounds every token fetch by its
//! request timeout.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use gcp_auth::{Token, TokenProvider};
use tokio::sync::{Mutex, OnceCell};

use super::http::{Client, Error};
use super::{Options, chain};

/// Where tokens come from, chosen when a client is built and opened on first use (opening may
/// talk to the network, and constructors are not async).
pub struct Credentials {
    source: Source,
    provider: OnceCell<Arc<dyn TokenProvider>>,
}

enum Source {
    KeyFile(PathBuf),
    Metadata(String),
    Discover,
    Given,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match &self.source {
            Source::KeyFile(p) => format!("GOOGLE_APPLICATION_CREDENTIALS={}", p.display()),
            Source::Metadata(h) => format!("GCE_METADATA_HOST={h}"),
            Source::Discover => "gcp_auth discovery".to_owned(),
            Source::Given => "given token provider".to_owned(),
        };
        f.debug_struct("Credentials")
            .field("source", &source)
            .field("opened", &self.provider.initialized())
            .finish()
    }
}

impl Credentials {
    /// From the process environment; see [`Credentials::from_env_with`].
    pub fn from_env() -> Self {
        Self::from_env_with(|k| std::env::var(k).ok())
    }

    /// `GOOGLE_APPLICATION_CREDENTIALS` first (as every Google client library does), then
    /// `GCE_METADATA_HOST`, then `gcp_auth`'s own discovery (gcloud, the metadata server).
    pub fn from_env_with(var: impl Fn(&str) -> Option<String>) -> Self {
        let source =
            if let Some(path) = var("GOOGLE_APPLICATION_CREDENTIALS").filter(|p| !p.is_empty()) {
                Source::KeyFile(PathBuf::from(path))
            } else if let Some(host) = var("GCE_METADATA_HOST").filter(|h| !h.is_empty()) {
                Source::Metadata(host)
            } else {
                Source::Discover
            };
        Self {
            source,
            provider: OnceCell::new(),
        }
    }

    /// Tokens from `provider`.
    pub fn given(provider: Arc<dyn TokenProvider>) -> Self {
        Self {
            source: Source::Given,
            provider: OnceCell::new_with(Some(provider)),
        }
    }

    /// A bearer token for `scopes`.
    pub async fn token(&self, scopes: &[&str]) -> Result<Arc<Token>, String> {
        let provider = self.provider.get_or_try_init(|| self.open()).await?;
        provider
            .token(scopes)
            .await
            .map_err(|e| format!("could not get a Google access token: {}", describe(&e)))
    }

    async fn open(&self) -> Result<Arc<dyn TokenProvider>, String> {
        match &self.source {
            Source::KeyFile(path) => gcp_auth::CustomServiceAccount::from_file(path)
                .map(|p| Arc::new(p) as Arc<dyn TokenProvider>)
                .map_err(|e| {
                    format!(
                        "GOOGLE_APPLICATION_CREDENTIALS={}: not a usable service-account key: {}",
                        path.display(),
                        describe(&e)
                    )
                }),
            Source::Metadata(host) => Ok(Arc::new(MetadataServer::new(host))),
            Source::Discover => gcp_auth::provider().await.map_err(|e| {
                format!(
                    "no Google credentials found: set GOOGLE_APPLICATION_CREDENTIALS to a service-account \
                     key, run `gcloud auth application-default login`, or run on Google Cloud ({})",
                    describe(&e)
                )
            }),
            Source::Given => Err("no token provider".to_owned()),
        }
    }
}

/// A gcp_auth error on one line, with what each discovery method said.
fn describe(e: &gcp_auth::Error) -> String {
    let mut s = chain(e);
    if let gcp_auth::Error::NoAuthMethod(a, b, c) = e {
        s = format!(
            "{s} (gcloud: {}; metadata server: {}; application default: {})",
            describe(a),
            describe(b),
            describe(c)
        );
    }
    s
}

/// Tokens of the instance's service account from the metadata server at `GCE_METADATA_HOST`
/// (`host[:port]`, no scheme), cached until shortly before they expire.
pub struct MetadataServer {
    base: String,
    http: Option<Client>,
    token: Mutex<Option<Arc<Token>>>,
}

impl std::fmt::Debug for MetadataServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataServer")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl MetadataServer {
    /// `host` as in `GCE_METADATA_HOST`: `host[:port]`; a leading `http://` is tolerated.
    pub fn new(host: &str) -> Self {
        let host = host.trim_end_matches('/');
        let base = if host.starts_with("http://") || host.starts_with("https://") {
            host.to_owned()
        } else {
            format!("http://{host}")
        };
        Self {
            base,
            // The caller bounds each token fetch; this client runs no timer of its own.
            http: Client::local(Options::default().without_timers()).ok(),
            token: Mutex::new(None),
        }
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<bytes::Bytes, Error> {
        let url = format!("{}{path}", self.base);
        let Some(http) = &self.http else {
            return Err(Error::Invalid {
                url,
                message: "no HTTP client".into(),
            });
        };
        let answer = http
            .call(
                http.request(reqwest::Method::GET, &url)
                    .query(query)
                    .header("Metadata-Flavor", "Google"),
            )
            .await?;
        Ok(answer.body)
    }
}

fn other(what: &'static str, e: Error) -> gcp_auth::Error {
    gcp_auth::Error::Other(what, Box::new(e))
}

#[async_trait]
impl TokenProvider for MetadataServer {
    async fn token(&self, scopes: &[&str]) -> Result<Arc<Token>, gcp_auth::Error> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref().filter(|t| !t.has_expired()) {
            return Ok(t.clone());
        }
        let body = self
            .get(
                "/computeMetadata/v1/instance/service-accounts/default/token",
                &[("scopes", scopes.join(","))],
            )
            .await
            .map_err(|e| other("metadata server token request failed", e))?;
        let token: Arc<Token> = Arc::new(
            serde_json::from_slice(&body)
                .map_err(|e| gcp_auth::Error::Json("metadata server token unreadable", e))?,
        );
        *cached = Some(token.clone());
        Ok(token)
    }

    async fn project_id(&self) -> Result<Arc<str>, gcp_auth::Error> {
        let body = self
            .get("/computeMetadata/v1/project/project-id", &[])
            .await
            .map_err(|e| other("metadata server project request failed", e))?;
        Ok(Arc::from(String::from_utf8_lossy(&body).trim()))
    }
}
