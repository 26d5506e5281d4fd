//! Settings, read from environment variables only.
//!
//! Environment variables work identically under Spin (`environment = {…}` in spin.toml,
//! `spin up --env`), `SpinKube` (container env) and `wasmtime serve --env`, and need no
//! `spin:`/`fermyon:` import (SPIN-WASM.md §4). Names follow the seed (`BUCKET_NAME`,
//! `RAW_DATA_FOLDER`, …, `GCP_PROJECT`, REGION, `JOB_NAME`). Settings are read per request: it costs
//! microseconds and a bad value is reported on the request it breaks, naming the setting.
//!
//! The layout settings (folders and extensions) and their defaults are the pipeline's, from the
//! shared `autotune-layout` crate, so one environment configures both and they agree on what a
//! sample is.

use autotune_layout::{Layout, Modality, defaults};

/// Google's OIDC signing keys.
pub const DEFAULT_JWKS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";
/// Run Admin API origin.
pub const DEFAULT_RUN_API_ENDPOINT: &str = "https://run.googleapis.com";
/// Metadata server host (`GCE_METADATA_HOST` convention: host\[:port], no scheme).
pub const DEFAULT_METADATA_HOST: &str = "metadata.google.internal";
/// Outbound timeout: well under Pub/Sub's and Eventarc's 10 s+ delivery deadlines.
pub const DEFAULT_UPSTREAM_TIMEOUT_MS: u32 = 5_000;

/// How callers are authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMode {
    /// Google-signed OIDC ID token in `Authorization: Bearer`.
    Oidc {
        audience: String,
        allowed_invokers: Vec<String>,
        jwks_url: String,
        /// `JWKS_JSON`: a key set document given inline, used before `jwks_url` (which is then
        /// fetched only for a `kid` this set lacks). Kept as text here: the service parses it
        /// once per instance and reports a malformed one as a configuration error.
        jwks_json: Option<String>,
    },
    /// Shared secret in the `X-Trigger-Token` header, for hosts that cannot mint OIDC tokens.
    Token { secret: String },
    /// No authentication: local use only, logged as a warning on every request.
    None,
}

/// Where a storage event must come from to start the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterSettings {
    pub bucket: String,
    /// Folders and extensions, as the pipeline reads them.
    pub layout: Layout,
}

/// The job to start and how to reach Google.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSettings {
    pub project: String,
    pub region: String,
    pub job: String,
    /// Origin without trailing slash, e.g. `https://run.googleapis.com`.
    pub run_api_endpoint: String,
    /// Base URL of the metadata server, e.g. `http://metadata.google.internal`.
    pub metadata_base: String,
    pub timeout_ms: u32,
}

/// All settings of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub auth: AuthMode,
    pub filter: FilterSettings,
    pub job: JobSettings,
}

/// A setting is missing or malformed; the message names it and says what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("setting {setting}: {problem}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub problem: String,
}

fn err(setting: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        setting,
        problem: problem.into(),
    }
}

