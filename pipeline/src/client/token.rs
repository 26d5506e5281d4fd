//! Access tokens, from Google's own credentials library, `google-cloud-auth`, which implements
//! every kind of Application Default Credentials Google's client libraries accept:
//!
//! * a service-account key (`"type": "service_account"`): self-signed JWTs, no token endpoint;
//! * an authorized user from `gcloud auth application-default login` (`authorized_user`);
//! * workload identity federation (`external_account`), with subject tokens from a file, a URL
//!   or an executable (the latter only with `GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1`), and
//!   optional service-account impersonation;
//! * an impersonated service account (`impersonated_service_account`);
//! * the metadata server (Cloud Run, GCE), at `GCE_METADATA_HOST` when that is set.
//!
//! [`Credentials::from_env`] follows ADC: `GOOGLE_APPLICATION_CREDENTIALS`, then gcloud's
//! well-known file, then the metadata server. Storage and Vertex AI choose credentials the same
//! way, here. Deadlines are the caller's: [`crate::client::Client`] bounds every token fetch by
//! its request timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Once};

use async_trait::async_trait;
use google_cloud_auth::credentials::{
    AccessTokenCredentials, Builder, external_account, impersonated, mds, service_account,
    user_account,
};
use serde_json::Value;

use super::chain;

/// Why no token could be had.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct TokenError {
    pub message: String,
    /// A network problem or a server error: another attempt may succeed.
    pub transient: bool,
}

impl TokenError {
    pub fn new(message: impl Into<String>, transient: bool) -> Self {
        Self {
            message: message.into(),
            transient,
        }
    }
}

/// The token seam: anything that gives bearer tokens for scopes.
#[async_trait]
pub trait TokenProvider: Send + Sync + std::fmt::Debug {
    async fn token(&self, scopes: &[&str]) -> Result<String, TokenError>;
}

/// Where tokens come from, chosen when a client is built and opened on first use for each set
/// of scopes (opening reads files; fetching talks to the network).
pub struct Credentials {
    source: Source,
    opened: Mutex<HashMap<Vec<String>, AccessTokenCredentials>>,
}

#[derive(Debug)]
enum Source {
    /// Application Default Credentials from the process environment.
    Adc,
    /// A credentials file's contents, of any ADC type.
    Json(Value),
    /// The metadata server at this URL.
    Metadata(String),
    /// Tokens from the caller's provider.
    Given(Arc<dyn TokenProvider>),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match &self.source {
            Source::Adc => "application default credentials".to_owned(),
            Source::Json(v) => format!("{} credentials", v["type"].as_str().unwrap_or("unknown")),
            Source::Metadata(url) => format!("metadata server at {url}"),
            Source::Given(p) => format!("{p:?}"),
        };
        f.debug_struct("Credentials")
            .field("source", &source)
            .finish_non_exhaustive()
    }
}

/// google-cloud-auth signs with the process's rustls provider: ring, as the rest of the
/// binary uses.
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Fails only when a provider is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl Credentials {
    /// Application Default Credentials: `GOOGLE_APPLICATION_CREDENTIALS` (any credentials
    /// file), gcloud's application-default file, then the metadata server (honouring
    /// `GCE_METADATA_HOST`).
    pub fn from_env() -> Self {
        Self::with_source(Source::Adc)
    }

    /// The contents of a credentials file of any ADC type.
    pub fn from_json(json: Value) -> Self {
        Self::with_source(Source::Json(json))
    }

    /// The metadata server at `host` (`host[:port]` as in `GCE_METADATA_HOST`, or a URL).
    pub fn metadata_server(host: &str) -> Self {
        let host = host.trim_end_matches('/');
        let url = if host.contains("://") {
            host.to_owned()
        } else {
            format!("http://{host}")
        };
        Self::with_source(Source::Metadata(url))
    }

    /// Tokens from `provider`.
    pub fn given(provider: Arc<dyn TokenProvider>) -> Self {
        Self::with_source(Source::Given(provider))
    }

    fn with_source(source: Source) -> Self {
        Self {
            source,
            opened: Mutex::new(HashMap::new()),
        }
    }

    /// A bearer token for `scopes`.
    pub async fn token(&self, scopes: &[&str]) -> Result<String, TokenError> {
        if let Source::Given(p) = &self.source {
            return p.token(scopes).await;
        }
        let credentials = self.open(scopes)?;
        credentials
            .access_token()
            .await
            .map(|t| t.token)
            .map_err(|e| {
                TokenError::new(
                    format!("could not get a Google access token: {}", chain(&e)),
                    e.is_transient(),
                )
            })
    }

    /// The library's credentials for `scopes`, built once.
    fn open(&self, scopes: &[&str]) -> Result<AccessTokenCredentials, TokenError> {
        let key: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        let mut opened = self
            .opened
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = opened.get(&key) {
            return Ok(c.clone());
        }
        install_crypto_provider();
        let built = match &self.source {
            Source::Adc => Builder::default()
                .with_scopes(key.clone())
                .build_access_token_credentials()
                .map_err(|e| {
                    let file = std::env::var("GOOGLE_APPLICATION_CREDENTIALS")
                        .map(|p| format!("GOOGLE_APPLICATION_CREDENTIALS={p}: "))
                        .unwrap_or_default();
                    format!(
                        "{file}no usable Google credentials ({}); set GOOGLE_APPLICATION_CREDENTIALS \
                         to a credentials file, run `gcloud auth application-default login`, or run \
                         on Google Cloud",
                        chain(&e)
                    )
                }),
            Source::Json(json) => from_json(json.clone(), key.clone()),
            Source::Metadata(url) => mds::Builder::default()
                .with_endpoint(url.clone())
                .with_scopes(key.clone())
                .build_access_token_credentials()
                .map_err(|e| format!("metadata server at {url}: {}", chain(&e))),
            Source::Given(_) => Err("no credentials to open".to_owned()),
        }
        .map_err(|m| TokenError::new(m, false))?;
        opened.insert(key, built.clone());
        Ok(built)
    }
}

/// Credentials from a credentials file's contents, dispatched on its `type` as ADC does.
fn from_json(json: Value, scopes: Vec<String>) -> Result<AccessTokenCredentials, String> {
    let kind = json["type"].as_str().unwrap_or_default().to_owned();
    let built = match kind.as_str() {
        "service_account" => service_account::Builder::new(json)
            .with_access_specifier(service_account::AccessSpecifier::from_scopes(scopes))
            .build_access_token_credentials(),
        "authorized_user" => user_account::Builder::new(json)
            .with_scopes(scopes)
            .build_access_token_credentials(),
        "impersonated_service_account" => impersonated::Builder::new(json)
            .with_scopes(scopes)
            .build_access_token_credentials(),
        "external_account" => external_account::Builder::new(json)
            .with_scopes(scopes)
            .build_access_token_credentials(),
        other => {
            return Err(format!(
                "credentials of type {other:?} are not supported (service_account, authorized_user, \
                 impersonated_service_account, external_account are)"
            ));
        }
    };
    built.map_err(|e| format!("{kind} credentials: {}", chain(&e)))
}
