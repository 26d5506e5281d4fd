//! Converter throughput in text samples per second: one core, and all cores through rayon as
//! the pipeline runs it.

use autotune::convert::{Converter, Loaded, Uris};
use autotune::modality::Modality;
use autotune::sample::{LabelFile, LabelFormat, RawFile, Sample};
use autotune::storage::ObjectMeta;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;

fn sample(i: usize) -> (Sample, Uris, Loaded) {
    let meta = |k: String| ObjectMeta {
        key: k,
        size: 200,
        generation: "1".into(),
        checksum: None,
    };
    let key = format!("b{:03}/s{i:07}", i % 500);
    let sample = Sample {
        key: key.clone(),
        raw: RawFile {
            meta: meta(format!("raw/{key}.txt")),
            modality: Modality::Text,
            ext: "txt".into(),
            gzip: false,
        },
        label: LabelFile {
            meta: meta(format!("raw/{key}.json")),
            format: LabelFormat::Json,
            gzip: false,
        },
    };
    let uris = Uris {
        raw: format!("gs://bucket/raw/{key}.txt"),
        label: format!("gs://bucket/raw/{key}.json"),
    };
    let loaded = Loaded {
        raw_text: Some(format!("ticket {i}: {}", "lorem ipsum dolor sit amet ".repeat(7)).into()),
        label: format!(
            "{{\"category\":\"c{}\",\"priority\":\"p{}\"}}",
            i % 7,
            i % 3
        )
        .into(),
    };
    (sample, uris, loaded)
}

fn bench(c: &mut Criterion) {
    let converter = Converter {
        prompt: Some("Classify this support request. Answer with JSON.".into()),
        system_instruction: Some("You are a support triage assistant.".into()),
        label_field: None,
        ..Converter::default()
    };
    // The same examples from CONVERT_CONFIG templates reading label fields and sample facts.
    let templated = Converter {
        templates: autotune::convert::Templates::parse(
            "system_instruction = \"You are a support triage assistant.\"\n\
             prompt = \"Classify request {sample.key} ({sample.mime_type}). Answer with JSON.\"\n\
             answer = \"{label.category}/{label.priority}\"",
            "bench.toml",
        )
        .expect("the bench templates parse"),
        ..Converter::default()
    };
    let samples: Vec<_> = (0..10_000).map(sample).collect();
    let mut g = c.benchmark_group("converter");
    g.throughput(Throughput::Elements(samples.len() as u64));
    g.bench_function("text_samples_one_core", |b| {
        b.iter(|| {
            samples
                .iter()
                .filter(|(s, u, l)| converter.convert(s, u, l).is_ok())
                .count()
        });
    });
    g.bench_function("text_samples_rayon", |b| {
        b.iter(|| {
            samples
                .par_iter()
                .filter(|(s, u, l)| converter.convert(s, u, l).is_ok())
                .count()
        });
    });
    g.bench_function("text_samples_templates_one_core", |b| {
        b.iter(|| {
            samples
                .iter()
                .filter(|(s, u, l)| templated.convert(s, u, l).is_ok())
                .count()
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