/// Reads settings through `get` (`std::env::var` in the component, a map in tests).
/// Empty values count as unset, as in the seed.
pub fn load(get: &dyn Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
    let opt = |k: &str| {
        get(k)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let req = |k: &'static str| opt(k).ok_or_else(|| err(k, "is required but not set"));
    let or = |k: &str, d: &str| opt(k).unwrap_or_else(|| d.to_owned());

    let auth = load_auth(&opt)?;

    let exclusion = |k: &'static str, d: &str| {
        let v = folder(&or(k, d));
        if v.is_empty() {
            Err(err(
                k,
                "must name a folder: an empty value would exclude every object",
            ))
        } else {
            Ok(v)
        }
    };
    let bucket = req("BUCKET_NAME")?;
    let mut layout = Layout::new(
        &or("RAW_DATA_FOLDER", defaults::RAW_DATA_FOLDER),
        &or("LABEL_FOLDER", defaults::LABEL_FOLDER),
        &exclusion("JSONL_FOLDER", defaults::JSONL_FOLDER)?,
        &exclusion("MODEL_META_FOLDER", defaults::MODEL_META_FOLDER)?,
    );
    for m in Modality::ALL {
        let setting = m.extensions_setting();
        layout = layout.with_extensions(
            m,
            extensions(setting, &or(setting, m.default_extensions()))?,
        );
    }
    let layout = layout.with_label_extensions(extensions(
        "LABEL_EXTENSIONS",
        &or("LABEL_EXTENSIONS", defaults::LABEL_EXTENSIONS),
    )?);
    let filter = FilterSettings { bucket, layout };

    let Some(project) = opt("GCP_PROJECT").or_else(|| opt("PROJECT_ID")) else {
        return Err(err(
            "GCP_PROJECT",
            "is required (or PROJECT_ID) but not set",
        ));
    };
    let run_api_endpoint = or("RUN_API_ENDPOINT", DEFAULT_RUN_API_ENDPOINT);
    let run_api_endpoint = http_origin("RUN_API_ENDPOINT", &run_api_endpoint)?;
    let metadata_host = or("GCE_METADATA_HOST", DEFAULT_METADATA_HOST);
    let metadata_base = if metadata_host.contains("://") {
        http_origin("GCE_METADATA_HOST", &metadata_host)?
    } else {
        http_origin("GCE_METADATA_HOST", &format!("http://{metadata_host}"))?
    };
    let timeout_ms = match opt("UPSTREAM_TIMEOUT_MS") {
        None => DEFAULT_UPSTREAM_TIMEOUT_MS,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=600_000).contains(&n) => n,
            _ => {
                return Err(err(
                    "UPSTREAM_TIMEOUT_MS",
                    format!("{v:?} is not a number of milliseconds between 1 and 600000"),
                ));
            }
        },
    };
    let job = JobSettings {
        project: path_segment("GCP_PROJECT", project)?,
        region: path_segment("REGION", or("REGION", "us-central1"))?,
        job: path_segment("JOB_NAME", req("JOB_NAME")?)?,
        run_api_endpoint,
        metadata_base,
        timeout_ms,
    };
    Ok(Settings { auth, filter, job })
}

fn load_auth(opt: &dyn Fn(&str) -> Option<String>) -> Result<AuthMode, ConfigError> {
    let mode = match opt("AUTH_MODE") {
        Some(m) => m.to_ascii_lowercase(),
        // Pick the mode the operator evidently configured; refuse to guess "none".
        None if opt("AUDIENCE").is_some() => "oidc".to_owned(),
        None if opt("TRIGGER_TOKEN").is_some() => "token".to_owned(),
        None => {
            return Err(err(
                "AUTH_MODE",
                "not set and neither AUDIENCE (oidc) nor TRIGGER_TOKEN (token) is set; \
                 set AUTH_MODE=none only for local use",
            ));
        }
    };
    match mode.as_str() {
        "oidc" => {
            let audience = opt("AUDIENCE")
                .ok_or_else(|| err("AUDIENCE", "is required with AUTH_MODE=oidc"))?;
            let allowed_invokers: Vec<String> = opt("ALLOWED_INVOKERS")
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect();
            if allowed_invokers.is_empty() {
                // Anyone can mint a Google ID token for any audience; the email is what limits
                // the callers to the push / Eventarc service account.
                return Err(err(
                    "ALLOWED_INVOKERS",
                    "is required with AUTH_MODE=oidc (comma-separated service-account emails)",
                ));
            }
            let jwks_url = opt("JWKS_URL").unwrap_or_else(|| DEFAULT_JWKS_URL.to_owned());
            if !(jwks_url.starts_with("https://") || jwks_url.starts_with("http://")) {
                return Err(err(
                    "JWKS_URL",
                    format!("{jwks_url:?} is not an http(s) URL"),
                ));
            }
            Ok(AuthMode::Oidc {
                audience,
                allowed_invokers,
                jwks_url,
                jwks_json: opt("JWKS_JSON"),
            })
        }
        "token" => {
            let secret = opt("TRIGGER_TOKEN")
                .ok_or_else(|| err("TRIGGER_TOKEN", "is required with AUTH_MODE=token"))?;
            if secret.len() < 16 {
                return Err(err(
                    "TRIGGER_TOKEN",
                    "must be at least 16 characters (use e.g. `openssl rand -hex 32`)",
                ));
            }
            Ok(AuthMode::Token { secret })
        }
        "none" => Ok(AuthMode::None),
        other => Err(err(
            "AUTH_MODE",
            format!("{other:?} is not one of oidc, token, none"),
        )),
    }
}

