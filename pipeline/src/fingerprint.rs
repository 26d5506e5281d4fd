//! Near-duplicate fingerprints: MinHash signatures of a sample's words, banded for
//! locality-sensitive hashing (LSH), and an index that keeps one sample per cluster.
//!
//! Two samples are near-duplicates when the Jaccard similarity of their sets of word
//! shingles reaches a threshold: the same ticket with a changed date, other whitespace or
//! another signature. A text is cut into words (runs of letters and digits, lower-cased;
//! whitespace and punctuation never count), and a shingle is [`SHINGLE`] consecutive words.
//!
//! * **MinHash** (Broder, 1997): for each of [`PERMUTATIONS`] hash functions `h_i`, the
//!   signature keeps the least `h_i(s)` over the text's shingles. Two texts have the same least
//!   value for `h_i` with probability equal to their Jaccard similarity, so the share of equal
//!   positions estimates it. Each position keeps the lowest 8 bits of its least value (b-bit
//!   MinHash, Li and König, 2010; 64 bytes a sample): two different least values agree by
//!   chance with probability 1/256, which raises an estimate by at most 0.004.
//! * **LSH** (Indyk and Motwani, 1998; Leskovec, Rajaraman and Ullman, *Mining of Massive
//!   Datasets*, ch. 3): the signature is cut into `b` bands of `r` rows; two samples are
//!   candidates when one band is equal, which happens with probability `1 - (1 - J^r)^b`, an
//!   S-curve whose step sits near `(1/b)^(1/r)`. For a threshold, [`Bands::for_threshold`]
//!   picks the `(b, r)` whose curve has the least area of false positives below the threshold
//!   plus false negatives above it (weighted: a false candidate costs a comparison, a missed one
//!   a duplicate). Every candidate is then verified on its estimated
//!   similarity, so a band that matches by chance never makes a duplicate.
//!
//! Fingerprints are kept from run to run, so they must not change between versions: words are
//! hashed with XXH3-64 (a specified hash, through the `twox-hash` crate) and the permutations
//! come from a fixed SplitMix64 sequence. Changing any constant here changes [`FORMAT`]. The
//! MinHash crates (gaoya, last released 2023; datasketch-minhash-lsh 0.0.1, "a partial
//! reimplementation") draw their hash functions from a random generator or an unpinned
//! hasher, which a signature stored by one version and read by the next cannot use.

use hashbrown::HashTable;
use twox_hash::XxHash3_64;

/// Words per shingle.
pub const SHINGLE: usize = 2;
/// Hash functions per signature.
pub const PERMUTATIONS: usize = 64;
/// The version of the fingerprint: words, shingles, hashes and permutations. A stored
/// fingerprint of another version is computed again.
pub const FORMAT: u32 = 1;

/// The default similarity at or above which two samples are near-duplicates.
pub const DEFAULT_THRESHOLD: f64 = 0.6;

/// The seed of the word hash and of the permutation sequence.
const SEED: u64 = 0x6175_746f_7475_6e65; // "autotune"

/// A sample's MinHash signature.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; PERMUTATIONS]);

impl Fingerprint {
    /// The fingerprint of a text (with its label, when the caller appends it); `None` for a
    /// text with no word, which has nothing to compare.
    pub fn of(text: &str) -> Option<Self> {
        Self::of_texts([text])
    }

