//! Token and cost estimate.
//!
//! Tokens are estimated locally, before anything is uploaded, by documented rules: text by the
//! four-characters-a-token rule of [`crate::convert::estimate_tokens`], media by Google's
//! per-image, per-page and per-second rates (the constants below, each with its source). Vertex
//! bills supervised tuning by the tokens of the training dataset times the epochs; validation
//! examples are reported but not billed. No price is built in: the cost is computed only from
//! PRICE_PER_MILLION_TRAINING_TOKENS, which the user sets from Google's current price list.

use serde::Serialize;

// --- Media token rates, all in one place. ---------------------------------------------------
// Source: Google's Gemini token documentation ("Understand and count tokens", Vertex AI
// generative AI docs, 2025): images 258 tokens each (up to 384 px a side; larger images are
// tiled, which this estimate ignores), documents 258 tokens a page, audio 32 tokens a second,
// video 263 tokens a second (frames at 1 fps plus the audio track).

/// Tokens of one image.
pub const TOKENS_PER_IMAGE: u64 = 258;
/// Tokens of one PDF page.
pub const TOKENS_PER_PDF_PAGE: u64 = 258;
/// Tokens of one second of audio.
pub const TOKENS_PER_AUDIO_SECOND: u64 = 32;
/// Tokens of one second of video (with its audio).
pub const TOKENS_PER_VIDEO_SECOND: u64 = 263;

// The JSONL names a file but does not say how long it is, and reading every object would cost
// more than the validation itself. These assumptions are deliberately modest, so that they do
// not raise false per-example errors; a `videoMetadata` clip (startOffset/endOffset) replaces
// the assumed video length.

/// Pages assumed for a PDF (or `text/plain` document) passed by URI.
pub const ASSUMED_PDF_PAGES: u64 = 5;
/// Seconds assumed for an audio file.
pub const ASSUMED_AUDIO_SECONDS: u64 = 60;
/// Seconds assumed for a video without `videoMetadata` offsets.
pub const ASSUMED_VIDEO_SECONDS: u64 = 60;

/// Counts of tokens per example in log2 buckets: bucket 0 holds 0 tokens, bucket `i` holds
/// `[2^(i-1), 2^i)`. 65 counters cover every `u64`, so the histogram has a fixed size whatever
/// the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: [u64; 65],
}

impl Default for Histogram {
    fn default() -> Self {
        Self { counts: [0; 65] }
    }
}

/// One non-empty histogram bucket: `from <= tokens < to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Bucket {
    pub from: u64,
    /// Exclusive; `None` for the top bucket, which has no representable bound.
    pub to: Option<u64>,
    pub count: u64,
}

impl Histogram {
    pub fn add(&mut self, tokens: u64) {
        self.counts[(u64::BITS - tokens.leading_zeros()) as usize] += 1;
    }

    pub fn merge(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
    }

    /// The non-empty buckets, smallest first.
    pub fn buckets(&self) -> Vec<Bucket> {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, &count)| {
                let (from, to) = match i {
                    0 => (0, Some(1)),
                    64 => (1 << 63, None),
                    _ => (1u64 << (i - 1), Some(1u64 << i)),
                };
                Bucket { from, to, count }
            })
            .collect()
    }
}

impl Serialize for Histogram {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.buckets().serialize(s)
    }
}

/// Tokens of one dataset (training or validation).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SetEstimate {
    pub examples: u64,
    pub tokens: u64,
    pub max_example_tokens: u64,
    pub histogram: Histogram,
}

impl SetEstimate {
    pub fn add(&mut self, tokens: u64) {
        self.examples += 1;
        self.tokens = self.tokens.saturating_add(tokens);
        self.max_example_tokens = self.max_example_tokens.max(tokens);
        self.histogram.add(tokens);
    }

    pub fn merge(&mut self, other: &Self) {
        self.examples += other.examples;
        self.tokens = self.tokens.saturating_add(other.tokens);
        self.max_example_tokens = self.max_example_tokens.max(other.max_example_tokens);
        self.histogram.merge(&other.histogram);
    }

    pub fn mean_example_tokens(&self) -> u64 {
        self.tokens.checked_div(self.examples).unwrap_or(0)
    }
}

/// The estimate of a tuning job: tokens of both datasets, billed tokens and cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    pub train: SetEstimate,
    pub validation: SetEstimate,
    /// EPOCHS, or 1 when unset (the estimate then covers one pass).
    pub epochs: u32,
    /// Training tokens times epochs: what Vertex bills.
    pub training_tokens: u64,
    /// PRICE_PER_MILLION_TRAINING_TOKENS, when set.
    pub price_per_million_training_tokens: Option<f64>,
    /// `training_tokens × price / 1e6`, in the price's currency.
    pub cost: Option<f64>,
}

impl Estimate {
    pub fn new(
        train: SetEstimate,
        validation: SetEstimate,
        epochs: Option<u32>,
        price_per_million: Option<f64>,
    ) -> Self {
        let epochs = epochs.unwrap_or(1).max(1);
        let training_tokens = train.tokens.saturating_mul(u64::from(epochs));
        let cost = price_per_million.map(|p| training_tokens as f64 * p / 1e6);
        Self {
            train,
            validation,
            epochs,
            training_tokens,
            price_per_million_training_tokens: price_per_million,
            cost,
        }
    }

