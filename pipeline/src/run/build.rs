//! The build stage: reads, converts and splits every sample, streams the train, validation and
//! rejects files, and checks each line against Vertex's rules as it is written.

use std::sync::Arc;

use crate::dataset::{self, Built, Paths};
use crate::evaluate::set::{Damaged, Frozen, Routing};
use crate::record::RunRecord;
use crate::split::Split;
use crate::storage::{self, Store};
use crate::validate;

use super::evaluate::HeldSet;
use super::{Gates, INDEX_FILE, Job, LINES_PREFIX, REJECTED_FILE, RunError};

/// What the build stage made: the datasets, the evaluation set the run holds to its
/// evaluation, and what the record says of that set.
pub(super) struct Build {
    pub(super) built: Built,
    pub(super) eval_set: Option<HeldSet>,
    /// The set in use could not judge: what was done about it.
    eval_set_repaired: Option<String>,
    eval_set_revised: Option<u64>,
    /// Rows in the set, and samples held out for it.
    eval: u64,
    eval_held_out: u64,
}

impl Build {
    /// Writes what the build did into the run's record.
    pub(super) fn record_into(&self, r: &mut RunRecord) {
        let built = &self.built;
        if let Some(message) = &self.eval_set_repaired {
            r.eval_set_repaired = Some(message.clone());
        }
        r.eval_set_revised = self.eval_set_revised;
        r.counts.eval = self.eval;
        r.counts.eval_held_out = self.eval_held_out;
        if let Some(set) = &self.eval_set {
            r.eval_set_id = Some(set.info.id.clone());
            r.new_eval_set = set.info.created_by_run == r.run_id && set.info.revised == 0;
        }
        r.counts.train = built.train_examples;
        r.counts.validation = built.validation_examples;
        r.counts.held_out = built.held_out;
        r.counts.rejected = built.rejected;
        r.counts.duplicates = built.duplicates;
        r.counts.eval_leaks = built.eval_leaks;
        r.counts.near_duplicates = built.near_duplicates;
        r.counts.eval_rows_with_copies_trained = built.eval_rows_with_copies_trained;
        r.counts.pinned_to_validation = built.pinned_to_validation;
        r.counts.reused = built.reused;
        r.lines_uri.clone_from(&built.lines_uri);
        r.counts
            .rejected_by_category
            .clone_from(&built.rejected_by_category);
        r.train_dataset_uri.clone_from(&built.train_uri);
        r.validation_dataset_uri.clone_from(&built.validation_uri);
        r.rejected_uri.clone_from(&built.rejected_uri);
        r.index_uri.clone_from(&built.index_uri);
        r.reject_examples = serde_json::to_value(&built.reject_examples).ok();
        r.personal_data = Some(built.personal_data.clone());
    }
}

impl Job {
    /// Converts and uploads the datasets into the run's folder; returns what was built.
    pub(super) async fn build_datasets(
        &self,
        run_id: &str,
        gates: &Gates,
        seed: &str,
        opened: Result<(Option<Frozen>, Option<Damaged>), RunError>,
    ) -> Result<Build, RunError> {
        let folder = storage::join(&self.config.jsonl_folder, run_id);
        let split = self.split(gates, seed);
        // The evaluation set in use, opened while gate 3 was checked again (`Job::ready`).
        let (mut current, mut damaged) = opened?;
        // A set whose rows trained (an older version ran with evaluation off) cannot judge:
        // it is replaced as a damaged one, loudly.
        if let Some(d) = self.contaminated(gates, current.as_ref()) {
            tracing::error!(object = %d.object, "{}; a new set is picked from content never trained", d.reason);
            current = None;
            damaged = Some(d);
        }
        let routing = self.eval_routing(gates, current.as_ref());
        let mut built =
            Box::pin(self.convert(&folder, run_id, gates, split, routing, None)).await?;
        // The rows picked for a new set move into it: the run holds them once, in the set,
        // through tuning and the evaluation (`Built` lives until the run ends).
        let picked = std::mem::take(&mut built.eval_rows);
        let picked_rows = picked.len() as u64;
        let (set, revised) = self
            .freeze_eval_set(run_id, &built, picked, current, damaged.as_ref())
            .await?;
        // A new set: its rows; the members of the set it replaced were held out.
        let replaced = set.as_ref().is_some_and(|s| {
            s.info.created_by_run == run_id
                && s.info.replaced.is_some()
                && !s.info.grown
                && s.info.revised == 0
        });
        let eval_set_repaired = damaged.as_ref().map(|d| {
            let done = match &set {
                Some(s) if s.info.created_by_run == run_id => format!(
                    "a new set {} of {} rows was picked and replaces it",
                    s.info.id, s.info.rows
                ),
                _ if self.config.evaluation.is_none() => "evaluation is off, so nothing replaced it and none of its rows could be held out; the next run with evaluation on picks a new set".to_owned(),
                _ => "no sample fell in a new set yet (EVAL_RATIO), so it stays until one does and the candidate is not judged".to_owned(),
            };
            let message = format!("the evaluation set cannot judge ({d}): {done}");
            tracing::warn!("{message}");
            message
        });
        let (eval, eval_held_out) = if replaced {
            (picked_rows, built.eval_held_out + built.eval_members)
        } else {
            (built.eval_members + picked_rows, built.eval_held_out)
        };
        tracing::info!(
            train = built.train_examples,
            validation = built.validation_examples,
            rejected = built.rejected,
            held_out = built.held_out,
            reused = built.reused,
            read_concurrency = built.read_concurrency,
            personal_data_redacted = built.personal_data.redacted,
            personal_data_rejected = built.personal_data.rejected,
            read_ahead = gates.ahead.as_ref().map_or(0, |a| a.counts().1),
            "datasets written"
        );
        Ok(Build {
            built,
            eval_set: set.map(Arc::new),
            eval_set_repaired,
            eval_set_revised: revised,
            eval,
            eval_held_out,
        })
    }