    /// The fingerprint of texts read one after the other (the turns of an example), as of
    /// their words in one sequence.
    pub fn of_texts<'a>(texts: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        let permutations = permutations();
        let mut least = [u64::MAX; PERMUTATIONS];
        let mut window = [0u64; SHINGLE];
        let mut words = 0usize;
        let mut add = |shingle: u64| {
            for (l, (a, b)) in least.iter_mut().zip(permutations.iter()) {
                *l = (*l).min(a.wrapping_mul(shingle).wrapping_add(*b));
            }
        };
        for word in texts.into_iter().flat_map(words_of) {
            window.rotate_left(1);
            window[SHINGLE - 1] = word;
            words += 1;
            if words >= SHINGLE {
                add(shingle_hash(&window));
            }
        }
        match words {
            0 => return None,
            // A text shorter than a shingle is one shingle of all its words.
            n if n < SHINGLE => add(shingle_hash(&window[SHINGLE - n..])),
            _ => {}
        }
        let mut signature = [0u8; PERMUTATIONS];
        for (s, l) in signature.iter_mut().zip(least) {
            *s = l as u8;
        }
        Some(Self(signature))
    }

    /// The fingerprint of a tuning example (one line of a dataset): the text of its turns,
    /// user and model, in order. The system instruction is left out: it is the same for every
    /// line of a run and would make short samples look alike. `None` for a line that is not
    /// an example, has no word, or carries media (`fileData`, `inlineData`): an image's
    /// example has the same prompt as every other and a short label, so its text says
    /// nothing of the image and two different screenshots would look alike.
    pub fn of_line(line: &str) -> Option<Self> {
        // Only the turns' text is read, borrowed from the line where it has no escape.
        #[derive(serde::Deserialize)]
        struct Example<'a> {
            #[serde(borrow)]
            contents: Vec<Content<'a>>,
        }
        #[derive(serde::Deserialize)]
        struct Content<'a> {
            #[serde(borrow, default)]
            parts: Vec<Part<'a>>,
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Part<'a> {
            #[serde(borrow, default)]
            text: Option<std::borrow::Cow<'a, str>>,
            #[serde(default)]
            file_data: Option<serde::de::IgnoredAny>,
            #[serde(default)]
            inline_data: Option<serde::de::IgnoredAny>,
        }
        let example: Example<'_> = serde_json::from_str(line).ok()?;
        let parts = || example.contents.iter().flat_map(|c| &c.parts);
        if parts().any(|p| p.file_data.is_some() || p.inline_data.is_some()) {
            return None;
        }
        Self::of_texts(parts().filter_map(|p| p.text.as_deref()))
    }

    /// The fingerprint of Vertex `Content`s: the text parts of every turn, in order; `None`
    /// when a part carries media (see [`Fingerprint::of_line`]).
    pub fn of_contents(contents: &[serde_json::Value]) -> Option<Self> {
        let parts = || {
            contents
                .iter()
                .filter_map(|c| c.get("parts")?.as_array())
                .flatten()
        };
        if parts().any(|p| p.get("fileData").is_some() || p.get("inlineData").is_some()) {
            return None;
        }
        Self::of_texts(
            contents
                .iter()
                .filter_map(|c| c.get("parts")?.as_array())
                .flatten()
                .filter_map(|p| p.get("text")?.as_str()),
        )
    }

    /// The estimated Jaccard similarity of the two texts' shingles.
    pub fn similarity(&self, other: &Self) -> f64 {
        // At most PERMUTATIONS (64): exact in f64.
        #[allow(clippy::cast_precision_loss)]
        let share = self.agreeing(other) as f64 / PERMUTATIONS as f64;
        share
    }

    /// The positions on which two signatures agree.
    fn agreeing(&self, other: &Self) -> usize {
        self.0
            .iter()
            .zip(other.0.iter())
            .filter(|(a, b)| a == b)
            .count()
    }

    /// The signature as bytes, to keep with the manifest.
    pub fn to_bytes(&self) -> [u8; PERMUTATIONS] {
        self.0
    }

    /// A signature [`Fingerprint::to_bytes`] wrote; `None` for bytes of another length.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(Self(bytes.try_into().ok()?))
    }
}

/// The words of a text: runs of letters and digits, lower-cased, each hashed.
fn words_of(text: &str) -> impl Iterator<Item = u64> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            if w.bytes().any(|b| b.is_ascii_uppercase() || !b.is_ascii()) {
                XxHash3_64::oneshot_with_seed(SEED, w.to_lowercase().as_bytes())
            } else {
                XxHash3_64::oneshot_with_seed(SEED, w.as_bytes())
            }
        })
}

