//! Where Vertex AI answers: the one place that turns a location into a host, and a resource
//! name into the URL that serves it.
//!
//! Vertex AI has three kinds of service endpoint, and a resource is called on the host of the
//! location its name carries (`projects/P/locations/L/...`):
//!
//! | location `L` | kind | host |
//! |---|---|---|
//! | a region (`us-central1`, `europe-west4`, …) | regional | `https://{L}-aiplatform.googleapis.com` |
//! | `us`, `eu` | jurisdictional multi-region | `https://aiplatform.{L}.rep.googleapis.com` |
//! | `global` | global | `https://aiplatform.googleapis.com` |
//!
//! Sources, read 2026-12-07: the Vertex AI locations page
//! (<https://docs.cloud.google.com/vertex-ai/generative-ai/docs/learn/locations>: the global
//! endpoint `aiplatform.googleapis.com` with `locations/global`; the multi-region hosts
//! `aiplatform.us.rep.googleapis.com` and `aiplatform.eu.rep.googleapis.com`), and the
//! `endpoints` list of the aiplatform v1 discovery document (revision 20260815), which names
//! the regional hosts and both `rep` hosts.
//!
//! Which location a call uses is the model table's business (`validate::models`: where a model
//! is tuned, where its base model answers, where a tuned model of it is served); this module
//! only maps locations to hosts. `VERTEX_API_ENDPOINT` replaces the host for tests and private
//! endpoints ([`Hosts::custom`]) and keeps the path's location, so a fake can check it.

use std::fmt;

/// The kind of service endpoint a location names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// One region: `us-central1`, `europe-west4`, …
    Regional,
    /// A jurisdiction's multi-region endpoint: `us` or `eu`.
    MultiRegion,
    /// The global endpoint: `global`.
    Global,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Regional => "regional",
            Self::MultiRegion => "multi-region",
            Self::Global => "global",
        })
    }
}

/// The multi-region locations.
pub const MULTI_REGIONS: [&str; 2] = ["us", "eu"];

/// The kind of endpoint `location` names.
pub fn scope_of(location: &str) -> Scope {
    if location == "global" {
        Scope::Global
    } else if MULTI_REGIONS.contains(&location) {
        Scope::MultiRegion
    } else {
        Scope::Regional
    }
}

/// The jurisdiction (`us`, `eu`) whose multi-region endpoint covers `location`: a region of
/// the United States (`us-*`) or of Europe (`europe-*`), or the multi-region itself. Other
/// regions have no multi-region endpoint.
pub fn jurisdiction(location: &str) -> Option<&'static str> {
    if location == "us" || location.starts_with("us-") {
        Some("us")
    } else if location == "eu" || location.starts_with("europe-") {
        Some("eu")
    } else {
        None
    }
}

/// The location of `scope` that serves a caller configured for `location`: `location` itself
/// for a regional endpoint (none when `location` is not a region), its jurisdiction for a
/// multi-region endpoint, `global` for the global endpoint.
pub fn place(scope: Scope, location: &str) -> Option<String> {
    match scope {
        Scope::Regional => (scope_of(location) == Scope::Regional).then(|| location.to_owned()),
        Scope::MultiRegion => jurisdiction(location).map(str::to_owned),
        Scope::Global => Some("global".to_owned()),
    }
}

/// Google's host for `location`, as an API root without a trailing slash.
pub fn google_root(location: &str) -> String {
    match scope_of(location) {
        Scope::Global => "https://aiplatform.googleapis.com".to_owned(),
        Scope::MultiRegion => format!("https://aiplatform.{location}.rep.googleapis.com"),
        Scope::Regional => format!("https://{location}-aiplatform.googleapis.com"),
    }
}

/// The location a resource name carries (`projects/p/locations/l/...`).
pub fn location_of(resource: &str) -> Option<&str> {
    let mut parts = resource.split('/');
    while let Some(p) = parts.next() {
        if p == "locations" {
            return parts.next().filter(|l| !l.is_empty());
        }
    }
    None
}

/// `resource` with its location replaced by `location` (unchanged when it names none).
pub fn relocate(resource: &str, location: &str) -> String {
    let Some(at) = location_of(resource) else {
        return resource.to_owned();
    };
    let marker = format!("/locations/{at}");
    match resource.find(&marker) {
        Some(i) => format!(
            "{}/locations/{location}{}",
            &resource[..i],
            &resource[i + marker.len()..]
        ),
        None => resource.to_owned(),
    }
}

/// The hosts Vertex AI calls go to: Google's, by location, or one root given by
/// `VERTEX_API_ENDPOINT` (a test fake, a private endpoint), where `{LOCATION}` is replaced by
/// the call's location.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hosts {
    custom: Option<String>,
}

impl Hosts {
    /// Google's hosts, each location on its own.
    pub fn google() -> Self {
        Self { custom: None }
    }

    /// Every call on `root` (no trailing slash needed); `{LOCATION}` in it is replaced by the
    /// call's location.
    pub fn custom(root: &str) -> Self {
        Self {
            custom: Some(root.trim_end_matches('/').to_owned()),
        }
    }

