//! Access tokens for the Vertex tuner. `gcp_auth` covers a service-account key
//! (`GOOGLE_APPLICATION_CREDENTIALS`, whose `token_uri` it honours), gcloud's application-default
//! credentials and the metadata server at its fixed address; [`MetadataServer`] adds the
//! `GCE_METADATA_HOST` override (GOOGLE-APIS.md §5), which `gcp_auth` ignores, so emulators and
//! tests can stand in for the metadata server.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use gcp_auth::{Token, TokenProvider};
use tokio::sync::{Mutex, OnceCell};

pub(super) const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Where tokens come from, chosen when the tuner is built and opened on first use (opening may
/// talk to the network, and `from_settings` is not async).
pub(super) struct Credentials {
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
    /// `GOOGLE_APPLICATION_CREDENTIALS` first (as every Google client library does), then
    /// `GCE_METADATA_HOST`, then `gcp_auth`'s own discovery (gcloud, the metadata server).
    pub(super) fn from_env(var: impl Fn(&str) -> Option<String>) -> Self {
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

    pub(super) fn given(provider: Arc<dyn TokenProvider>) -> Self {
        Self {
            source: Source::Given,
            provider: OnceCell::new_with(Some(provider)),
        }
    }

    /// A bearer token for the cloud-platform scope.
    pub(super) async fn token(&self) -> Result<Arc<Token>, String> {
        let provider = self.provider.get_or_try_init(|| self.open()).await?;
        provider
            .token(&[SCOPE])
            .await
            .map_err(|e| format!("could not get a Google access token: {}", chain(&e)))
    }

    async fn open(&self) -> Result<Arc<dyn TokenProvider>, String> {
        match &self.source {
            Source::KeyFile(path) => gcp_auth::CustomServiceAccount::from_file(path)
                .map(|p| Arc::new(p) as Arc<dyn TokenProvider>)
                .map_err(|e| {
                    format!(
                        "GOOGLE_APPLICATION_CREDENTIALS={}: not a usable service-account key: {}",
                        path.display(),
                        chain(&e)
                    )
                }),
            Source::Metadata(host) => Ok(Arc::new(MetadataServer::new(host))),
            Source::Discover => gcp_auth::provider().await.map_err(|e| {
                format!(
                    "no Google credentials found: set GOOGLE_APPLICATION_CREDENTIALS to a service-account \
                     key, run `gcloud auth application-default login`, or run on Google Cloud ({})",
                    chain(&e)
                )
            }),
            Source::Given => Err("no token provider".to_owned()),
        }
    }
}

/// An error and its sources on one line: `gcp_auth`'s top-level messages alone hide the cause.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    if let Some(gcp_auth::Error::NoAuthMethod(a, b, c)) = e.downcast_ref::<gcp_auth::Error>() {
        s = format!(
            "{s} (gcloud: {}; metadata server: {}; application default: {})",
            chain(&**a),
            chain(&**b),
            chain(&**c)
        );
    }
    s
}

/// Tokens of the instance's service account from the metadata server at `GCE_METADATA_HOST`
/// (`host[:port]`, no scheme), cached until shortly before they expire.
pub struct MetadataServer {
    base: String,
    http: reqwest::Client,
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
            // The metadata server is local; it needs no pool timer, and no proxy may see it.
            http: reqwest::Client::builder()
                .no_proxy()
                .pool_idle_timeout(None)
                .build()
                .unwrap_or_default(),
            token: Mutex::new(None),
        }
    }

    async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<bytes::Bytes, gcp_auth::Error> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .query(query)
            .header("Metadata-Flavor", "Google")
            .send()
            .await
            .map_err(|e| gcp_auth::Error::Other("metadata server request failed", Box::new(e)))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| {
            gcp_auth::Error::Other("metadata server response unreadable", Box::new(e))
        })?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body)
                .chars()
                .take(300)
                .collect::<String>();
            return Err(gcp_auth::Error::Other(
                "metadata server refused",
                format!("HTTP {status}: {text}").into(),
            ));
        }
        Ok(body)
    }
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
            .await?;
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
            .await?;
        Ok(Arc::from(String::from_utf8_lossy(&body).trim()))
    }
}
