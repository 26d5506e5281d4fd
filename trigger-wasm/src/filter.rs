//! Which events start the job.
//!
//! Only a *finalize* (new object or new generation) of `BUCKET_NAME` under `RAW_DATA_FOLDER` or
//! `LABEL_FOLDER` with a sample or label extension can change the training set. Everything else,
//! above all the pipeline's own writes under `JSONL_FOLDER` and `MODEL_META_FOLDER` (which would
//! otherwise re-trigger the job in a loop), is ignored with a reason. Ignored events are answered
//! 200 so Pub/Sub and Eventarc do not redeliver them.
//!
//! What counts as a sample is the pipeline's own rule (`autotune-layout`): the trigger starts the
//! job exactly for the objects the job's inventory would count.

use autotune_layout::{Class, Ignored, OutputFolder};

use crate::config::FilterSettings;
use crate::event::{EventKind, StorageEvent};

/// Start the job, or ignore the event for the stated reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Start,
    Ignore(String),
}

/// Decides whether `ev` should start the job: a finalize in `BUCKET_NAME` of an object the
/// pipeline counts as a raw sample or a label ([`autotune_layout::Layout::classify`]).
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
    let l = &s.layout;
    let reason = match l.classify(name) {
        Class::Raw(_) | Class::Label(_) | Class::Both(..) => return Decision::Start,
        Class::Output(which) => format!(
            "object is under {} {:?} ({})",
            which.setting(),
            l.output_folder(which),
            match which {
                OutputFolder::Jsonl => "pipeline output",
                OutputFolder::ModelMeta => "pipeline metadata",
            }
        ),
        Class::Ignored(Ignored::FolderPlaceholder) => "object is a folder placeholder".into(),
        Class::Outside => format!(
            "object is under neither RAW_DATA_FOLDER {:?} nor LABEL_FOLDER {:?}",
            l.raw_folder(),
            l.label_folder()
        ),
        Class::Ignored(Ignored::CompressedMedia) => format!(
            "extension of {name:?} is not a sample extension: only text samples and labels \
             are read gzip-compressed"
        ),
        Class::Ignored(Ignored::Extension) => {
            format!("extension of {name:?} is not a sample or label extension")
        }
    };
    Decision::Ignore(reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Form;
    use autotune_layout::Layout;

    fn settings() -> FilterSettings {
        FilterSettings {
            bucket: "ml-bucket".into(),
            layout: Layout::new(
                "raw_training_data",
                "labels",
                "training_datasets",
                "trained_model",
            ),
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
        // Both input folders at the bucket root.
        s.layout = Layout::new("", "/", "training_datasets", "trained_model");
        let e = ev(EventKind::Finalize, "ml-bucket", "trained_model/x.json");
        assert!(matches!(decide(&e, &s), Decision::Ignore(_)));
        let e = ev(EventKind::Finalize, "ml-bucket", "anywhere/x.json");
        assert_eq!(decide(&e, &s), Decision::Start);
    }
}
