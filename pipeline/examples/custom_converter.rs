//! A custom converter: a rule templates cannot express, on top of the built-in converter.
//!
//! Labels here look like `{"tags": ["billing", "refund"], "spam": false}`. The model should
//! answer with the tags joined by commas, in sorted order, and samples marked as spam should not
//! be trained on at all. A template can only place a field; this needs a little code. The
//! converter computes the answer, then hands the sample to the built-in [`Converter`] with a
//! rewritten label, so it keeps every built-in check (UTF-8, sizes, token limit, `fileData`)
//! and the prompt settings.
//!
//! Run it with `cargo run -p autotune --example custom_converter`.

#![allow(clippy::print_stdout, reason = "an example shows its result on stdout")]

use autotune::convert::{Converter, Loaded, SampleConverter, Uris};
use autotune::modality::Modality;
use autotune::sample::{Category, LabelFile, LabelFormat, RawFile, Reject, Sample};
use autotune::storage::ObjectMeta;
use autotune::validate::{ModelTable, rules};

/// Sorted, comma-joined tags as the answer; spam is skipped.
struct TagConverter {
    inner: Converter,
}

impl SampleConverter for TagConverter {
    fn convert(&self, sample: &Sample, uris: &Uris, loaded: &Loaded) -> Result<String, Reject> {
        let reject =
            |category, reason: &str| Reject::new(&sample.key, &uris.label, category, reason);
        // Bad input is a reject, never a panic: the other samples go on.
        let label: serde_json::Value = serde_json::from_slice(&loaded.label)
            .map_err(|e| reject(Category::MalformedLabel, &format!("not JSON: {e}")))?;
        if label["spam"] == true {
            return Err(reject(Category::EmptyLabel, "marked as spam"));
        }
        let mut tags: Vec<&str> = label["tags"]
            .as_array()
            .ok_or_else(|| reject(Category::MissingField, "no `tags` array"))?
            .iter()
            .filter_map(serde_json::Value::as_str)
            .collect();
        tags.sort_unstable();
        let rewritten = Loaded {
            raw_text: loaded.raw_text.clone(),
            label: serde_json::json!({ "answer": tags.join(", ") })
                .to_string()
                .into(),
        };
        self.inner.convert(sample, uris, &rewritten)
    }
}

fn sample(key: &str) -> (Sample, Uris) {
    let meta = |k: String| ObjectMeta {
        key: k,
        size: 40,
        generation: "1".into(),
        checksum: None,
    };
    let sample = Sample {
        key: key.to_owned(),
        raw: RawFile {
            meta: meta(format!("raw_training_data/{key}.txt")),
            modality: Modality::Text,
            ext: "txt".into(),
            gzip: false,
        },
        label: LabelFile {
            meta: meta(format!("raw_training_data/{key}.json")),
            format: LabelFormat::Json,
            gzip: false,
        },
    };
    let uris = Uris {
        raw: format!("gs://my-bucket/raw_training_data/{key}.txt"),
        label: format!("gs://my-bucket/raw_training_data/{key}.json"),
    };
    (sample, uris)
}

fn main() {
    let converter: Box<dyn SampleConverter> = Box::new(TagConverter {
        inner: Converter {
            prompt: Some("Tag this support request.".into()),
            label_field: Some("/answer".into()),
            ..Converter::default()
        },
    });
    let limits = ModelTable::built_in().resolve("gemini-2.5-flash").limits;
    for (key, text, label) in [
        (
            "t1",
            "I was charged twice and want my money back.",
            r#"{"tags":["refund","billing"],"spam":false}"#,
        ),
        ("t2", "WIN A PRIZE NOW", r#"{"tags":["promo"],"spam":true}"#),
    ] {
        let (sample, uris) = sample(key);
        let loaded = Loaded {
            raw_text: Some(text.to_owned().into()),
            label: label.to_owned().into(),
        };
        match converter.convert(&sample, &uris, &loaded) {
            Ok(line) => {
                // The line passes the same rules `autotune validate` applies.
                let mut findings = rules::Findings::new(10);
                rules::check_line(line.as_bytes(), 1, &limits, &mut findings, None);
                println!("{key}: {line}");
                println!("{key}: {} validation finding(s)", findings.total());
            }
            Err(r) => println!("{key}: rejected ({:?}): {}", r.category, r.reason),
        }
    }
}
