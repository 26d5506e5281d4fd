//! Model limits as data: which base models can be tuned, with what limits and adapter sizes.
//!
//! The table ships as `models.json` (compiled in), because Google changes these numbers more
//! often than this code; MODEL_LIMITS_FILE can replace or add entries without a rebuild. A model
//! the table does not know gets the strictest limits of all known models, so an unknown name can
//! only make the checks stricter, never let a bad dataset through.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ValidateError;
use crate::locations::{self, Scope};

/// The built-in table (`pipeline/tests/contracts/GOOGLE-APIS.md` §2.1, §2.2, §2.4).
const BUILT_IN: &str = include_str!("models.json");

/// Per-example media counts, GOOGLE-APIS.md §2.4 (the same for every 2.x model).
const MAX_IMAGES: u32 = 30;
const MAX_PDFS: u32 = 4;
const MAX_AUDIO: u32 = 1;
const MAX_VIDEO: u32 = 1;

/// The limits of one base model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelLimits {
    pub name: String,
    /// Other names Vertex accepts for the same model (e.g. without the `-001` version).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Input plus output tokens of one example.
    pub max_example_tokens: u64,
    pub max_validation_examples: u64,
    /// Training examples when no example has media.
    pub max_training_examples_text: u64,
    /// Training examples when at least one example has media.
    pub max_training_examples_multimodal: u64,
    pub max_training_file_bytes: u64,
    /// LoRA adapter sizes this model accepts.
    pub adapter_sizes: Vec<u8>,
    #[serde(default = "max_images")]
    pub max_images_per_example: u32,
    #[serde(default = "max_pdfs")]
    pub max_pdfs_per_example: u32,
    #[serde(default = "max_audio")]
    pub max_audio_per_example: u32,
    #[serde(default = "max_video")]
    pub max_video_per_example: u32,
    /// True when the limits are not from a Google page but copied from a sibling model.
    #[serde(default)]
    pub assumed: bool,
    /// Where the numbers come from.
    #[serde(default)]
    pub source: String,
    /// When Google released the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released: Option<chrono::NaiveDate>,
    /// When Vertex AI retires it (the earliest date Google gives); tuned models retire with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retires: Option<chrono::NaiveDate>,
    /// The model Google names to move to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successor: Option<String>,
    /// Regions where a tuning job of this model can be created ("Supported endpoint for model
    /// tuning"); empty when no page says, and then no LOCATION is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tuning_regions: Vec<String>,
    /// Where the base model answers `generateContent`, in the order autotune prefers: the
    /// caller's region, its jurisdiction's multi-region endpoint, or the global endpoint.
    #[serde(default = "regional_only")]
    pub base_serving: Vec<Scope>,
    /// Where a tuned model of it is served ("Supported endpoint for tuned model serving").
    #[serde(default = "regional_only")]
    pub tuned_serving: Vec<Scope>,
    /// Where the tuning regions and serving endpoints come from, and when they were read.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub locations_source: String,
    /// What generation settings the family takes at evaluation.
    #[serde(default)]
    pub sampling: Sampling,
    /// Accept `file://` media URIs: a local dry run references media on disk, which Vertex
    /// could not read but which is right for a rehearsal. Never read from a limits file.
    #[serde(skip)]
    pub allow_local_uris: bool,
}

fn regional_only() -> Vec<Scope> {
    vec![Scope::Regional]
}

/// The generation settings a model family takes, from Google's prompting guides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// The temperature evaluation sends; `None` sends none (the model's default, or a model
    /// that ignores it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Whether the model honours `seed` (it is sent only then).
    #[serde(default = "yes")]
    pub seed: bool,
    /// Why, with its source.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
}

fn yes() -> bool {
    true
}

impl Default for Sampling {
    /// Greedy decoding with a fixed seed: what Gemini 2.x evaluations have always used.
    fn default() -> Self {
        Self {
            temperature: Some(0.0),
            seed: true,
            source: String::new(),
        }
    }
}

fn max_images() -> u32 {
    MAX_IMAGES
}
fn max_pdfs() -> u32 {
    MAX_PDFS
}
fn max_audio() -> u32 {
    MAX_AUDIO
}
fn max_video() -> u32 {
    MAX_VIDEO
}

/// How many days before a model's retirement runs warn: Google blocks new tuning a month
/// before the retirement date.
pub const RETIREMENT_WARNING_DAYS: i64 = 30;