    /// A custom root, checked: it receives access tokens, so it must be `https` to a host
    /// under `googleapis.com` (a Private Service Connect name included), or `http`/`https` to
    /// a loopback host (tests, a local relay), with no user information
    /// ([`crate::client::check_token_endpoint`]); and a scheme and host only (`/v1/...` is
    /// added per call).
    pub fn checked(root: &str) -> Result<Self, String> {
        let probe = root.replace("{LOCATION}", "us-central1");
        let url = crate::client::check_token_endpoint(
            "VERTEX_API_ENDPOINT",
            &probe,
            crate::client::GOOGLE_API_DOMAINS,
        )
        .map_err(|e| e.reason)?;
        if url.path() != "/" {
            return Err(
                "must be a scheme and host only (the path /v1/... is added to each call)"
                    .to_owned(),
            );
        }
        Ok(Self::custom(root))
    }

    /// Whether calls go to Google's own hosts.
    pub fn is_google(&self) -> bool {
        self.custom.as_ref().is_none_or(|c| {
            c.split("://")
                .nth(1)
                .and_then(|r| r.split(['/', ':']).next())
                .is_some_and(|host| host.ends_with(".googleapis.com"))
        })
    }

    /// The API root for calls in `location`, without a trailing slash.
    pub fn root(&self, location: &str) -> String {
        match &self.custom {
            Some(c) => c.replace("{LOCATION}", location),
            None => google_root(location),
        }
    }

    /// The URL of `resource` (a full resource name, optionally with a `:verb`): the host of the
    /// location it names (the global host when it names none), then `/v1/` and the name.
    pub fn url(&self, resource: &str) -> String {
        let location = location_of(resource).unwrap_or("global");
        format!("{}/v1/{resource}", self.root(location))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_location_has_its_host() {
        let h = Hosts::google();
        assert_eq!(
            h.root("us-central1"),
            "https://us-central1-aiplatform.googleapis.com"
        );
        assert_eq!(
            h.root("europe-west4"),
            "https://europe-west4-aiplatform.googleapis.com"
        );
        assert_eq!(h.root("us"), "https://aiplatform.us.rep.googleapis.com");
        assert_eq!(h.root("eu"), "https://aiplatform.eu.rep.googleapis.com");
        assert_eq!(h.root("global"), "https://aiplatform.googleapis.com");
        assert_eq!(
            h.url("projects/p/locations/us/endpoints/1:generateContent"),
            "https://aiplatform.us.rep.googleapis.com/v1/projects/p/locations/us/endpoints/1:generateContent"
        );
        assert_eq!(
            h.url("projects/p/locations/global/publishers/google/models/gemini-3.5-flash:generateContent"),
            "https://aiplatform.googleapis.com/v1/projects/p/locations/global/publishers/google/models/gemini-3.5-flash:generateContent"
        );
        assert!(h.is_google());
    }

    #[test]
    fn a_custom_root_keeps_the_paths_location() {
        let h = Hosts::custom("http://127.0.0.1:9/");
        assert_eq!(
            h.url("projects/p/locations/us/models/1@2"),
            "http://127.0.0.1:9/v1/projects/p/locations/us/models/1@2"
        );
        assert!(!h.is_google());
        let t = Hosts::custom("https://{LOCATION}-aiplatform.googleapis.com");
        assert_eq!(
            t.root("europe-west4"),
            "https://europe-west4-aiplatform.googleapis.com"
        );
        assert!(t.is_google());
    }

    #[test]
    fn a_custom_root_that_would_leak_tokens_is_refused() {
        assert!(Hosts::checked("http://127.0.0.1:9").is_ok());
        assert!(Hosts::checked("http://localhost:9/").is_ok());
        assert!(Hosts::checked("https://{LOCATION}-aiplatform.googleapis.com").is_ok());
        assert!(Hosts::checked("https://aiplatform-vpc.p.googleapis.com").is_ok());
        for (root, why) in [
            ("http://aiplatform.googleapis.com", "must be https"),
            ("https://vertex.example.com", "would receive access tokens"),
            ("ftp://127.0.0.1", "must be an https URL"),
            (
                "https://user:pw@aiplatform.googleapis.com",
                "user name or password",
            ),
            (
                "https://aiplatform.googleapis.com/v1",
                "scheme and host only",
            ),
            ("not a url", "not a URL"),
        ] {
            let e = Hosts::checked(root).unwrap_err();
            assert!(e.contains(why), "{root}: {e}");
        }
    }

    #[test]
    fn places_follow_the_jurisdiction() {
        assert_eq!(
            place(Scope::Regional, "us-central1").as_deref(),
            Some("us-central1")
        );
        assert_eq!(place(Scope::Regional, "us"), None);
        assert_eq!(
            place(Scope::MultiRegion, "us-central1").as_deref(),
            Some("us")
        );
        assert_eq!(
            place(Scope::MultiRegion, "europe-west4").as_deref(),
            Some("eu")
        );
        assert_eq!(place(Scope::MultiRegion, "asia-northeast1"), None);
        assert_eq!(
            place(Scope::Global, "asia-northeast1").as_deref(),
            Some("global")
        );
        assert_eq!(scope_of("global"), Scope::Global);
        assert_eq!(scope_of("eu"), Scope::MultiRegion);
    }

    #[test]
    fn resources_are_relocated_in_their_location_only() {
        assert_eq!(
            relocate("projects/p/locations/us-central1/endpoints/7", "us"),
            "projects/p/locations/us/endpoints/7"
        );
        assert_eq!(
            relocate("publishers/google/models/m", "us"),
            "publishers/google/models/m"
        );
        assert_eq!(
            location_of("projects/p/locations/eu/models/1@1"),
            Some("eu")
        );
        assert_eq!(location_of("projects/p"), None);
    }
}
