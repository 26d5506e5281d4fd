//! The Vertex AI Model Registry mirror of the champion pointer: the version alias `champion`.
//!
//! The pointer (`MODEL_META_FOLDER/champion.json`) is the source of truth; the alias is a
//! mirror that lets people and tools name the champion (`…/models/M@champion`, and continuous
//! tuning's `preTunedModel.tunedModelName`). A run that finds the alias behind the pointer
//! calls [`Registry::promote`] again: every step is idempotent.
//!
//! * [`Registry::champion`]: `models.get` of `…/models/M@champion`, the version it resolves
//!   to; `None` when no version of `M` carries the alias (404).
//! * [`Registry::set_default_checkpoint`]: `models.patch` with `updateMask=defaultCheckpointId`,
//!   the winning checkpoint of a champion (`evaluate::checkpoints`) as its version's default.
//! * [`Registry::promote`]: `models.mergeVersionAliases ["champion"]` on the new version, which
//!   moves the alias off any other version of the same Model. Aliases do not span Models
//!   (`aiplatform.v1` `TunedModel.model`: a different `tunedModelDisplayName` makes a new
//!   Model), so when the previous champion is another Model the alias is then removed there
//!   (`["-champion"]` on the version that holds it). The new version gets the alias first: a
//!   crash in between leaves two Models with the alias, which the next promote repairs, never
//!   none.
//!
//! Calls go through the shared client core ([`crate::client`]): a deadline per call, 408,
//! 429, 5xx and lost connections retried with back-off and jitter (both calls are safe to
//! repeat). [`NoRegistry`] is the dry-run tuner's: there is no Vertex model to alias.

use std::sync::Arc;

use async_trait::async_trait;
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::retry::{self, Idempotency, retryable};
use crate::client::{Auth, Client, Credentials, Error, Options};
use crate::locations::Hosts;

/// The alias the champion carries.
pub const ALIAS: &str = "champion";

/// The only scope Vertex AI takes.
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Not a model version name `projects/{p}/locations/{l}/models/{m}@{version}`.
    #[error(
        "{name:?} is not a Vertex AI model version name ({reason}); expected projects/PROJECT/locations/LOCATION/models/MODEL@VERSION"
    )]
    InvalidName { name: String, reason: String },
    /// Vertex AI refused, or could not be reached within the retries.
    #[error("Vertex AI Model Registry: could not {action} {model}: {message}")]
    Api {
        action: &'static str,
        model: String,
        /// The HTTP status of a refusal.
        status: Option<u16>,
        message: String,
    },
}

/// The champion alias seam.
#[async_trait]
pub trait Registry: Send + Sync {
    /// The version of `model` (any version of it, or the bare Model name) that carries the
    /// `champion` alias, as a full version name `projects/…/models/M@V`; `None` when none does.
    async fn champion(&self, model: &str) -> Result<Option<String>, RegistryError>;

    /// Makes `new` (`projects/…/models/M@V`) the only version carrying `champion`, taking it
    /// off `previous` when that is another Model. Idempotent.
    async fn promote(&self, new: &str, previous: Option<&str>) -> Result<(), RegistryError>;

    /// Takes `champion` off whichever version of `previous`'s Model carries it (a rollback to
    /// the base model, which no alias can name). Idempotent.
    async fn withdraw(&self, previous: &str) -> Result<(), RegistryError>;

    /// Makes `checkpoint` the default checkpoint of the model version `version`
    /// (`projects/…/models/M@V`): what its `tunedModel.endpoint` represents and what continuous
    /// tuning starts from without a `checkpointId`. Idempotent. Nothing to do without a Model
    /// Registry.
    async fn set_default_checkpoint(
        &self,
        _version: &str,
        _checkpoint: &str,
    ) -> Result<(), RegistryError> {
        Ok(())
    }
}

/// A model version name split: the Model (`projects/p/locations/l/models/m`) and the version
/// (an ID or an alias), if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelName<'a> {
    pub model: &'a str,
    pub version: Option<&'a str>,
}

impl<'a> ModelName<'a> {
    /// Parses `projects/{p}/locations/{l}/models/{m}[@{version}]`.
    pub fn parse(name: &'a str) -> Result<Self, RegistryError> {
        let bad = |reason: &str| RegistryError::InvalidName {
            name: name.to_owned(),
            reason: reason.to_owned(),
        };
        let (model, version) = match name.split_once('@') {
            Some((m, v)) => (m, Some(v)),
            None => (name, None),
        };
        let parts: Vec<&str> = model.split('/').collect();
        let ["projects", p, "locations", l, "models", m] = parts[..] else {
            return Err(bad("not of the form projects/P/locations/L/models/M"));
        };
        if [p, l, m].iter().any(|s| s.is_empty()) {
            return Err(bad("a part is empty"));
        }
        if let Some(v) = version
            && (v.is_empty() || v.contains(['/', '@', ':']))
        {
            return Err(bad("the version after @ is empty or malformed"));
        }
        Ok(Self { model, version })
    }