/// Where a model is in its life on a given day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lifecycle {
    /// Not retiring within [`RETIREMENT_WARNING_DAYS`], or no date is known.
    Current,
    RetiresSoon {
        on: chrono::NaiveDate,
        successor: Option<String>,
    },
    Retired {
        on: chrono::NaiveDate,
        successor: Option<String>,
    },
}

impl ModelLimits {
    /// Refuses a LOCATION where this model cannot be tuned, naming the regions where it can.
    pub fn check_tuning_location(&self, location: &str) -> Result<(), String> {
        if self.tuning_regions.is_empty() || self.tuning_regions.iter().any(|r| r == location) {
            return Ok(());
        }
        Err(format!(
            "{} can be tuned only in {} (LOCATION is {location}); set LOCATION to one of them ({})",
            self.name,
            self.tuning_regions.join(", "),
            if self.locations_source.is_empty() {
                "the model table"
            } else {
                &self.locations_source
            }
        ))
    }

    /// The location the base model is called in by a caller configured for `location`: the
    /// first of [`ModelLimits::base_serving`] that has a place for it (`location` itself when
    /// none has).
    pub fn base_location(&self, location: &str) -> String {
        self.base_serving
            .iter()
            .find_map(|s| locations::place(*s, location))
            .unwrap_or_else(|| location.to_owned())
    }

    /// The names a tuned model's `resource` (an endpoint or model named by the tuning job)
    /// may answer under, in the order to try them: as named when its location is one where
    /// tuned models of this base are served; otherwise the same resource under each serving
    /// location of its jurisdiction, then as named. Google's pages do not say under which
    /// location a tuned Gemini 3 endpoint is named, so the caller tries these in order and
    /// keeps the one that answers.
    pub fn tuned_candidates(&self, resource: &str) -> Vec<String> {
        let Some(at) = locations::location_of(resource) else {
            return vec![resource.to_owned()];
        };
        if self.tuned_serving.contains(&locations::scope_of(at)) {
            return vec![resource.to_owned()];
        }
        let mut out: Vec<String> = self
            .tuned_serving
            .iter()
            .filter_map(|s| locations::place(*s, at))
            .filter(|l| l != at)
            .map(|l| locations::relocate(resource, &l))
            .collect();
        out.push(resource.to_owned());
        out.dedup();
        out
    }

    pub fn lifecycle(&self, today: chrono::NaiveDate) -> Lifecycle {
        let Some(on) = self.retires else {
            return Lifecycle::Current;
        };
        let successor = self.successor.clone();
        if today >= on {
            Lifecycle::Retired { on, successor }
        } else if (on - today).num_days() <= RETIREMENT_WARNING_DAYS {
            Lifecycle::RetiresSoon { on, successor }
        } else {
            Lifecycle::Current
        }
    }
}

/// A model resolved against the table: its limits, and whether the name was known.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    /// The name asked for.
    pub requested: String,
    pub known: bool,
    pub limits: ModelLimits,
}

impl Resolved {
    /// Checks the model's retirement date on `today`: `Err` for a retired model (naming the
    /// successor), `Ok(Some(warning))` for one retiring within a month. `setting` names where
    /// the model came from (SOURCE_MODEL, or a parent model's base).
    pub fn check_retirement(
        &self,
        setting: &str,
        today: chrono::NaiveDate,
    ) -> Result<Option<String>, String> {
        if !self.known {
            return Ok(None);
        }
        let name = &self.limits.name;
        let instead = |s: &Option<String>| {
            s.as_ref().map_or_else(
                || "a current tunable model (see the Vertex AI model versions page)".to_owned(),
                |s| format!("its successor {s}"),
            )
        };
        match self.limits.lifecycle(today) {
            Lifecycle::Current => Ok(None),
            Lifecycle::RetiresSoon { on, successor } => Ok(Some(format!(
                "{setting} {name} retires on {on} ({} days from {today}; Vertex AI blocks new tuning a month before): move to {}",
                (on - today).num_days(),
                instead(&successor)
            ))),
            Lifecycle::Retired { on, successor } => Err(format!(
                "{name} was retired on {on}: Vertex AI no longer tunes it; set {setting} to {}",
                instead(&successor)
            )),
        }
    }

    /// Why an unknown or assumed model deserves a warning, if it does.
    pub fn warning(&self) -> Option<String> {
        if !self.known {
            Some(format!(
                "model {:?} is not in the model table; using the strictest known limits (add it with MODEL_LIMITS_FILE)",
                self.requested
            ))
        } else if self.limits.assumed {
            Some(format!(
                "the limits of {} are assumed ({})",
                self.limits.name, self.limits.source
            ))
        } else {
            None
        }
    }
}