    /// The budget gate: a message saying by how much the billed tokens exceed
    /// MAX_TRAINING_TOKENS, or `None` within budget.
    pub fn exceeds(&self, max_training_tokens: u64) -> Option<String> {
        if self.training_tokens <= max_training_tokens {
            return None;
        }
        let over = self.training_tokens - max_training_tokens;
        let pct = if max_training_tokens == 0 {
            String::new()
        } else {
            format!(
                " ({:.1}% over)",
                over as f64 * 100.0 / max_training_tokens as f64
            )
        };
        Some(format!(
            "the estimated {} training tokens ({} tokens in {} examples × {} epoch{}) exceed MAX_TRAINING_TOKENS {} by {}{}",
            self.training_tokens,
            self.train.tokens,
            self.train.examples,
            self.epochs,
            if self.epochs == 1 { "" } else { "s" },
            max_training_tokens,
            over,
            pct
        ))
    }
}

/// Tokens of a PDF or text document passed by URI.
pub fn document_tokens() -> u64 {
    ASSUMED_PDF_PAGES * TOKENS_PER_PDF_PAGE
}

/// Tokens of an audio file.
pub fn audio_tokens() -> u64 {
    ASSUMED_AUDIO_SECONDS * TOKENS_PER_AUDIO_SECOND
}

/// Tokens of a video, of `seconds` when a clip is given.
pub fn video_tokens(seconds: Option<f64>) -> u64 {
    let secs = seconds.map_or(ASSUMED_VIDEO_SECONDS, |s| s.max(1.0).ceil() as u64);
    secs.saturating_mul(TOKENS_PER_VIDEO_SECOND)
}

/// Parses a protobuf JSON duration such as `"1.5s"`.
pub fn parse_duration_seconds(s: &str) -> Option<f64> {
    let v: f64 = s.strip_suffix('s')?.parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_uses_log2_buckets() {
        let mut h = Histogram::default();
        for t in [0, 1, 2, 3, 4, 1000, 1023, 1024, u64::MAX] {
            h.add(t);
        }
        let b = h.buckets();
        let find = |from: u64| b.iter().find(|x| x.from == from).map(|x| (x.to, x.count));
        assert_eq!(find(0), Some((Some(1), 1)));
        assert_eq!(find(1), Some((Some(2), 1)));
        assert_eq!(find(2), Some((Some(4), 2)), "2 and 3");
        assert_eq!(find(4), Some((Some(8), 1)));
        assert_eq!(find(512), Some((Some(1024), 2)), "1000 and 1023");
        assert_eq!(find(1024), Some((Some(2048), 1)));
        assert_eq!(find(1 << 63), Some((None, 1)));
        assert_eq!(b.iter().map(|x| x.count).sum::<u64>(), 9);
    }

    #[test]
    fn totals_multiply_by_epochs_and_price() {
        let mut train = SetEstimate::default();
        train.add(300_000);
        train.add(700_000);
        let mut val = SetEstimate::default();
        val.add(10);
        let e = Estimate::new(train, val, Some(3), Some(2.0));
        assert_eq!(e.training_tokens, 3_000_000);
        assert_eq!(e.cost, Some(6.0));
        assert_eq!(e.train.mean_example_tokens(), 500_000);
        assert_eq!(e.train.max_example_tokens, 700_000);
        assert_eq!(
            e.validation.tokens, 10,
            "validation is counted but not billed"
        );
        let none = Estimate::new(e.train.clone(), SetEstimate::default(), None, None);
        assert_eq!(
            (none.epochs, none.training_tokens, none.cost),
            (1, 1_000_000, None)
        );
    }

    #[test]
    fn exceeds_says_by_how_much() {
        let mut train = SetEstimate::default();
        train.add(1_000);
        let e = Estimate::new(train, SetEstimate::default(), Some(2), None);
        assert_eq!(e.exceeds(2_000), None);
        assert_eq!(e.exceeds(5_000), None);
        let msg = e.exceeds(1_500).unwrap();
        assert!(msg.contains("2000 training tokens"), "{msg}");
        assert!(msg.contains("by 500"), "{msg}");
        assert!(msg.contains("33.3% over"), "{msg}");
        assert!(msg.contains("× 2 epochs"), "{msg}");
        assert!(e.exceeds(0).unwrap().contains("by 2000"));
    }

    #[test]
    fn media_rules() {
        assert_eq!(document_tokens(), 5 * 258);
        assert_eq!(audio_tokens(), 60 * 32);
        assert_eq!(video_tokens(None), 60 * 263);
        assert_eq!(video_tokens(Some(9.5)), 10 * 263);
        assert_eq!(parse_duration_seconds("1.5s"), Some(1.5));
        assert_eq!(parse_duration_seconds("15"), None);
        assert_eq!(parse_duration_seconds("-1s"), None);
    }
}