    /// Parses a name that must carry a version ID (digits), as `mergeVersionAliases` needs.
    pub fn parse_version(name: &'a str) -> Result<Self, RegistryError> {
        let parsed = Self::parse(name)?;
        match parsed.version {
            Some(v) if v.bytes().all(|b| b.is_ascii_digit()) => Ok(parsed),
            Some(_) => Err(RegistryError::InvalidName {
                name: name.to_owned(),
                reason: "the version after @ must be a version ID (digits), not an alias".into(),
            }),
            None => Err(RegistryError::InvalidName {
                name: name.to_owned(),
                reason: "no version: add @VERSION_ID".into(),
            }),
        }
    }
}

/// The dry-run tuner's registry: there is no Vertex model, so nothing carries an alias.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRegistry;

#[async_trait]
impl Registry for NoRegistry {
    async fn champion(&self, _model: &str) -> Result<Option<String>, RegistryError> {
        Ok(None)
    }

    async fn promote(&self, new: &str, _previous: Option<&str>) -> Result<(), RegistryError> {
        tracing::info!(model = %new, "dry run: no Vertex AI Model Registry, the champion alias is not moved");
        Ok(())
    }

    async fn withdraw(&self, _previous: &str) -> Result<(), RegistryError> {
        Ok(())
    }
}

/// What the Vertex registry needs, built by the settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where calls go: a model is called on the host of the location its name carries.
    pub hosts: Hosts,
    /// Deadlines of each call and the retry policy.
    pub http: Options,
}

/// The Vertex AI Model Registry.
#[derive(Debug)]
pub struct VertexRegistry {
    client: Client,
    /// Where each model is called.
    hosts: Hosts,
}

impl VertexRegistry {
    /// Tokens from Application Default Credentials (opened on first use).
    pub fn new(config: Config) -> Result<Self, RegistryError> {
        Self::with_credentials(config, Credentials::from_env())
    }

    /// As [`VertexRegistry::new`], with tokens from `credentials`.
    pub fn with_credentials(
        config: Config,
        credentials: Credentials,
    ) -> Result<Self, RegistryError> {
        let client = Client::new(
            config.http,
            Auth::Bearer {
                credentials: Arc::new(credentials),
                scope: SCOPE,
            },
        )
        .map_err(|e| RegistryError::Api {
            action: "open a client for",
            model: config.hosts.root("global"),
            status: None,
            message: e.to_string(),
        })?;
        Ok(Self {
            client,
            hosts: config.hosts,
        })
    }

    /// One call, retried on what the client core classifies as transient (both calls are safe
    /// to repeat); the JSON answer, or `None` for a 404 when `missing_ok`.
    async fn call(
        &self,
        action: &'static str,
        model: &str,
        method: Method,
        url: &str,
        body: Option<&Value>,
        missing_ok: bool,
    ) -> Result<Option<Value>, RegistryError> {
        let what = format!("Vertex AI Model Registry: {action} {model}");
        let answer = retry::retry(
            &self.client.options().retry,
            &what,
            |e| retryable(e, Idempotency::Idempotent),
            || async {
                let mut request = self.client.request(method.clone(), url);
                if let Some(b) = body {
                    request = request.json(b);
                }
                self.client.call(request).await?.json::<Value>()
            },
        )
        .await;
        match answer {
            Ok(v) => Ok(Some(v)),
            Err(f) if missing_ok && f.error.status() == Some(404) => Ok(None),
            Err(f) => Err(RegistryError::Api {
                action,
                model: model.to_owned(),
                status: f.error.status(),
                message: match &f.error {
                    Error::Status { .. } => {
                        let attempts = if f.attempts > 1 {
                            format!(" (after {} attempts)", f.attempts)
                        } else {
                            String::new()
                        };
                        format!(
                            "HTTP {}: {}{attempts}",
                            f.error.status().unwrap_or_default(),
                            f.error.message()
                        )
                    }
                    _ => f.to_string(),
                },
            }),
        }
    }