/// Folder prefix without leading/trailing slashes (`""` = bucket root).
fn folder(v: &str) -> String {
    v.trim_matches('/').to_owned()
}

fn extensions(setting: &'static str, v: &str) -> Result<Vec<String>, ConfigError> {
    autotune_layout::parse_extension_list(v).map_err(|e| err(setting, e.to_string()))
}

/// Project, region and job names go into the URL path, so they must be plain segments.
fn path_segment(setting: &'static str, v: String) -> Result<String, ConfigError> {
    if v.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
    {
        Ok(v)
    } else {
        Err(err(
            setting,
            format!("{v:?} may only contain letters, digits, '-', '_', '.', ':'"),
        ))
    }
}

fn http_origin(setting: &'static str, v: &str) -> Result<String, ConfigError> {
    let rest = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.contains(['?', '#', ' ']) => {
            Ok(v.trim_end_matches('/').to_owned())
        }
        _ => Err(err(
            setting,
            format!("{v:?} is not an http(s) origin like https://run.googleapis.com"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load_map(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        load(&move |k| m.get(k).cloned())
    }

    const BASE: &[(&str, &str)] = &[
        ("BUCKET_NAME", "b"),
        ("GCP_PROJECT", "p"),
        ("JOB_NAME", "j"),
        ("AUTH_MODE", "none"),
    ];

    #[test]
    fn defaults_follow_the_seed() {
        let s = load_map(BASE).unwrap();
        // The layout defaults are the pipeline's: both come from autotune-layout.
        assert_eq!(s.filter.layout, Layout::default());
        assert_eq!(s.filter.layout.raw_folder(), "raw_training_data");
        assert_eq!(s.filter.layout.label_folder(), "raw_training_data");
        assert_eq!(s.job.region, "us-central1");
        assert_eq!(s.job.run_api_endpoint, "https://run.googleapis.com");
        assert_eq!(s.job.metadata_base, "http://metadata.google.internal");
        assert_eq!(s.filter.layout.label_extensions(), ["json", "txt"]);
        assert_eq!(s.auth, AuthMode::None);
    }

    #[test]
    fn missing_required_settings_are_named() {
        let e = load_map(&[
            ("GCP_PROJECT", "p"),
            ("JOB_NAME", "j"),
            ("AUTH_MODE", "none"),
        ])
        .unwrap_err();
        assert_eq!(e.setting, "BUCKET_NAME");
        let e = load_map(&[
            ("BUCKET_NAME", "b"),
            ("GCP_PROJECT", "p"),
            ("AUTH_MODE", "none"),
        ])
        .unwrap_err();
        assert_eq!(e.setting, "JOB_NAME");
        let e = load_map(&[
            ("BUCKET_NAME", "b"),
            ("GCP_PROJECT", "p"),
            ("JOB_NAME", "j"),
        ])
        .unwrap_err();
        assert_eq!(e.setting, "AUTH_MODE");
        assert!(e.to_string().contains("AUTH_MODE"));
    }

    #[test]
    fn auth_mode_is_inferred_and_validated() {
        let mut v = BASE[..3].to_vec();
        v.push(("AUDIENCE", "https://trigger.example"));
        let e = load_map(&v).unwrap_err();
        assert_eq!(e.setting, "ALLOWED_INVOKERS");
        v.push(("ALLOWED_INVOKERS", " Push@P.iam.gserviceaccount.com ,x@y"));
        match load_map(&v).unwrap().auth {
            AuthMode::Oidc {
                allowed_invokers,
                jwks_url,
                jwks_json,
                ..
            } => {
                assert_eq!(
                    allowed_invokers,
                    vec!["push@p.iam.gserviceaccount.com", "x@y"]
                );
                assert_eq!(jwks_url, DEFAULT_JWKS_URL);
                assert_eq!(jwks_json, None);
            }
            other => panic!("expected oidc, got {other:?}"),
        }
        v.push(("JWKS_JSON", " {\"keys\":[]} "));
        assert!(matches!(
            load_map(&v).unwrap().auth,
            AuthMode::Oidc { jwks_json: Some(j), .. } if j == "{\"keys\":[]}"
        ));
        let mut t = BASE[..3].to_vec();
        t.push(("TRIGGER_TOKEN", "short"));
        assert_eq!(load_map(&t).unwrap_err().setting, "TRIGGER_TOKEN");
        t.pop();
        t.push(("TRIGGER_TOKEN", "0123456789abcdef0123"));
        assert!(matches!(load_map(&t).unwrap().auth, AuthMode::Token { .. }));
        t.push(("AUTH_MODE", "basic"));
        assert_eq!(load_map(&t).unwrap_err().setting, "AUTH_MODE");
    }

    #[test]
    fn bad_values_name_the_setting() {
        for (k, v) in [
            ("RUN_API_ENDPOINT", "ftp://x"),
            ("UPSTREAM_TIMEOUT_MS", "abc"),
            ("UPSTREAM_TIMEOUT_MS", "0"),
            ("JOB_NAME", "a/b"),
            ("REGION", "us central"),
            ("JSONL_FOLDER", "/"),
            ("TEXT_EXTENSIONS", " , "),
            ("LABEL_EXTENSIONS", "js*n"),
            // The pipeline reads an extension after the last dot only, so neither would match.
            ("IMAGE_EXTENSIONS", "tar.gz"),
            ("TEXT_EXTENSIONS", "txt,gz"),
        ] {
            let mut pairs = BASE.to_vec();
            pairs.retain(|(name, _)| *name != k);
            pairs.push((k, v));
            let e = load_map(&pairs).unwrap_err();
            assert_eq!(e.setting, k, "{k}={v} gave {e}");
        }
    }

    #[test]
    fn metadata_host_and_folders_are_normalised() {
        let mut v = BASE.to_vec();
        v.extend([
            ("GCE_METADATA_HOST", "127.0.0.1:8999"),
            ("RAW_DATA_FOLDER", "/raw/"),
            ("RUN_API_ENDPOINT", "http://127.0.0.1:9/"),
            ("TEXT_EXTENSIONS", ".TXT"),
            ("IMAGE_EXTENSIONS", "Png"),
            ("PROJECT_ID", "ignored-because-gcp-project-wins"),
        ]);
        let s = load_map(&v).unwrap();
        assert_eq!(s.job.metadata_base, "http://127.0.0.1:8999");
        assert_eq!(s.job.run_api_endpoint, "http://127.0.0.1:9");
        let l = &s.filter.layout;
        assert_eq!(l.raw_folder(), "raw");
        assert_eq!(
            l.extensions(Modality::Text),
            ["txt"],
            "TEXT_EXTENSIONS replaced"
        );
        assert_eq!(l.extensions(Modality::Image), ["png"]);
        assert_eq!(
            l.extensions(Modality::Document),
            ["pdf"],
            "other kinds keep defaults"
        );
        assert_eq!(s.job.project, "p");
    }
}