#[derive(Debug, Deserialize)]
struct TableFile {
    models: Vec<ModelLimits>,
}

/// The known base models.
#[derive(Debug, Clone)]
pub struct ModelTable {
    models: Vec<ModelLimits>,
}

impl Default for ModelTable {
    fn default() -> Self {
        Self::built_in()
    }
}

impl ModelTable {
    /// The table compiled into the binary.
    pub fn built_in() -> Self {
        // The built-in file is tested (`built_in_table_parses`), so this cannot fail at run time.
        let file: TableFile = serde_json::from_str(BUILT_IN).expect("models.json is valid");
        Self {
            models: file.models,
        }
    }

    /// The built-in table, with the entries of `text` (the file `path`, MODEL_LIMITS_FILE, read
    /// by the caller, or why it could not be) replacing those of the same name and adding new
    /// ones.
    pub fn with_file(path: &Path, text: Result<String, String>) -> Result<Self, ValidateError> {
        let mut table = Self::built_in();
        let bad = |reason: String| ValidateError::ModelLimits {
            path: path.display().to_string(),
            reason,
        };
        let text = text.map_err(bad)?;
        let file: TableFile = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        for m in file.models {
            if m.name.trim().is_empty() {
                return Err(bad("a model has an empty name".into()));
            }
            table.models.retain(|k| k.name != m.name);
            table.models.push(m);
        }
        Ok(table)
    }

    pub fn models(&self) -> &[ModelLimits] {
        &self.models
    }

    /// Finds a model by name or alias. A resource path (`publishers/google/models/X`,
    /// `projects/.../models/X`) is looked up by its last segment.
    pub fn get(&self, model: &str) -> Option<&ModelLimits> {
        let name = model.rsplit('/').next().unwrap_or(model).trim();
        self.models
            .iter()
            .find(|m| m.name == name || m.aliases.iter().any(|a| a == name))
    }

    /// The model's limits, or the strictest known limits for an unknown model.
    pub fn resolve(&self, model: &str) -> Resolved {
        match self.get(model) {
            Some(m) => Resolved {
                requested: model.to_owned(),
                known: true,
                limits: m.clone(),
            },
            None => Resolved {
                requested: model.to_owned(),
                known: false,
                limits: self.strictest(model),
            },
        }
    }

    /// Every limit at its smallest over the table; adapter sizes that every model accepts.
    fn strictest(&self, name: &str) -> ModelLimits {
        let min = |f: fn(&ModelLimits) -> u64| self.models.iter().map(f).min().unwrap_or(0);
        let min32 = |f: fn(&ModelLimits) -> u32| self.models.iter().map(f).min().unwrap_or(0);
        let adapter_sizes = [1u8, 2, 4, 8, 16, 32]
            .into_iter()
            .filter(|s| self.models.iter().all(|m| m.adapter_sizes.contains(s)))
            .collect();
        ModelLimits {
            name: name.to_owned(),
            aliases: Vec::new(),
            max_example_tokens: min(|m| m.max_example_tokens),
            max_validation_examples: min(|m| m.max_validation_examples),
            max_training_examples_text: min(|m| m.max_training_examples_text),
            max_training_examples_multimodal: min(|m| m.max_training_examples_multimodal),
            max_training_file_bytes: min(|m| m.max_training_file_bytes),
            adapter_sizes,
            max_images_per_example: min32(|m| m.max_images_per_example),
            max_pdfs_per_example: min32(|m| m.max_pdfs_per_example),
            max_audio_per_example: min32(|m| m.max_audio_per_example),
            allow_local_uris: false,
            released: None,
            retires: None,
            successor: None,
            max_video_per_example: min32(|m| m.max_video_per_example),
            assumed: true,
            source: "strictest limits of the known models".into(),
            tuning_regions: Vec::new(),
            base_serving: regional_only(),
            tuned_serving: regional_only(),
            locations_source: String::new(),
            sampling: Sampling::default(),
        }
    }

    /// Refuses an adapter size the model does not accept, before anything is uploaded.
    pub fn check_adapter_size(&self, model: &str, size: u8) -> Result<(), String> {
        let r = self.resolve(model);
        if r.limits.adapter_sizes.contains(&size) {
            return Ok(());
        }
        let accepted: Vec<String> = r.limits.adapter_sizes.iter().map(u8::to_string).collect();
        let whose = if r.known {
            r.limits.name.clone()
        } else {
            format!("{model} (unknown model, so only sizes every known model accepts)")
        };
        Err(format!(
            "ADAPTER_SIZE {size} is not accepted by {whose}; accepted: {}",
            accepted.join(", ")
        ))
    }
}