    /// Every sample's side, computed once.
    pub(super) fn split(&self, gates: &Gates, seed: &str) -> Arc<Split> {
        Arc::new(Split::assign(
            seed,
            self.config.split_ratio,
            gates.inventory.samples.iter().map(|x| x.key.as_str()),
        ))
    }

    /// The files of a run in `folder`.
    pub(super) fn paths(&self, folder: &str) -> Paths {
        Paths {
            train: storage::join(folder, &self.config.train_file),
            validation: storage::join(folder, &self.config.val_file),
            rejected: storage::join(folder, REJECTED_FILE),
            index: storage::join(folder, INDEX_FILE),
        }
    }

    /// The rules every written line is checked against.
    pub(super) fn validate_config(&self, dataset: validate::Dataset) -> validate::Config {
        let mut model = self.config.model.clone();
        model.limits.allow_local_uris = self.tuner.kind() == crate::tuner::TunerKind::DryRun
            && self.store.uri("x").starts_with("file://");
        validate::Config {
            dataset,
            model,
            check_files: false,
            max_findings: 20,
            epochs: self.config.epochs,
            price_per_million_training_tokens: self.config.price_per_million_training_tokens,
        }
    }

    /// The baseline's line store and, per sample, the content digest its manifest gives when
    /// the sample's objects are unchanged since; `None` for a full rebuild, or when there is
    /// no such store.
    fn previous_lines(&self, gates: &Gates) -> Option<dataset::PreviousLines> {
        if self.config.full_rebuild {
            return None;
        }
        let uri = gates.baseline.as_ref()?.record.lines_uri.as_ref()?;
        let key = uri.strip_prefix(&self.store.uri(""))?.to_owned();
        let c = gates.comparison.as_ref()?;
        let known = c
            .changed
            .iter()
            .zip(&c.previous)
            .map(|(&changed, &digest)| digest.filter(|_| !changed))
            .collect();
        Some(dataset::PreviousLines {
            key,
            known: Arc::new(known),
        })
    }

    /// Converts every sample into `folder` of `sink` (default: the bucket itself); the line
    /// store goes beside the records, named by `run_id`.
    pub(super) async fn convert(
        &self,
        folder: &str,
        run_id: &str,
        gates: &Gates,
        split: Arc<Split>,
        eval: Arc<Routing>,
        sink: Option<Arc<dyn Store>>,
    ) -> Result<Built, RunError> {
        let samples = gates.inventory.samples.clone();
        let check = validate::line_options(&self.validate_config(validate::Dataset::Training));
        let progress = crate::logging::progress_bar(samples.len() as u64, self.progress);
        let built = Box::pin(dataset::build(
            self.store.clone(),
            samples,
            &gates.inventory.ambiguous,
            split,
            self.config.converter.clone(),
            &dataset::Options {
                read_concurrency: self.config.read_concurrency,
                max_text_bytes: self.config.max_text_bytes,
                near_duplicates: self.config.near_duplicates,
                // Evaluation rows held during the build count inside MAX_BYTES_IN_FLIGHT.
                max_bytes_in_flight: if eval.holds_rows() {
                    self.config.max_bytes_in_flight - self.eval_bytes()
                } else {
                    self.config.max_bytes_in_flight
                },
                paths: self.paths(folder),
                sink,
                check: Some(Arc::new(check)),
                pinned: Arc::new(
                    gates
                        .comparison
                        .as_ref()
                        .map(|c| c.validation.clone())
                        .unwrap_or_default(),
                ),
                eval,
                lines: Some(dataset::Incremental {
                    out: storage::join(
                        &self.config.model_meta_folder,
                        &format!("{LINES_PREFIX}{run_id}.bin.{}", crate::compress::EXTENSION),
                    ),
                    previous: self.previous_lines(gates),
                }),
                ahead: gates.ahead.clone(),
                personal: self.config.personal_data,
            },
            &progress,
        ))
        .await?;
        progress.finish_and_clear();
        Ok(built)
    }
}