    /// The version of the Model `model` (no version) that holds the alias.
    async fn holder(&self, model: &str) -> Result<Option<String>, RegistryError> {
        let url = self.hosts.url(&format!("{model}@{ALIAS}"));
        let Some(answer) = self
            .call(
                "read the champion alias of",
                model,
                Method::GET,
                &url,
                None,
                true,
            )
            .await?
        else {
            return Ok(None);
        };
        match answer["versionId"].as_str() {
            Some(v) if !v.is_empty() => Ok(Some(format!("{model}@{v}"))),
            _ => Err(RegistryError::Api {
                action: "read the champion alias of",
                model: model.to_owned(),
                status: None,
                message: format!("the answer has no versionId: {answer}"),
            }),
        }
    }

    async fn merge(
        &self,
        action: &'static str,
        version: &str,
        aliases: &[&str],
        missing_ok: bool,
    ) -> Result<Option<Value>, RegistryError> {
        let url = self.hosts.url(&format!("{version}:mergeVersionAliases"));
        let body = json!({ "versionAliases": aliases });
        self.call(action, version, Method::POST, &url, Some(&body), missing_ok)
            .await
    }
}

#[async_trait]
impl Registry for VertexRegistry {
    async fn champion(&self, model: &str) -> Result<Option<String>, RegistryError> {
        let name = ModelName::parse(model)?;
        self.holder(name.model).await
    }

    async fn promote(&self, new: &str, previous: Option<&str>) -> Result<(), RegistryError> {
        let target = ModelName::parse_version(new)?;
        let previous = previous.map(ModelName::parse).transpose()?;
        let answer = self
            .merge("move the champion alias to", new, &[ALIAS], false)
            .await?
            .unwrap_or_default();
        let carries = answer["versionAliases"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == ALIAS));
        if !carries {
            tracing::warn!(model = %new, answer = %answer, "Vertex AI did not list the champion alias on the new version");
        }
        // Aliases do not span Models: take it off the previous champion's Model by hand.
        if let Some(prev) = previous
            && prev.model != target.model
            && let Some(holder) = self.holder(prev.model).await?
        {
            // Gone meanwhile (404) is as good as removed.
            self.merge(
                "take the champion alias off",
                &holder,
                &[&format!("-{ALIAS}")],
                true,
            )
            .await?;
            tracing::info!(from = %holder, to = %new, "the champion alias moved to another model");
        }
        tracing::info!(model = %new, "the champion alias is on {new}");
        Ok(())
    }

    /// `models.patch` of the version with `updateMask=defaultCheckpointId` (aiplatform v1:
    /// `PATCH v1/{+name}`, a `GoogleCloudAiplatformV1Model` body, `updateMask` required;
    /// `Model.defaultCheckpointId` is "the default checkpoint id of a model version").
    async fn set_default_checkpoint(
        &self,
        version: &str,
        checkpoint: &str,
    ) -> Result<(), RegistryError> {
        ModelName::parse_version(version)?;
        let url = format!("{}?updateMask=defaultCheckpointId", self.hosts.url(version));
        let body = json!({ "defaultCheckpointId": checkpoint });
        let answer = self
            .call(
                "set the default checkpoint of",
                version,
                Method::PATCH,
                &url,
                Some(&body),
                false,
            )
            .await?
            .unwrap_or_default();
        if answer["defaultCheckpointId"].as_str() != Some(checkpoint) {
            tracing::warn!(model = %version, checkpoint, answer = %answer, "Vertex AI did not echo the default checkpoint");
        }
        tracing::info!(model = %version, checkpoint, "the model version's default checkpoint is {checkpoint}");
        Ok(())
    }

    async fn withdraw(&self, previous: &str) -> Result<(), RegistryError> {
        let prev = ModelName::parse(previous)?;
        if let Some(holder) = self.holder(prev.model).await? {
            self.merge(
                "take the champion alias off",
                &holder,
                &[&format!("-{ALIAS}")],
                true,
            )
            .await?;
            tracing::info!(from = %holder, "the champion alias was withdrawn (the champion is a base model)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_parsed_and_refused_clearly() {
        let n = ModelName::parse("projects/p/locations/l/models/123@4").unwrap();
        assert_eq!(n.model, "projects/p/locations/l/models/123");
        assert_eq!(n.version, Some("4"));
        let n = ModelName::parse("projects/p/locations/l/models/123").unwrap();
        assert_eq!(n.version, None);
        assert!(ModelName::parse_version("projects/p/locations/l/models/123@4").is_ok());
        for (bad, why) in [
            ("models/123@4", "not of the form"),
            ("projects/p/locations/l/endpoints/9", "not of the form"),
            ("projects/p/locations//models/1@2", "a part is empty"),
            ("projects/p/locations/l/models/1@", "the version after @"),
            (
                "projects/p/locations/l/models/1@champion",
                "must be a version ID",
            ),
            ("projects/p/locations/l/models/1", "no version"),
        ] {
            let e = ModelName::parse_version(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }
}