/// Checks ADAPTER_SIZE against the built-in table (see [`ModelTable::check_adapter_size`] to
/// honour MODEL_LIMITS_FILE).
pub fn check_adapter_size(model: &str, size: u8) -> Result<(), String> {
    ModelTable::built_in().check_adapter_size(model, size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_table_parses() {
        let t = ModelTable::built_in();
        for name in [
            "gemini-2.5-flash",
            "gemini-2.5-flash-lite",
            "gemini-2.5-pro",
            "gemini-2.0-flash-001",
            "gemini-2.0-flash-lite-001",
            "gemini-3.5-flash",
            "gemini-3.5-flash-lite",
            "gemini-3.1-flash-lite",
            "gemini-3.8-flash",
        ] {
            let m = t.get(name).unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!(m.max_example_tokens, 131_072, "{name}");
            assert_eq!(m.max_validation_examples, 5_000, "{name}");
            assert_eq!(m.max_images_per_example, 30, "{name}");
            assert_eq!(m.max_pdfs_per_example, 4, "{name}");
            assert_eq!(
                m.assumed,
                ["gemini-3.5-flash-lite", "gemini-3.8-flash"].contains(&name),
                "{name}"
            );
        }
    }

    #[test]
    fn adapter_sizes_follow_the_table() {
        assert!(check_adapter_size("gemini-2.5-flash", 16).is_ok());
        assert!(check_adapter_size("gemini-2.5-flash-lite", 1).is_ok());
        let err = check_adapter_size("gemini-2.5-pro", 16).unwrap_err();
        assert!(err.contains("not accepted by gemini-2.5-pro"), "{err}");
        assert!(err.contains("1, 2, 4, 8"), "{err}");
        assert!(
            check_adapter_size("gemini-2.0-flash", 16).is_err(),
            "alias of 2.0-flash-001"
        );
        assert!(check_adapter_size("gemini-2.5-flash", 32).is_err());
        assert!(check_adapter_size("publishers/google/models/gemini-2.5-flash", 16).is_ok());
    }

    #[test]
    fn unknown_models_get_the_strictest_limits() {
        let t = ModelTable::built_in();
        let r = t.resolve("gemini-9-ultra");
        assert!(!r.known);
        assert!(r.warning().unwrap().contains("not in the model table"));
        assert_eq!(r.limits.adapter_sizes, vec![1, 2, 4, 8]);
        assert_eq!(r.limits.max_example_tokens, 131_072);
        assert!(t.check_adapter_size("gemini-9-ultra", 16).is_err());
        assert!(t.check_adapter_size("gemini-9-ultra", 8).is_ok());
        assert!(t.resolve("gemini-2.5-flash").warning().is_none());
        assert!(t.resolve("gemini-3.5-flash").warning().is_none());
        assert!(
            t.resolve("gemini-3.5-flash-lite")
                .warning()
                .unwrap()
                .contains("assumed")
        );
    }

    #[test]
    fn a_file_overrides_and_extends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("limits.json");
        std::fs::write(
            &path,
            r#"{"models":[
              {"name":"gemini-2.5-pro","max_example_tokens":1000,"max_validation_examples":10,
               "max_training_examples_text":100,"max_training_examples_multimodal":50,
               "max_training_file_bytes":1000000,"adapter_sizes":[1,2,4,8,16]},
              {"name":"my-model","max_example_tokens":64,"max_validation_examples":2,
               "max_training_examples_text":3,"max_training_examples_multimodal":2,
               "max_training_file_bytes":100,"adapter_sizes":[4],"max_images_per_example":2}]}"#,
        )
        .unwrap();
        let load = |p: &Path| {
            ModelTable::with_file(p, std::fs::read_to_string(p).map_err(|e| e.to_string()))
        };
        let t = load(&path).unwrap();
        assert_eq!(t.get("gemini-2.5-pro").unwrap().max_example_tokens, 1000);
        assert!(t.check_adapter_size("gemini-2.5-pro", 16).is_ok());
        let m = t.get("my-model").unwrap();
        assert_eq!((m.max_images_per_example, m.max_pdfs_per_example), (2, 4));
        assert_eq!(
            t.get("gemini-2.5-flash").unwrap().max_example_tokens,
            131_072
        );

        std::fs::write(&path, "{not json").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("limits.json"), "{err}");
        let err = load(&dir.path().join("missing.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.json"), "{err}");
    }

    #[test]
    fn retirement_is_checked_against_the_given_day() {
        let t = ModelTable::built_in();
        let day = |d: &str| d.parse::<chrono::NaiveDate>().unwrap();
        let current = t.resolve("gemini-3.5-flash");
        assert_eq!(
            current.check_retirement("SOURCE_MODEL", day("2026-11-29")),
            Ok(None)
        );
        let soon = current
            .check_retirement("SOURCE_MODEL", day("2027-04-25"))
            .unwrap()
            .unwrap();
        assert!(soon.contains("retires on 2027-05-19 (24 days"), "{soon}");
        let gone = current
            .check_retirement("SOURCE_MODEL", day("2027-05-19"))
            .unwrap_err();
        assert!(gone.contains("was retired on 2027-05-19"), "{gone}");
        let old = t
            .resolve("gemini-2.5-flash")
            .check_retirement("SOURCE_MODEL", day("2026-11-29"))
            .unwrap_err();
        assert!(
            old.contains("gemini-2.5-flash was retired on 2026-10-20")
                && old.contains("set SOURCE_MODEL to its successor gemini-3.1-flash-lite"),
            "{old}"
        );
        assert_eq!(
            t.resolve("my-own-model")
                .check_retirement("SOURCE_MODEL", day("2030-01-01")),
            Ok(None),
            "no dates known, nothing claimed"
        );
    }

    #[test]
    fn every_built_in_model_has_dates_and_a_source() {
        for m in ModelTable::built_in().models() {
            assert!(m.released.is_some(), "{}", m.name);
            assert!(
                m.retires.is_some() || m.source.contains("No retirement date announced"),
                "{}",
                m.name
            );
            assert!(m.retires.is_none() || m.retires > m.released, "{}", m.name);
            assert!(m.source.contains("https://"), "{}: {}", m.name, m.source);
            assert!(!m.locations_source.is_empty(), "{}: where it lives", m.name);
        }
    }

    #[test]
    fn gemini_3_is_tuned_in_two_regions_and_served_on_multi_regions() {
        let t = ModelTable::built_in();
        let m = t.get("gemini-3.5-flash").unwrap();
        assert!(m.check_tuning_location("us-central1").is_ok());
        assert!(m.check_tuning_location("europe-west4").is_ok());
        let err = m.check_tuning_location("asia-northeast1").unwrap_err();
        assert!(
            err.contains("gemini-3.5-flash can be tuned only in us-central1, europe-west4")
                && err.contains("LOCATION is asia-northeast1"),
            "{err}"
        );
        // The base model: the jurisdiction's multi-region endpoint, else the global one.
        assert_eq!(m.base_location("us-central1"), "us");
        assert_eq!(m.base_location("europe-west4"), "eu");
        assert_eq!(m.base_location("asia-northeast1"), "global");
        assert_eq!(m.base_location("global"), "global");
        // A tuned model named under its tuning region is tried on the multi-region first.
        assert_eq!(
            m.tuned_candidates("projects/p/locations/us-central1/endpoints/7"),
            vec![
                "projects/p/locations/us/endpoints/7".to_owned(),
                "projects/p/locations/us-central1/endpoints/7".to_owned()
            ]
        );
        assert_eq!(
            m.tuned_candidates("projects/p/locations/eu/endpoints/7"),
            vec!["projects/p/locations/eu/endpoints/7".to_owned()]
        );
        assert_eq!(m.sampling.temperature, Some(1.0));
        let lite = t.get("gemini-3.5-flash-lite").unwrap();
        assert_eq!(lite.sampling.temperature, None, "3.5 Flash-Lite ignores it");
    }

    #[test]
    fn gemini_2_stays_regional_and_unknown_models_refuse_no_location() {
        let t = ModelTable::built_in();
        let m = t.get("gemini-2.5-flash").unwrap();
        assert!(
            m.check_tuning_location("asia-northeast1").is_ok(),
            "no regions given"
        );
        assert_eq!(m.base_location("us-central1"), "us-central1");
        assert_eq!(
            m.base_location("us"),
            "global",
            "2.x is not on multi-region endpoints"
        );
        assert_eq!(
            m.tuned_candidates("projects/p/locations/us-central1/endpoints/7"),
            vec!["projects/p/locations/us-central1/endpoints/7".to_owned()]
        );
        assert_eq!(m.sampling.temperature, Some(0.0));
        let unknown = t.resolve("my-model").limits;
        assert!(unknown.check_tuning_location("anywhere-1").is_ok());
        assert_eq!(unknown.base_location("us-central1"), "us-central1");
    }
}
