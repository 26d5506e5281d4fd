//! The Vertex AI `tuningJobs.create` request body (`GoogleCloudAiplatformV1TuningJob` in
//! `pipeline/tests/contracts/aiplatform.v1.json`), field for field. Int64 fields are JSON strings, as
//! proto3 JSON wants them.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::locations::Hosts;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TuningJob {
    /// `SOURCE_MODEL`; absent in continuous tuning, where `preTunedModel` names the parent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_model: Option<String>,
    /// Continuous tuning (`TUNING_MODE=continuous`): the tuned model this job starts from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre_tuned_model: Option<PreTunedModel>,
    pub supervised_tuning_spec: SupervisedTuningSpec,
    /// Absent in continuous tuning: Vertex then keeps the parent's display name and adds a
    /// version under the parent Model; a new name would make a new Model (aiplatform.v1.json,
    /// `TuningJob.tunedModelDisplayName`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tuned_model_display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// `TUNING_SERVICE_ACCOUNT`: the identity the job runs as (Vertex's service agent when unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

/// `GoogleCloudAiplatformV1PreTunedModel`: the parent of a continuous tuning job.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PreTunedModel {
    /// `projects/{p}/locations/{l}/models/{m}[@{version}]`, the previous run's `tunedModel.model`.
    pub tuned_model_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SupervisedTuningSpec {
    pub training_dataset_uri: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_dataset_uri: Option<String>,
    #[serde(skip_serializing_if = "HyperParameters::is_empty")]
    pub hyper_parameters: HyperParameters,
    pub export_last_checkpoint_only: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HyperParameters {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch_count: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adapter_size: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learning_rate_multiplier: Option<f64>,
}

impl HyperParameters {
    fn is_empty(&self) -> bool {
        self.epoch_count.is_none()
            && self.adapter_size.is_none()
            && self.learning_rate_multiplier.is_none()
    }
}

/// The `AdapterSize` enum value for a size in settings.
pub fn adapter_size_enum(size: u8) -> Option<&'static str> {
    Some(match size {
        1 => "ADAPTER_SIZE_ONE",
        2 => "ADAPTER_SIZE_TWO",
        4 => "ADAPTER_SIZE_FOUR",
        8 => "ADAPTER_SIZE_EIGHT",
        16 => "ADAPTER_SIZE_SIXTEEN",
        32 => "ADAPTER_SIZE_THIRTY_TWO",
        _ => return None,
    })
}

/// Makes a label value acceptable to Vertex: lowercase letters, digits, `_` and `-`, at most
/// 63 characters.
pub fn label_value(s: &str) -> String {
    s.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect()
}

/// A digest of JSON values (settings, file digests): the run key and the dataset digest.
pub fn digest(parts: &serde_json::Value) -> String {
    use sha2::{Digest, Sha256};
    hex16(&Sha256::digest(parts.to_string().as_bytes()))
}