/// One hash of a shingle's words, in their order.
fn shingle_hash(words: &[u64]) -> u64 {
    words.iter().fold(SEED, |h, &w| mix(h.rotate_left(23) ^ w))
}

/// SplitMix64's finaliser: every input bit moves every output bit.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The permutations `x ↦ a·x + b (mod 2^64)`, `a` odd, from a fixed SplitMix64 sequence.
fn permutations() -> &'static [(u64, u64); PERMUTATIONS] {
    static TABLE: std::sync::OnceLock<[(u64, u64); PERMUTATIONS]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut state = SEED;
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            mix(state)
        };
        std::array::from_fn(|_| (next() | 1, next()))
    })
}

/// How much a false candidate counts against a missed one when choosing the cut: every
/// candidate is verified, so a false one costs a comparison and a missed one a duplicate.
const FALSE_POSITIVE_WEIGHT: f64 = 0.2;

/// How a signature is cut for LSH: `bands` bands of `rows` positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bands {
    pub bands: usize,
    pub rows: usize,
}

impl Bands {
    /// The cut whose candidate curve `1 - (1 - s^r)^b` best separates similarities below
    /// `threshold` from those above: the least area of false positives (below) plus false
    /// negatives (above), integrated numerically.
    pub fn for_threshold(threshold: f64) -> Self {
        let area = |b: usize, r: usize, from: f64, to: f64, above: bool| {
            const STEPS: u32 = 200;
            let width = (to - from) / f64::from(STEPS);
            (0..STEPS)
                .map(|i| {
                    let s = from + (f64::from(i) + 0.5) * width;
                    let p = candidate_probability(s, b, r);
                    width * if above { 1.0 - p } else { p }
                })
                .sum::<f64>()
        };
        (1..=PERMUTATIONS)
            .map(|rows| Self {
                bands: PERMUTATIONS / rows,
                rows,
            })
            .min_by(|x, y| {
                let cost = |c: &Self| {
                    FALSE_POSITIVE_WEIGHT * area(c.bands, c.rows, 0.0, threshold, false)
                        + (1.0 - FALSE_POSITIVE_WEIGHT)
                            * area(c.bands, c.rows, threshold, 1.0, true)
                };
                cost(x).total_cmp(&cost(y))
            })
            .expect("at least one cut")
    }

    /// The positions of band `band` of a signature.
    fn of<'a>(&self, fingerprint: &'a Fingerprint, band: usize) -> &'a [u8] {
        &fingerprint.0[band * self.rows..(band + 1) * self.rows]
    }

    /// The hash of a band's positions (the hash tables' hash; equal bands are then compared
    /// position by position).
    fn hash(positions: &[u8]) -> u64 {
        positions.iter().fold(SEED, |h, &v| mix(h ^ u64::from(v)))
    }
}

/// The probability that two texts of similarity `s` share a band.
fn candidate_probability(s: f64, bands: usize, rows: usize) -> f64 {
    let (b, r) = (
        i32::try_from(bands).unwrap_or(i32::MAX),
        i32::try_from(rows).unwrap_or(i32::MAX),
    );
    1.0 - (1.0 - s.powi(r)).powi(b)
}

/// The samples kept so far, one per cluster of near-duplicates, by band.
///
/// [`Index::admit`] keeps a sample that matches no kept one and names the kept sample a
/// near-duplicate matches; only kept samples are indexed, so whoever comes first in the
/// caller's order stands for its cluster. [`Index::matches`] only looks (the evaluation set's
/// rows against a sample).
#[derive(Debug)]
pub struct Index<Id> {
    /// The threshold as agreeing positions: at least this many of [`PERMUTATIONS`].
    least_agreeing: usize,
    bands: Bands,
    kept: Vec<(Id, Fingerprint)>,
    /// One table per band of the kept samples' positions in `kept`, hashed by that band's
    /// positions (four bytes and a control byte a sample and band: hashbrown's `HashTable`
    /// keeps no keys, the band is read from the kept signature).
    tables: Vec<HashTable<u32>>,
}

