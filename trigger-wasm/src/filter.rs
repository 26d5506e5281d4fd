//! Which events start the job.
//!
//! Only a *finalize* (new object or new generation) of `BUCKET_NAME` under `RAW_DATA_FOLDER` or
//! `LABEL_FOLDER` with a sample or label extension can change the training set. Everything else,
//! above all the pipeline's own writes under `JSONL_FOLDER` and `MODEL_META_FOLDER` (which would
//! otherwise re-trigger the job in a loop), is ignored with a reason. Ignored events are answered
//! 200 so Pub/Sub and Eventarc do not redeliver them.

use crate::config::FilterSettings;
use crate::event::{EventKind, StorageEvent};

/// Media whose `.gz` form is not a sample: the pipeline only decompresses text raw files and
/// labels on the fly (issue 2).
const BINARY_MEDIA: &[&str] = &[
    "png", "jpg", "jpeg", "webp", "gif", "pdf", "mp3", "wav", "flac", "m4a", "ogg", "mp4", "mov",
    "webm",
];

/// Start the job, or ignore the event for the stated reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Start,
    Ignore(String),
}

/// Decides whether `ev` should start the job.
pub fn decide(ev: &StorageEvent, s: &FilterSettings) -> Decision {
    if ev.kind != EventKind::Finalize {
        return Decision::Ignore(format!("event type {} is not an object finalize", ev.kind));
    }
    if ev.bucket != s.bucket {
        return Decision::Ignore(format!(
            "bucket {:?} is not BUCKET_NAME {:?}",
            ev.bucket, s.bucket
        ));
    }
    let name = ev.object.as_str();
    // Exclusions first: they win even when the folders overlap with the input folders.
    if under(name, &s.jsonl_folder) {
        return Decision::Ignore(format!(
            "object is under JSONL_FOLDER {:?} (pipeline output)",
            s.jsonl_folder
        ));
    }
    if under(name, &s.model_meta_folder) {
        return Decision::Ignore(format!(
            "object is under MODEL_META_FOLDER {:?} (pipeline metadata)",
            s.model_meta_folder
        ));
    }
    if name.ends_with('/') {
        return Decision::Ignore("object is a folder placeholder".into());
    }
    let in_raw = under(name, &s.raw_folder);
    let in_label = under(name, &s.label_folder);
    if !in_raw && !in_label {
        return Decision::Ignore(format!(
            "object is under neither RAW_DATA_FOLDER {:?} nor LABEL_FOLDER {:?}",
            s.raw_folder, s.label_folder
        ));
    }
    if (in_raw && has_extension(name, &s.raw_extensions))
        || (in_label && has_extension(name, &s.label_extensions))
    {
        return Decision::Start;
    }
    Decision::Ignore(format!(
        "extension of {name:?} is not a sample or label extension"
    ))
}

/// `name` lies below `folder` (`""` = bucket root).
fn under(name: &str, folder: &str) -> bool {
    folder.is_empty()
        || name
            .strip_prefix(folder)
            .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1)
}

/// Case-insensitive extension match; `x.txt.gz` counts as `txt` unless `txt` is binary media.
fn has_extension(name: &str, exts: &[String]) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name).to_ascii_lowercase();
    let (base, gz) = match base.strip_suffix(".gz") {
        Some(b) => (b.to_owned(), true),
        None => (base, false),
    };
    exts.iter().any(|e| {
        let Some(stem) = base.strip_suffix(e.as_str()) else {
            return false;
        };
        // A real stem before the dot: ".json" alone is a hidden file, not a sample.
        let ok = stem.len() > 1 && stem.ends_with('.');
        ok && !(gz && BINARY_MEDIA.contains(&e.as_str()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Form;

    fn settings() -> FilterSettings {
        FilterSettings {
            bucket: "ml-bucket".into(),
            raw_folder: "raw_training_data".into(),
            label_folder: "labels".into(),
            jsonl_folder: "training_datasets".into(),
            model_meta_folder: "trained_model".into(),
            raw_extensions: crate::config::DEFAULT_RAW_EXTENSIONS
                .split(',')
                .map(str::to_owned)
                .collect(),
            label_extensions: vec!["json".into(), "txt".into()],
        }
    }

    fn ev(kind: EventKind, bucket: &str, object: &str) -> StorageEvent {
        StorageEvent {
            form: Form::PubSubPush,
            kind,
            id: "1".into(),
            bucket: bucket.into(),
            object: object.into(),
            generation: Some("7".into()),
        }
    }

    fn d(object: &str) -> Decision {
        decide(&ev(EventKind::Finalize, "ml-bucket", object), &settings())
    }

    #[test]
    fn samples_and_labels_start() {
        for o in [
            "raw_training_data/a.png",
            "raw_training_data/nested/deeper/a.PDF",
            "raw_training_data/a.txt.gz",
            "labels/a.json",
            "labels/sub/a.JSON.gz",
        ] {
            assert_eq!(d(o), Decision::Start, "{o}");
        }
    }

    #[test]
    fn everything_else_is_ignored_with_a_reason() {
        let cases = [
            ("training_datasets/run1/sft_train.jsonl", "JSONL_FOLDER"),
            ("trained_model/model_metadata_1.json", "MODEL_META_FOLDER"),
            ("trained_model/training.lock.json", "MODEL_META_FOLDER"),
            ("raw_training_data/", "folder placeholder"),
            ("raw_training_data/sub/", "folder placeholder"),
            ("other/a.png", "neither"),
            ("raw_training_datax/a.png", "neither"),
            ("raw_training_data/a.exe", "extension"),
            ("raw_training_data/a.png.gz", "extension"),
            ("labels/a.png", "extension"),
            ("raw_training_data/.txt", "extension"),
            ("raw_training_data/txt", "extension"),
        ];
        for (o, why) in cases {
            match d(o) {
                Decision::Ignore(r) => assert!(r.contains(why), "{o}: {r}"),
                Decision::Start => panic!("{o} should be ignored"),
            }
        }
    }

    #[test]
    fn other_buckets_and_kinds_are_ignored() {
        let s = settings();
        let o = "raw_training_data/a.png";
        for kind in [
            EventKind::Delete,
            EventKind::Archive,
            EventKind::MetadataUpdate,
            EventKind::Other("x".into()),
        ] {
            let Decision::Ignore(r) = decide(&ev(kind, "ml-bucket", o), &s) else {
                panic!("non-finalize started");
            };
            assert!(r.contains("not an object finalize"), "{r}");
        }
        let Decision::Ignore(r) = decide(&ev(EventKind::Finalize, "other", o), &s) else {
            panic!("other bucket started");
        };
        assert!(r.contains("BUCKET_NAME"));
    }

    #[test]
    fn exclusions_win_over_overlapping_input_folders() {
        let mut s = settings();
        s.raw_folder = String::new(); // bucket root
        s.label_folder = String::new();
        let e = ev(EventKind::Finalize, "ml-bucket", "trained_model/x.json");
        assert!(matches!(decide(&e, &s), Decision::Ignore(_)));
        let e = ev(EventKind::Finalize, "ml-bucket", "anywhere/x.json");
        assert_eq!(decide(&e, &s), Decision::Start);
    }
}