/// The first 16 bytes of a digest in hex: 128 bits name a dataset well enough.
fn hex16(digest: &[u8]) -> String {
    use std::fmt::Write;
    digest[..16].iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A create request: where it goes and what it says.
#[derive(Debug, Clone, Serialize)]
pub struct Request {
    pub url: String,
    pub body: TuningJob,
    /// Identifies the data and settings of this tuning: the same run key means the same job,
    /// so a retried or restarted run re-attaches instead of tuning twice.
    pub run_key: String,
}

/// Everything a create request takes from the settings: where it goes and how to tune.
#[derive(Debug, Clone)]
pub struct Template {
    /// `{root}/v1/projects/{project}/locations/{location}/tuningJobs`.
    pub jobs_url: String,
    /// LOCATION: where the job runs, and where a parent model must be.
    pub location: String,
    pub source_model: String,
    pub epochs: Option<u32>,
    /// 1, 2, 4, 8, 16 or 32.
    pub adapter_size: Option<u8>,
    pub learning_rate_multiplier: Option<f64>,
    /// `{run_id}` is replaced by the run id.
    pub display_name: String,
    pub service_account: Option<String>,
    /// `exportLastCheckpointOnly`: true only when EVAL_CHECKPOINTS is `last`; otherwise Vertex
    /// keeps an intermediate checkpoint about every epoch, each judged.
    pub export_last_checkpoint_only: bool,
}

impl Template {
    /// The jobs URL of a project and location, on the host `hosts` gives that location.
    pub fn jobs_url(hosts: &Hosts, project: &str, location: &str) -> String {
        hosts.url(&format!(
            "projects/{project}/locations/{location}/tuningJobs"
        ))
    }
}

/// The location of a model resource name (`projects/p/locations/l/models/m@v`).
pub fn model_location(name: &str) -> Option<&str> {
    crate::locations::location_of(name)
}

impl Request {
    pub fn build(
        t: &Template,
        run_id: &str,
        run_key: &str,
        train_uri: &str,
        validation_uri: Option<&str>,
    ) -> Self {
        let mut labels = BTreeMap::new();
        labels.insert("pipeline".to_owned(), "autotune".to_owned());
        labels.insert("autotune_run_id".to_owned(), label_value(run_id));
        labels.insert("autotune_run_key".to_owned(), label_value(run_key));
        let display: String = t
            .display_name
            .replace("{run_id}", run_id)
            .chars()
            .take(128)
            .collect();
        let body = TuningJob {
            base_model: Some(t.source_model.clone()),
            pre_tuned_model: None,
            supervised_tuning_spec: SupervisedTuningSpec {
                training_dataset_uri: train_uri.to_owned(),
                validation_dataset_uri: validation_uri.map(str::to_owned),
                hyper_parameters: HyperParameters {
                    epoch_count: t.epochs.map(|e| e.to_string()),
                    adapter_size: t.adapter_size.and_then(adapter_size_enum),
                    learning_rate_multiplier: t.learning_rate_multiplier,
                },
                export_last_checkpoint_only: t.export_last_checkpoint_only,
            },
            tuned_model_display_name: Some(display),
            description: Some(format!("autotune run {run_id}")),
            labels,
            service_account: t.service_account.clone(),
        };
        Self {
            url: t.jobs_url.clone(),
            body,
            run_key: run_key.to_owned(),
        }
    }

    /// Continuous tuning: start from `tuned_model_name` (the previous run's `tunedModel.model`)
    /// instead of `SOURCE_MODEL`, as a new version of that Model (no display name of its own),
    /// from its checkpoint `checkpoint` when the champion names one
    /// (`preTunedModel.checkpointId`; Vertex starts from the version's default checkpoint
    /// otherwise). The parent and its checkpoint are folded into the run key (and its label),
    /// because the same data tuned from another parent is another job; call this before using
    /// `run_key`.
    pub fn continue_from(&mut self, tuned_model_name: &str, checkpoint: Option<&str>) {
        use sha2::{Digest, Sha256};
        self.body.base_model = None;
        self.body.tuned_model_display_name = None;
        self.body.pre_tuned_model = Some(PreTunedModel {
            tuned_model_name: tuned_model_name.to_owned(),
            checkpoint_id: checkpoint.map(str::to_owned),
        });
        let mut h = Sha256::new();
        for part in [self.run_key.as_str(), "continue-from", tuned_model_name] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        // A run key without a checkpoint stays what it was before checkpoints were judged.
        if let Some(c) = checkpoint {
            for part in ["checkpoint", c] {
                h.update(part.as_bytes());
                h.update([0]);
            }
        }
        self.run_key = hex16(&h.finalize());
        self.body
            .labels
            .insert("autotune_run_key".to_owned(), label_value(&self.run_key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_stable_and_change_with_any_part() {
        let base = digest(&serde_json::json!(["a", 1]));
        assert_eq!(base, digest(&serde_json::json!(["a", 1])), "stable");
        assert_ne!(base, digest(&serde_json::json!(["a", 2])));
        assert_eq!(base.len(), 32);
    }

    fn template(export_last_checkpoint_only: bool) -> Template {
        Template {
            jobs_url: "u".into(),
            location: "us-central1".into(),
            source_model: "gemini-3.5-flash".into(),
            epochs: Some(3),
            adapter_size: None,
            learning_rate_multiplier: None,
            display_name: "m-{run_id}".into(),
            service_account: None,
            export_last_checkpoint_only,
        }
    }

    #[test]
    fn a_job_asks_for_checkpoints_and_continues_from_the_champions() {
        let all = Request::build(&template(false), "r", "k", "gs://b/t.jsonl", None);
        let body = serde_json::to_value(&all.body).unwrap();
        assert_eq!(
            body["supervisedTuningSpec"]["exportLastCheckpointOnly"],
            false
        );
        let last = Request::build(&template(true), "r", "k", "gs://b/t.jsonl", None);
        let body = serde_json::to_value(&last.body).unwrap();
        assert_eq!(
            body["supervisedTuningSpec"]["exportLastCheckpointOnly"],
            true
        );

        let parent = "projects/p/locations/us-central1/models/m@1";
        let mut plain = all.clone();
        plain.continue_from(parent, None);
        let mut from_two = all.clone();
        from_two.continue_from(parent, Some("2"));
        let body = serde_json::to_value(&from_two.body).unwrap();
        assert_eq!(body["preTunedModel"]["tunedModelName"], parent);
        assert_eq!(body["preTunedModel"]["checkpointId"], "2");
        assert!(
            serde_json::to_value(&plain.body).unwrap()["preTunedModel"]
                .get("checkpointId")
                .is_none()
        );
        assert_ne!(
            plain.run_key, from_two.run_key,
            "another checkpoint, another job"
        );
        let mut from_one = all;
        from_one.continue_from(parent, Some("1"));
        assert_ne!(from_one.run_key, from_two.run_key);
    }
}