/// What [`Index::admit`] did with a sample.
#[derive(Debug, Clone, PartialEq)]
pub enum Admitted<'a, Id> {
    /// It matched no kept sample and is kept.
    Kept,
    /// It is a near-duplicate of this kept sample, at this estimated similarity.
    Duplicate(&'a Id, f64),
}

impl<Id> Index<Id> {
    /// An empty index for Jaccard similarity `threshold` (0 < threshold ≤ 1).
    pub fn new(threshold: f64) -> Self {
        Self::with_capacity(threshold, 0)
    }

    /// [`Index::new`] with room for `capacity` samples (its tables never grow past them).
    pub fn with_capacity(threshold: f64, capacity: usize) -> Self {
        let bands = Bands::for_threshold(threshold);
        // threshold in (0, 1]: at most PERMUTATIONS (64) positions.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let least_agreeing = (threshold * PERMUTATIONS as f64).ceil() as usize;
        Self {
            least_agreeing,
            bands,
            kept: Vec::with_capacity(capacity),
            tables: (0..bands.bands)
                .map(|_| HashTable::with_capacity(capacity))
                .collect(),
        }
    }

    /// The number of kept samples.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// No sample kept yet.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// The kept sample most similar to `fingerprint` at or above the threshold, with the
    /// similarity; the first kept wins a tie.
    pub fn matches(&self, fingerprint: &Fingerprint) -> Option<(&Id, f64)> {
        self.best(fingerprint).map(|(i, s)| (&self.kept[i].0, s))
    }

    /// [`Index::matches`], by position in `kept`.
    fn best(&self, fingerprint: &Fingerprint) -> Option<(usize, f64)> {
        let mut best: Option<(usize, usize)> = None;
        for (band, table) in self.tables.iter().enumerate() {
            let positions = self.bands.of(fingerprint, band);
            for &at in table.iter_hash(Bands::hash(positions)) {
                let i = at as usize;
                let kept = &self.kept[i].1;
                if self.bands.of(kept, band) != positions {
                    continue;
                }
                let agreeing = kept.agreeing(fingerprint);
                let better = best.is_none_or(|(j, a)| agreeing > a || (agreeing == a && i < j));
                if agreeing >= self.least_agreeing && better {
                    best = Some((i, agreeing));
                }
            }
        }
        best.map(|(i, _)| (i, self.kept[i].1.similarity(fingerprint)))
    }

    /// Keeps `fingerprint`, whatever it matches.
    ///
    /// # Panics
    /// When more than `u32::MAX` samples are kept.
    pub fn insert(&mut self, id: Id, fingerprint: Fingerprint) {
        let at = u32::try_from(self.kept.len()).expect("fewer than 2^32 kept samples");
        let (bands, kept) = (self.bands, &self.kept);
        for (band, table) in self.tables.iter_mut().enumerate() {
            let hash = Bands::hash(bands.of(&fingerprint, band));
            table.insert_unique(hash, at, |&i| {
                Bands::hash(bands.of(&kept[i as usize].1, band))
            });
        }
        self.kept.push((id, fingerprint));
    }

    /// Keeps `fingerprint` unless it is a near-duplicate of a kept sample, which is named.
    pub fn admit(&mut self, id: Id, fingerprint: Fingerprint) -> Admitted<'_, Id> {
        if let Some((i, s)) = self.best(&fingerprint) {
            return Admitted::Duplicate(&self.kept[i].0, s);
        }
        self.insert(id, fingerprint);
        Admitted::Kept
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// A planted corpus: `n` distinct tickets of `words` random words (with a date and a
    /// signature), and for each a near-copy with one ordinary edit: another date, other
    /// whitespace, another signature, or one word changed. Each text with its ticket number,
    /// originals and copies shuffled (whichever comes first stands for its pair).
    fn planted(seed: u64, n: usize, words: usize) -> Vec<(String, usize)> {
        let mut rng = StdRng::seed_from_u64(seed);
        let vocabulary: Vec<String> = (0..5000)
            .map(|i| format!("w{i}{}", ["a", "e", "o", "u", "ing", "ed"][i % 6]))
            .collect();
        let names = ["Ana", "Bo", "Chen", "Dara", "Eli", "Fay", "Gus", "Hana"];
        let mut corpus = Vec::new();
        for ticket in 0..n {
            let body: Vec<&str> = (0..words)
                .map(|_| vocabulary.choose(&mut rng).expect("words").as_str())
                .collect();
            let date = |rng: &mut StdRng| {
                format!(
                    "2026-{:02}-{:02}",
                    rng.gen_range(1..=12),
                    rng.gen_range(1..=28)
                )
            };
            let name = *names.choose(&mut rng).expect("names");
            let day = date(&mut rng);
            let original = format!("On {day} {}\nRegards, {name}", body.join(" "));
            let copy = match rng.gen_range(0..4) {
                0 => format!("On {} {}\nRegards, {name}", date(&mut rng), body.join(" ")),
                1 => format!("On  {day}   {}\n\n  Regards,\t{name}", body.join("  ")),
                2 => format!("On {day} {}\nSent from my phone", body.join(" ")),
                _ => {
                    let mut edited = body.clone();
                    let at = rng.gen_range(0..edited.len());
                    edited[at] = vocabulary.choose(&mut rng).expect("words");
                    format!("On {day} {}\nRegards, {name}", edited.join(" "))
                }
            };
            corpus.push((original, ticket));
            corpus.push((copy, ticket));
        }
        corpus.shuffle(&mut rng);
        corpus
    }

    /// Recall (near-copies found) and precision (duplicates flagged that are copies of the
    /// ticket they name) over a planted corpus, at `threshold`.
    fn measure(seed: u64, n: usize, words: usize, threshold: f64) -> (f64, f64) {
        let corpus = planted(seed, n, words);
        let mut index = Index::new(threshold);
        let (mut flagged, mut right) = (0usize, 0usize);
        for (i, (text, _)) in corpus.iter().enumerate() {
            let fingerprint = Fingerprint::of(text).expect("words");
            if let Admitted::Duplicate(&j, _) = index.admit(i, fingerprint) {
                flagged += 1;
                right += usize::from(corpus[i].1 == corpus[j].1);
            }
        }
        #[allow(clippy::cast_precision_loss)]
        let recall = right as f64 / n as f64;
        #[allow(clippy::cast_precision_loss)]
        let precision = if flagged == 0 {
            1.0
        } else {
            right as f64 / flagged as f64
        };
        (recall, precision)
    }

    #[test]
    fn planted_near_copies_are_found_and_distinct_tickets_are_not() {
        for (words, label) in [(30, "200 B"), (250, "1.5 KB")] {
            let (recall, precision) = measure(7, 1000, words, DEFAULT_THRESHOLD);
            assert!(recall >= 0.95, "{label}: recall {recall}");
            assert!(precision >= 0.99, "{label}: precision {precision}");
        }
    }

    #[test]
    fn distinct_tickets_on_one_template_are_not_near_duplicates() {
        // Support tickets written on one form: a third of each text is the form's words.
        let mut rng = StdRng::seed_from_u64(11);
        let vocabulary: Vec<String> = (0..5000).map(|i| format!("v{i}")).collect();
        let form = "Dear support team, I am writing about my recent order. Details follow:";
        let mut index = Index::new(DEFAULT_THRESHOLD);
        let mut flagged = 0;
        for i in 0..2000 {
            let body: Vec<&str> = (0..20)
                .map(|_| vocabulary.choose(&mut rng).expect("words").as_str())
                .collect();
            let text = format!("{form} {}. Thank you, customer {i}", body.join(" "));
            let fingerprint = Fingerprint::of(&text).expect("words");
            flagged += usize::from(index.admit(i, fingerprint) != Admitted::Kept);
        }
        assert!(
            flagged <= 20,
            "{flagged} of 2000 distinct tickets flagged (at most 1%)"
        );
    }

    /// Found in the bulk-upload test with one-permutation hashing: texts of four or five
    /// words fill few bins, densification copies them into the rest, and two samples sharing
    /// one pair of words were estimated at 0.61. Independent hash functions keep the estimate
    /// near the true 0.14.
    #[test]
    fn short_samples_that_share_a_form_are_not_near_duplicates() {
        let mut index = Index::new(DEFAULT_THRESHOLD);
        let flagged = (0..2000)
            .filter(|i| {
                let f =
                    Fingerprint::of(&format!("question number {i} answer a{i}")).expect("words");
                index.admit(*i, f) != Admitted::Kept
            })
            .count();
        assert_eq!(
            flagged, 0,
            "{flagged} of 2000 distinct short samples flagged"
        );
    }

    #[test]
    fn the_cut_follows_the_threshold() {
        for t in [0.5, 0.7, 0.8, 0.9] {
            let c = Bands::for_threshold(t);
            assert!(c.bands * c.rows <= PERMUTATIONS);
        }
        let low = Bands::for_threshold(0.5);
        let high = Bands::for_threshold(0.9);
        assert!(low.rows < high.rows, "{low:?} {high:?}");
    }

    #[test]
    fn whitespace_case_and_punctuation_do_not_count() {
        let a = Fingerprint::of("Hello, world: my order 42 did not arrive!").expect("words");
        let b = Fingerprint::of("hello world   MY order 42 did not arrive").expect("words");
        assert_eq!(a, b);
        assert!(Fingerprint::of(" \n\t.,;").is_none());
        let short = Fingerprint::of("Refund").expect("a word");
        assert_eq!(short, Fingerprint::of("refund!").expect("a word"));
        assert!(short.similarity(&Fingerprint::of("Return").expect("a word")) < 0.1);
    }

    #[test]
    fn a_line_is_fingerprinted_by_its_turns_without_the_system_instruction() {
        let line = r#"{"systemInstruction":{"parts":[{"text":"You sort tickets into queues."}]},"contents":[{"role":"user","parts":[{"text":"My card was charged twice"}]},{"role":"model","parts":[{"text":"billing"}]}]}"#;
        let bare = r#"{"contents":[{"role":"user","parts":[{"text":"my card was charged twice!"}]},{"role":"model","parts":[{"text":"Billing"}]}]}"#;
        let of_line = Fingerprint::of_line(line).expect("an example");
        assert_eq!(Some(&of_line), Fingerprint::of_line(bare).as_ref());
        assert_eq!(
            Fingerprint::of("My card was charged twice. billing"),
            Some(of_line)
        );
        assert_eq!(Fingerprint::of_line("not json"), None);
        // Two different screenshots with the same prompt and a similar label: no fingerprint.
        let image = r#"{"contents":[{"role":"user","parts":[{"fileData":{"mimeType":"image/png","fileUri":"gs://b/a.png"}},{"text":"Classify this support request."}]},{"role":"model","parts":[{"text":"{\"category\":\"bug\"}"}]}]}"#;
        assert_eq!(Fingerprint::of_line(image), None);
        assert_eq!(Fingerprint::of_line(r#"{"contents":[]}"#), None);
    }

    #[test]
    fn a_fingerprint_reads_back_and_never_changes_between_versions() {
        let f = Fingerprint::of("the same ticket, every version").expect("words");
        assert_eq!(Fingerprint::from_bytes(&f.to_bytes()), Some(f.clone()));
        assert_eq!(Fingerprint::from_bytes(&[0; 3]), None);
        // Pinned: a change of words, hash or permutations must change FORMAT (and this).
        let head: Vec<u8> = f.0[..4].to_vec();
        assert_eq!(head, PINNED, "fingerprint FORMAT {FORMAT} changed");
    }

    const PINNED: [u8; 4] = [218, 171, 12, 90];
}
