//! Inventory: streams the listings of the raw and label folders and pairs them into samples.
//!
//! A sample is a raw file and a label file with the same path relative to their folders, less
//! the extension (`a/b/x.png` pairs with `a/b/x.json`). Extensions match case-insensitively;
//! `.gz` text and label files count under their inner extension. Only keys and versions are
//! kept in memory, never contents. When the folders are the same, one file may qualify as raw
//! text and as a label (`x.txt`); it then pairs with the other file of its stem, never with
//! itself, and a stem with more candidates than one pair can use is rejected as ambiguous.
//! Which names are samples is decided by `autotune-layout`, which the trigger shares.
//!
//! ```text
//!  raw folder ──┐ key ranges (Cloud Storage), each listed at once, each in key order
//!               ├─ merged by path relative to the folder ──▶ Pairing ──▶ samples (sorted)
//!  label folder ┘                      │ each file a sample may read ──▶ `listed` (read-ahead)
//! ```
//!
//! Listings come in key order, so a stem is paired as soon as its range's listing has passed
//! it (`Pairing`): only the stems around each range's position are held. Nested folders,
//! or a listing out of order, are paired at the end instead.

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use autotune_layout::{Class, Layout};
use futures::stream::{self, BoxStream, FusedStream};
use futures::{Stream, StreamExt};
use serde::Serialize;

use crate::sample::{Category, LabelFile, RawFile, Sample};
use crate::storage::{ObjectMeta, Store, StoreError};

/// How many unpaired files the report names.
const NAMED_UNPAIRED: usize = 10;

/// A stem that could not be paired unambiguously, or a name that could not be listed.
#[derive(Debug, Clone, Serialize)]
pub struct Ambiguity {
    pub key: String,
    pub objects: Vec<String>,
    /// `Ambiguous`, `InvalidName` or `NotARegularFile`.
    pub category: Category,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct Inventory {
    /// Sorted by key, so every later step is deterministic. Shared with the build stage
    /// rather than copied: at 100,000 samples the keys and versions are most of the memory.
    pub samples: Arc<Vec<Sample>>,
    pub unpaired_raw: u64,
    pub unpaired_labels: u64,
    /// The first few unpaired objects, for the report.
    pub unpaired_examples: Vec<String>,
    pub ambiguous: Vec<Ambiguity>,
    /// Files under the folders with no raw or label extension.
    pub ignored: u64,
    /// The most stems held unpaired at once while listing: the whole bucket's when pairing
    /// waited for the end of the listing, a few when it paired as the listing arrived.
    pub groups_held: usize,
}

/// Which objects are samples: the folders and extensions of an [`autotune_layout::Layout`],
/// the rules the trigger applies to upload events too.
#[derive(Debug, Clone)]
pub struct Rules {
    layout: Layout,
}

impl Rules {
    pub fn new(layout: Layout) -> Self {
        Self { layout }
    }

    /// The layout the rules apply.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
}

/// A stem's candidate files. A file that can be either (`x.txt` when the folders are the same)
/// is listed once, with the raws, carrying how it reads as a label: one copy of its name and
/// version, not two.
#[derive(Default)]
struct Group {
    raws: Vec<(RawFile, Option<AsLabel>)>,
    labels: Vec<LabelFile>,
}

impl Group {
    /// Takes in the files of the same stem from another key range.
    fn absorb(&mut self, other: Group) {
        if self.raws.is_empty() && self.labels.is_empty() {
            *self = other;
            return;
        }
        self.raws.extend(other.raws);
        self.labels.extend(other.labels);
    }
}

/// How a raw file that is also a label candidate reads as a label.
#[derive(Clone, Copy)]
struct AsLabel {
    format: crate::sample::LabelFormat,
    gzip: bool,
}

impl AsLabel {
    fn label(self, meta: crate::storage::ObjectMeta) -> LabelFile {
        LabelFile {
            meta,
            format: self.format,
            gzip: self.gzip,
        }
    }
}

/// Objects a listed key range should hold, about: five pages of Cloud Storage's listing.
const OBJECTS_PER_RANGE: usize = 5000;
/// Key ranges listed at once, at most.
const MAX_RANGES: usize = 8;

/// Where to cut a folder's listing into ranges listed at once, from sample keys a previous run
/// saw (any order): one range per [`OBJECTS_PER_RANGE`] objects (a sample is two), at most
/// [`MAX_RANGES`]. A bucket that changed since only makes the ranges uneven.
pub fn split_points<'a>(keys: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut keys: Vec<&str> = keys.filter(|k| !k.is_empty()).collect();
    let ranges = (keys.len() * 2 / OBJECTS_PER_RANGE).clamp(1, MAX_RANGES);
    if ranges == 1 {
        return Vec::new();
    }
    keys.sort_unstable();
    let mut cuts: Vec<String> = (1..ranges)
        .map(|i| keys[i * keys.len() / ranges].to_owned())
        .collect();
    cuts.dedup();
    cuts
}

/// A listed file a sample may read, told as the listing streams in (before pairing).
pub struct Listed<'a> {
    /// The sample key it would belong to.
    pub stem: &'a str,
    pub meta: &'a ObjectMeta,
    pub gzip: bool,
    /// It can be a sample's raw text (media are never read).
    pub text: bool,
    /// It can be a sample's label.
    pub label: bool,
}

/// Where to cut a first listing (no previous run's keys) into ranges: at the folders one
/// listing page names under the first input folder, at most [`MAX_RANGES`] ranges, relative to
/// the folder as [`split_points`] are. Nothing on a store that does not list ranges by itself,
/// or a folder with fewer than two subfolders.
pub async fn folder_splits(store: &dyn Store, rules: &Rules) -> Result<Vec<String>, StoreError> {
    let Some(prefix) = rules.layout.list_prefixes().into_iter().next() else {
        return Ok(Vec::new());
    };
    if !store.lists_ranges() {
        return Ok(Vec::new());
    }
    let folders: Vec<String> = store
        .folder_hint(prefix)
        .await?
        .into_iter()
        .filter_map(|f| f.strip_prefix(prefix).map(str::to_owned))
        .filter(|f| !f.is_empty())
        .collect();
    let ranges = folders.len().min(MAX_RANGES);
    if ranges < 2 {
        return Ok(Vec::new());
    }
    let mut cuts: Vec<String> = (1..ranges)
        .map(|i| folders[i * folders.len() / ranges].clone())
        .collect();
    cuts.sort();
    cuts.dedup();
    Ok(cuts)
}

/// Lists the folders and pairs their files.
pub async fn take(store: &dyn Store, rules: &Rules) -> Result<Inventory, StoreError> {
    take_in_ranges(store, rules, &[], &mut |_| {}).await
}

/// [`take`], listing each folder as key ranges at once, cut before each of `splits` (sample
/// keys, sorted), when the store lists ranges by themselves ([`Store::lists_ranges`]). Each
/// file a sample may read is told to `listed` as it arrives.
pub async fn take_in_ranges(
    store: &dyn Store,
    rules: &Rules,
    splits: &[String],
    listed: &mut (dyn FnMut(Listed<'_>) + Send),
) -> Result<Inventory, StoreError> {
    let layout = &rules.layout;
    // Nested folders are listed as one, in which labels do not come in their stems' order.
    let apart = layout.list_prefixes().len() == 2;
    if apart || layout.raw_folder() == layout.label_folder() {
        if let Some(inv) = take_listed(store, rules, splits, listed, true).await? {
            return Ok(inv);
        }
        tracing::warn!(
            folder = %store.uri(layout.raw_folder()),
            "the listing came out of key order: listed again, paired at the end"
        );
    }
    take_listed(store, rules, splits, listed, false)
        .await
        .map(Option::unwrap_or_default)
}

/// The listing and pairing of [`take_in_ranges`]. `streaming`: paired as the listings arrive
/// ([`Pairing`]), two folders listed at once and merged; otherwise one folder after the
/// other, paired at the end. `None` when a listing came out of key order.
async fn take_listed(
    store: &dyn Store,
    rules: &Rules,
    splits: &[String],
    listed: &mut (dyn FnMut(Listed<'_>) + Send),
    streaming: bool,
) -> Result<Option<Inventory>, StoreError> {
    let ranges = key_ranges(store, splits);
    let mut pairing = Pairing::new(store, if streaming { ranges.len() } else { 1 });
    let mut listing = listings(store, &rules.layout.list_prefixes(), &ranges, streaming);
    while let Some((range, folder, meta)) = listing.next().await {
        let meta = match meta {
            Ok(m) => m,
            Err(e) => {
                unlisted(&mut pairing.inv, rules, e)?;
                continue;
            }
        };
        let range = if streaming {
            let relative = meta.key.get(folder..).unwrap_or(&meta.key);
            if !pairing.advance(range, relative, &ranges[range]) {
                return Ok(None);
            }
            range
        } else {
            0
        };
        pairing.count_held();
        let (raw, label) = match rules.layout.classify(&meta.key) {
            Class::Output(_) => continue,
            Class::Outside | Class::Ignored(_) => {
                pairing.inv.ignored += 1;
                continue;
            }
            Class::Raw(r) => (Some(r), None),
            Class::Label(l) => (None, Some(l)),
            Class::Both(r, l) => (Some(r), Some(l)),
        };
        if let Some(stem) = raw.map(|r| r.stem).or(label.map(|l| l.stem)) {
            let text = raw.is_some_and(|r| r.modality == crate::modality::Modality::Text);
            if text || label.is_some() {
                listed(Listed {
                    stem,
                    meta: &meta,
                    gzip: raw.map_or_else(|| label.is_some_and(|l| l.gzip), |r| r.gzip),
                    text,
                    label: label.is_some(),
                });
            }
        }
        // Owned before the listing's entry moves into the group: the names borrow its key.
        let raw = raw.map(|r| {
            let ext = shared(&mut pairing.exts, r.ext);
            (r.stem.to_owned(), r.modality, ext, r.gzip)
        });
        let label = label.map(|l| (l.stem.to_owned(), l.format, l.gzip));
        let groups = &mut pairing.groups[range];
        match (raw, label) {
            (Some((stem, modality, ext, gzip)), label) => {
                let raw = RawFile {
                    meta,
                    modality,
                    ext,
                    gzip,
                };
                let as_label = label.map(|(_, format, gzip)| AsLabel { format, gzip });
                push_one(&mut groups.entry(stem).or_default().raws, (raw, as_label));
            }
            (None, Some((stem, format, gzip))) => {
                push_one(
                    &mut groups.entry(stem).or_default().labels,
                    LabelFile { meta, format, gzip },
                );
            }
            (None, None) => {}
        }
    }
    Ok(Some(pairing.finish()))
}

/// A key range of a listing, relative to the folder: from the first cut (or the start) to
/// the second (or the end).
type KeyRange = (Option<String>, Option<String>);

/// The key ranges `splits` cut a folder into; one, the whole folder, on a store that does not
/// list ranges by itself.
fn key_ranges(store: &dyn Store, splits: &[String]) -> Vec<KeyRange> {
    if splits.is_empty() || !store.lists_ranges() {
        return vec![(None, None)];
    }
    let bounds: Vec<Option<String>> = std::iter::once(None)
        .chain(splits.iter().cloned().map(Some))
        .chain(std::iter::once(None))
        .collect();
    bounds
        .windows(2)
        .map(|w| (w[0].clone(), w[1].clone()))
        .collect()
}

/// Files put together into samples. Streaming, per key range: listings come in key order, and
/// every file of a stem `s` is named `s.<ext>` relative to its folder, so once a range's
/// listing reaches a key outside `s + "."`, no more files of `s` will come from that range,
/// and `s` is paired and its group let go. Only the stems around each range's position are
/// held, not a group for every stem of the bucket. A stem whose files a range's cut may part
/// (the cut starts with `s + "."`) waits, with its files from every range, for the end.
/// Otherwise one range holds every stem, paired at the end.
struct Pairing<'s> {
    store: &'s dyn Store,
    /// Per key range: the last key listed (relative to its folder), and the stems unpaired.
    last: Vec<String>,
    groups: Vec<BTreeMap<String, Group>>,
    /// Stems a cut may part, paired once every range is listed.
    parted: BTreeMap<String, Group>,
    samples: Vec<Sample>,
    /// The extensions seen, shared by their samples.
    exts: Vec<Arc<str>>,
    inv: Inventory,
}

impl<'s> Pairing<'s> {
    fn new(store: &'s dyn Store, ranges: usize) -> Self {
        Self {
            store,
            last: vec![String::new(); ranges],
            groups: std::iter::repeat_with(BTreeMap::new).take(ranges).collect(),
            parted: BTreeMap::new(),
            samples: Vec::new(),
            exts: Vec::new(),
            inv: Inventory::default(),
        }
    }

    /// Range `r`'s listing reached `relative`: the stems it has passed are paired (or set
    /// aside when a cut of `bounds` may part them). `false`: the listing came out of order.
    fn advance(&mut self, r: usize, relative: &str, bounds: &KeyRange) -> bool {
        let last = &mut self.last[r];
        if relative < last.as_str() {
            return false;
        }
        last.clear();
        last.push_str(relative);
        let groups = &mut self.groups[r];
        if !groups.keys().any(|stem| !in_block(last, stem)) {
            return true;
        }
        for (stem, group) in std::mem::take(groups) {
            if in_block(last, &stem) {
                groups.insert(stem, group);
            } else if [&bounds.0, &bounds.1]
                .into_iter()
                .any(|cut| cut.as_deref().is_some_and(|c| in_block(c, &stem)))
            {
                self.parted.entry(stem).or_default().absorb(group);
            } else {
                self.samples
                    .extend(pair_one(&mut self.inv, self.store, stem, group));
            }
        }
        true
    }

    fn count_held(&mut self) {
        let held = self.parted.len() + self.groups.iter().map(BTreeMap::len).sum::<usize>();
        self.inv.groups_held = self.inv.groups_held.max(held);
    }

    /// Pairs what is left, once every listing ended.
    fn finish(mut self) -> Inventory {
        self.count_held();
        for groups in std::mem::take(&mut self.groups) {
            for (stem, group) in groups {
                self.parted.entry(stem).or_default().absorb(group);
            }
        }
        let mut inv = self.inv;
        let mut samples = self.samples;
        for (key, group) in self.parted {
            samples.extend(pair_one(&mut inv, self.store, key, group));
        }
        // Already sorted when paired as one listing arrived.
        if !samples.is_sorted_by(|a, b| a.key <= b.key) {
            samples.sort_by(|a, b| a.key.cmp(&b.key));
        }
        samples.shrink_to_fit();
        inv.samples = Arc::new(samples);
        inv.ambiguous.sort_by(|a, b| a.key.cmp(&b.key));
        inv.unpaired_examples.sort();
        inv.unpaired_examples.truncate(NAMED_UNPAIRED);
        inv
    }
}

/// A listing error that is one object's problem goes into the report; others end the listing.
fn unlisted(inv: &mut Inventory, rules: &Rules, e: StoreError) -> Result<(), StoreError> {
    match e {
        // A name the backend cannot represent is that object's problem, not the run's.
        StoreError::InvalidKey { key, reason } => {
            // The job's own folders are not samples (a leftover temporary file there is
            // removed by the run holding the lock).
            if matches!(rules.layout.classify(&key), Class::Output(_)) {
                return Ok(());
            }
            inv.ambiguous.push(Ambiguity {
                key: key.clone(),
                objects: vec![key],
                category: Category::InvalidName,
                reason,
            });
            Ok(())
        }
        // A link or a special file: never read, reported as that object's problem.
        StoreError::NotARegularFile { key, uri, reason } => {
            if !matches!(rules.layout.classify(&key), Class::Output(_)) {
                inv.ambiguous.push(Ambiguity {
                    key,
                    objects: vec![uri],
                    category: Category::NotARegularFile,
                    reason,
                });
            }
            Ok(())
        }
        e => Err(e),
    }
}

/// Whether a key (relative to its folder) may still be a file of `stem`: `stem + "." + …`.
fn in_block(relative: &str, stem: &str) -> bool {
    relative
        .strip_prefix(stem)
        .is_some_and(|k| k.starts_with('.'))
}

/// The sample of a stem, if its files pair; what cannot pair goes into `inv`.
fn pair_one(
    inv: &mut Inventory,
    store: &dyn Store,
    key: String,
    mut group: Group,
) -> Option<Sample> {
    // The usual stem, one raw file and one label: its files move into the sample.
    if let ([_], [_]) = (group.raws.as_slice(), group.labels.as_slice()) {
        let (raw, label) = (group.raws.pop(), group.labels.pop());
        if let (Some((raw, _)), Some(label)) = (raw, label) {
            return Some(Sample { key, raw, label });
        }
        return None;
    }
    resolve(inv, store, key, group)
}

/// A listed object (or why one could not be listed), with the key range it came from (an
/// index of the ranges listed) and the length of its folder's prefix.
type Entry = (usize, usize, Result<ObjectMeta, StoreError>);

/// The objects under `prefixes`, each folder in `ranges` listed at once. `merged`: every
/// folder at once, each range's folders merged in the order of keys relative to their folder
/// ([`Merge`]); otherwise one folder after the other.
fn listings<'a>(
    store: &'a dyn Store,
    prefixes: &[&str],
    ranges: &[KeyRange],
    merged: bool,
) -> BoxStream<'a, Entry> {
    let in_range = |prefix: &str, r: usize| {
        let (start, end) = &ranges[r];
        let listing = match (start, end) {
            (None, None) => store.list(prefix),
            (start, end) => {
                let (start, end) = (
                    start.as_ref().map(|c| format!("{prefix}{c}")),
                    end.as_ref().map(|c| format!("{prefix}{c}")),
                );
                store.list_range(prefix, start.as_deref(), end.as_deref())
            }
        };
        let folder = prefix.len();
        listing.map(move |m| (r, folder, m)).boxed()
    };
    if merged {
        let per_range = (0..ranges.len()).map(|r| match prefixes {
            [a, b] => Merge::new([in_range(a, r), in_range(b, r)]).boxed(),
            _ => stream::select_all(prefixes.iter().map(|p| in_range(p, r))).boxed(),
        });
        return stream::select_all(per_range).boxed();
    }
    let folders: Vec<BoxStream<'a, Entry>> = prefixes
        .iter()
        .map(|p| stream::select_all((0..ranges.len()).map(|r| in_range(p, r))).boxed())
        .collect();
    stream::iter(folders).flatten().boxed()
}

/// Objects one side of a [`Merge`] holds ahead: about a listing page, so that each side's
/// next page is asked for while the other side's entries are taken.
const MERGE_AHEAD: usize = 1000;

/// Two folders' listings, both listed at once, merged by key relative to the folder: a raw
/// file and its label come out next to each other, as if one folder held both. A failed entry
/// comes out as soon as it arrives. Each side is in key order (a listing is), so the merge is
/// too; a side that is not makes it come out of order, which the pairing sees.
struct Merge<'a> {
    sides: [MergeSide<'a>; 2],
}

struct MergeSide<'a> {
    listing: stream::Fuse<BoxStream<'a, Entry>>,
    ahead: VecDeque<Entry>,
}

impl<'a> Merge<'a> {
    fn new(listings: [BoxStream<'a, Entry>; 2]) -> Self {
        Self {
            sides: listings.map(|l| MergeSide {
                listing: l.fuse(),
                ahead: VecDeque::new(),
            }),
        }
    }
}

/// What one side of a [`Merge`] holds ahead.
enum Ahead<'s> {
    Nothing,
    /// A failed entry, which goes first.
    Failed,
    /// The key of the next entry, relative to its folder.
    Key(&'s str),
}

impl MergeSide<'_> {
    fn front(&self) -> Ahead<'_> {
        match self.ahead.front() {
            Some((_, folder, Ok(m))) => Ahead::Key(m.key.get(*folder..).unwrap_or(&m.key)),
            Some((_, _, Err(_))) => Ahead::Failed,
            None => Ahead::Nothing,
        }
    }
}

impl Stream for Merge<'_> {
    type Item = Entry;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Entry>> {
        for side in &mut self.sides {
            while side.ahead.len() < MERGE_AHEAD {
                match side.listing.poll_next_unpin(cx) {
                    Poll::Ready(Some(entry)) => side.ahead.push_back(entry),
                    Poll::Ready(None) | Poll::Pending => break,
                }
            }
        }
        let [a, b] = &self.sides;
        let take = match (a.front(), b.front()) {
            (Ahead::Failed, _) => 0,
            (_, Ahead::Failed) => 1,
            (Ahead::Key(x), Ahead::Key(y)) => usize::from(y < x),
            (Ahead::Key(_), Ahead::Nothing) if b.listing.is_terminated() => 0,
            (Ahead::Nothing, Ahead::Key(_)) if a.listing.is_terminated() => 1,
            (Ahead::Nothing, Ahead::Nothing)
                if a.listing.is_terminated() && b.listing.is_terminated() =>
            {
                return Poll::Ready(None);
            }
            // The side with nothing ahead was polled above and is not done: it wakes us.
            _ => return Poll::Pending,
        };
        Poll::Ready(self.sides[take].ahead.pop_front())
    }
}

/// The shared copy of `ext` (a layout has a few extensions).
fn shared(exts: &mut Vec<Arc<str>>, ext: &str) -> Arc<str> {
    if let Some(e) = exts.iter().find(|e| ***e == *ext) {
        return e.clone();
    }
    let e: Arc<str> = ext.into();
    exts.push(e.clone());
    e
}

/// Pushes onto a vector that usually holds one or two items: it grows by one, not to the four
/// a `Vec` starts with or by doubling (at 100,000 stems that is tens of megabytes; with raw
/// files and labels in one folder, every `.txt` is also a label candidate, so a stem's labels
/// are usually two).
fn push_one<T>(v: &mut Vec<T>, item: T) {
    if v.len() == v.capacity() {
        v.reserve_exact(1);
    }
    v.push(item);
}

/// Picks the pair of a stem: files that can only be raw, files that can only be labels, and
/// files that can be either (the same object in both lists).
fn resolve(
    inv: &mut Inventory,
    store: &dyn Store,
    key: String,
    mut group: Group,
) -> Option<Sample> {
    // Positions, not copies: the chosen files move out of the group into the sample.
    let raw_only: Vec<usize> = (0..group.raws.len())
        .filter(|&i| group.raws[i].1.is_none())
        .collect();
    let label_only: Vec<usize> = (0..group.labels.len()).collect();
    let either: Vec<usize> = (0..group.raws.len())
        .filter(|&i| group.raws[i].1.is_some())
        .collect();

    let pair = match (
        raw_only.as_slice(),
        label_only.as_slice(),
        either.as_slice(),
    ) {
        (&[r], &[l], []) => Some((r, Ok(l))),
        // The file that can be either is the label.
        (&[r], [], &[e]) => Some((r, Err(e))),
        (&[], &[l], &[e]) => Some((e, Ok(l))),
        (raws, labels, either) => {
            let files = raws.len() + labels.len() + either.len();
            if files >= 2 {
                let mut objects: Vec<String> = group
                    .raws
                    .iter()
                    .map(|(r, _)| &r.meta.key)
                    .chain(group.labels.iter().map(|l| &l.meta.key))
                    .map(|k| store.uri(k))
                    .collect();
                objects.sort();
                objects.dedup();
                let reason = format!(
                    "ambiguous sample {key:?}: {} candidate files ({}), a sample is one raw file and one label",
                    objects.len(),
                    objects.join(", ")
                );
                inv.ambiguous.push(Ambiguity {
                    key,
                    objects,
                    category: Category::Ambiguous,
                    reason,
                });
                return None;
            }
            None
        }
    };
    if let Some((r, l)) = pair {
        let label = match l {
            Ok(l) => group.labels.swap_remove(l),
            Err(e) => {
                let (file, as_label) = &group.raws[e];
                (*as_label)?.label(file.meta.clone())
            }
        };
        return Some(Sample {
            key,
            raw: group.raws.swap_remove(r).0,
            label,
        });
    }
    // A lone file: a raw without label, or a label without raw.
    let lone_raw = group.raws.first().map(|(r, _)| &r.meta.key);
    let lone_label = group.labels.first().map(|l| &l.meta.key);
    if let Some(k) = lone_raw.or(lone_label) {
        if group.raws.is_empty() {
            inv.unpaired_labels += 1;
        } else {
            inv.unpaired_raw += 1;
        }
        inv.unpaired_examples.push(store.uri(k));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::hooked::Hooked;
    use crate::storage::{PutMode, memory::MemoryStore};
    use bytes::Bytes;

    /// Default extensions, and folders from `args` pairs (`--raw-data-folder`, …).
    fn rules(args: &[&str]) -> Rules {
        let get = |name: &str, default: &'static str| {
            args.chunks(2)
                .find(|kv| kv[0] == name)
                .map_or(default, |kv| kv[1])
        };
        Rules::new(Layout::new(
            get("--raw-data-folder", "raw_training_data"),
            get("--label-folder", "raw_training_data"),
            get("--jsonl-folder", "training_datasets"),
            get("--model-meta-folder", "trained_model"),
        ))
    }

    async fn inventory(files: &[&str], args: &[&str]) -> (Inventory, MemoryStore) {
        let store = MemoryStore::named(&uuid::Uuid::new_v4().to_string());
        for f in files {
            store
                .put(f, Bytes::from("x"), PutMode::Overwrite)
                .await
                .unwrap();
        }
        let rules = rules(args);
        (take(&store, &rules).await.unwrap(), store)
    }

    fn keys(inv: &Inventory) -> Vec<(String, String, String)> {
        inv.samples
            .iter()
            .map(|s| {
                (
                    s.key.clone(),
                    s.raw.meta.key.clone(),
                    s.label.meta.key.clone(),
                )
            })
            .collect()
    }

    /// The same bucket listed out of order, so paired at the end holding every stem: the same
    /// samples and unpaired counts as `streamed`, paired as listed.
    async fn paired_alike(streamed: &Inventory, store: MemoryStore, rules: &Rules) -> Inventory {
        let at_end = take(&Hooked::new(store).reversed(), rules).await.unwrap();
        assert!(at_end.groups_held > 500, "{}", at_end.groups_held);
        assert_eq!(keys(streamed), keys(&at_end));
        assert_eq!(
            (streamed.unpaired_raw, streamed.unpaired_labels),
            (at_end.unpaired_raw, at_end.unpaired_labels)
        );
        at_end
    }

    #[tokio::test]
    async fn pairing_as_listed_holds_a_few_stems_and_pairs_as_at_the_end() {
        // Stems whose files are not next to each other in key order (`x.json`, `x.l.txt`,
        // `x.png`), a folder beside a file of the same start (`a-b.txt`, `a/…`), an ambiguous
        // stem, unpaired files, and many usual pairs.
        let mut files: Vec<String> = [
            "x.json",
            "x.l.txt",
            "x.l.json",
            "x.png",
            "a-b.txt",
            "a-b.json",
            "a/y.txt",
            "a/y.json",
            "amb.txt",
            "amb.json",
            "amb.png",
            "lonely.txt",
            "orphan.json",
        ]
        .iter()
        .map(|f| format!("raw_training_data/{f}"))
        .collect();
        for i in 0..500 {
            files.push(format!("raw_training_data/d{}/s{i:03}.txt", i % 5));
            files.push(format!("raw_training_data/d{}/s{i:03}.json", i % 5));
        }
        let names: Vec<&str> = files.iter().map(String::as_str).collect();
        let (streamed, store) = inventory(&names, &[]).await;
        assert!(streamed.groups_held <= 3, "{}", streamed.groups_held);
        // The same bucket listed out of order: paired at the end, holding every stem.
        let at_end = paired_alike(&streamed, store, &rules(&[])).await;
        assert_eq!(streamed.samples.len(), 500 + 4, "x, x.l, a-b and a/y pair");
        let ambiguous: Vec<&str> = streamed.ambiguous.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(ambiguous, ["amb"]);
        assert_eq!(streamed.unpaired_examples, at_end.unpaired_examples);
        assert_eq!(streamed.unpaired_raw + streamed.unpaired_labels, 2);
    }

    #[tokio::test]
    async fn pairs_by_relative_path_in_one_folder() {
        let (inv, _) = inventory(
            &[
                "raw_training_data/a/b/x.PNG",
                "raw_training_data/a/b/x.json",
                "raw_training_data/t.txt",
                "raw_training_data/t.json",
                "raw_training_data/g.txt.gz",
                "raw_training_data/g.TXT",
                "raw_training_data/lonely.txt",
                "raw_training_data/orphan.json",
                "raw_training_data/notes.docx",
                "raw_training_data/img.png",
                "raw_training_data/img.txt",
            ],
            &[],
        )
        .await;
        assert_eq!(
            keys(&inv),
            [
                (
                    "a/b/x".into(),
                    "raw_training_data/a/b/x.PNG".into(),
                    "raw_training_data/a/b/x.json".into()
                ),
                (
                    "img".into(),
                    "raw_training_data/img.png".into(),
                    "raw_training_data/img.txt".into()
                ),
                (
                    "t".into(),
                    "raw_training_data/t.txt".into(),
                    "raw_training_data/t.json".into()
                ),
            ]
        );
        assert!(inv.samples[0].raw.modality == crate::modality::Modality::Image);
        assert_eq!(inv.unpaired_raw, 1, "lonely.txt");
        assert_eq!(inv.unpaired_labels, 1, "orphan.json");
        assert_eq!(inv.ignored, 1, "notes.docx");
        assert_eq!(
            inv.ambiguous.len(),
            1,
            "g.txt.gz with g.TXT: two files that are each both"
        );
        assert!(
            inv.ambiguous[0].reason.contains("g.txt.gz"),
            "{}",
            inv.ambiguous[0].reason
        );
    }

    #[tokio::test]
    async fn separate_folders_and_exclusions() {
        let (inv, _) = inventory(
            &[
                "data/raw/q1.md",
                "data/raw/q2.md",
                "data/raw/q2.csv",
                "data/labels/q1.json",
                "data/labels/q2.json",
                "data/labels/out/x.txt",
                "data/raw/out/x.txt",
            ],
            &[
                "--raw-data-folder",
                "data/raw",
                "--label-folder",
                "data/labels",
                "--jsonl-folder",
                "data/labels/out",
                "--model-meta-folder",
                "data/raw/out",
            ],
        )
        .await;
        assert_eq!(
            keys(&inv),
            [(
                "q1".into(),
                "data/raw/q1.md".into(),
                "data/labels/q1.json".into()
            )]
        );
        assert_eq!(inv.ambiguous.len(), 1, "q2 has two raw candidates");
        assert!(
            inv.ambiguous[0].reason.contains("q2.md") && inv.ambiguous[0].reason.contains("q2.csv")
        );
        assert_eq!(
            inv.unpaired_raw + inv.unpaired_labels,
            0,
            "output folders never count"
        );
    }

    #[tokio::test]
    async fn two_folders_are_listed_at_once_and_paired_as_they_arrive() {
        let mut files: Vec<String> = [
            "data/raw/lonely.txt",
            "data/labels/orphan.json",
            "data/raw/q2.md",
            "data/raw/q2.csv",
            "data/labels/q2.json",
            "data/raw/x.l.md",
            "data/labels/x.l.json",
            "data/raw/x.md",
            "data/labels/x.json",
            "data/labels/out/x.txt",
        ]
        .iter()
        .map(|f| (*f).to_owned())
        .collect();
        for i in 0..500 {
            files.push(format!("data/raw/d{}/s{i:03}.txt", i % 5));
            files.push(format!("data/labels/d{}/s{i:03}.json", i % 5));
        }
        let names: Vec<&str> = files.iter().map(String::as_str).collect();
        let args = [
            "--raw-data-folder",
            "data/raw",
            "--label-folder",
            "data/labels",
            "--jsonl-folder",
            "data/labels/out",
        ];
        let (_, store) = inventory(&names, &args).await;
        let rules = rules(&args);
        let mut told: Vec<String> = Vec::new();
        let streamed = take_in_ranges(&store, &rules, &[], &mut |l| {
            told.push(l.meta.key.clone());
        })
        .await
        .unwrap();
        assert!(streamed.groups_held <= 3, "{}", streamed.groups_held);
        // Merged as listed: a stem's label comes next to its raw file (`.json` before `.txt`),
        // long before the last raw file.
        let at = |key: &str| told.iter().position(|k| k == key).unwrap();
        assert_eq!(
            at("data/raw/d0/s000.txt"),
            at("data/labels/d0/s000.json") + 1
        );
        assert!(at("data/labels/d0/s000.json") < at("data/raw/d4/s499.txt"));
        // The same bucket listed out of order: paired at the end, holding every stem.
        paired_alike(&streamed, store, &rules).await;
        assert_eq!(streamed.samples.len(), 500 + 2, "x and x.l pair");
        let ambiguous: Vec<&str> = streamed.ambiguous.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(ambiguous, ["q2"]);
        assert_eq!((streamed.unpaired_raw, streamed.unpaired_labels), (1, 1));
    }

    #[tokio::test]
    async fn nested_label_folder_is_listed_once() {
        let (inv, _) = inventory(
            &["d/a.txt", "d/labels/a.json", "d/b.txt", "d/labels/b.json"],
            &["--raw-data-folder", "d", "--label-folder", "d/labels"],
        )
        .await;
        assert_eq!(inv.samples.len(), 2);
        assert_eq!(inv.samples[0].label.meta.key, "d/labels/a.json");
    }

    #[tokio::test]
    async fn a_first_listing_is_cut_at_the_folders_a_page_names() {
        let (_, store) = inventory(&[], &[]).await;
        let store = Hooked::new(store).ranged();
        assert!(
            folder_splits(&store, &rules(&[])).await.unwrap().is_empty(),
            "no folders: one listing"
        );
        for i in 0..200 {
            for ext in ["txt", "json"] {
                let key = format!("raw_training_data/d{:02}/s{i:03}.{ext}", i % 20);
                store
                    .put(&key, Bytes::from("x"), PutMode::Overwrite)
                    .await
                    .unwrap();
            }
        }
        store
            .put(
                "raw_training_data/top.txt",
                Bytes::from("x"),
                PutMode::Overwrite,
            )
            .await
            .unwrap();
        let cuts = folder_splits(&store, &rules(&[])).await.unwrap();
        assert_eq!(cuts.len(), MAX_RANGES - 1, "{cuts:?}");
        assert!(
            cuts.iter().all(|c| c.starts_with('d') && c.ends_with('/')),
            "{cuts:?}"
        );
        let whole = take(&store, &rules(&[])).await.unwrap();
        let ranged = take_in_ranges(&store, &rules(&[]), &cuts, &mut |_| {})
            .await
            .unwrap();
        assert_eq!(keys(&whole), keys(&ranged));
        assert_eq!(ranged.samples.len(), 200);
        // A store that does not list ranges by itself is never cut.
        assert!(
            folder_splits(store.inner(), &rules(&[]))
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn key_ranges_pair_as_listed_even_where_a_cut_parts_a_stem() {
        // Stem `a` has `a.json` before the cut `a.k` and `a.txt` after it; `a.k` is a stem of
        // its own. The same with the folders apart.
        for apart in [false, true] {
            let (raw, label) = if apart {
                ("data/raw/", "data/labels/")
            } else {
                ("raw_training_data/", "raw_training_data/")
            };
            let mut files = vec![
                format!("{label}a.json"),
                format!("{raw}a.txt"),
                format!("{raw}a.k.txt"),
                format!("{label}a.k.json"),
                format!("{raw}lonely.txt"),
            ];
            for i in 0..600 {
                files.push(format!("{raw}s{i:03}.txt"));
                files.push(format!("{label}s{i:03}.json"));
            }
            let names: Vec<&str> = files.iter().map(String::as_str).collect();
            let args = [
                "--raw-data-folder",
                raw.trim_end_matches('/'),
                "--label-folder",
                label.trim_end_matches('/'),
            ];
            let (whole, store) = inventory(&names, &args).await;
            let store = Hooked::new(store).ranged();
            let cuts: Vec<String> = ["a.k", "s200", "s400"].map(String::from).to_vec();
            let ranged = take_in_ranges(&store, &rules(&args), &cuts, &mut |_| {})
                .await
                .unwrap();
            assert_eq!(keys(&whole), keys(&ranged), "apart: {apart}");
            assert_eq!(ranged.samples.len(), 602, "a, a.k and every s pair");
            assert_eq!(ranged.unpaired_raw, 1);
            // Four ranges, each holding a few stems, and `a` set aside.
            assert!(ranged.groups_held <= 10, "{}", ranged.groups_held);
        }
    }

    #[tokio::test]
    async fn key_ranges_listed_at_once_make_the_same_inventory() {
        let (_, store) = inventory(&[], &[]).await;
        let store = Hooked::new(store).ranged();
        let mut stems = Vec::new();
        for i in 0..6000 {
            let stem = format!("d{}/s{i:05}", i % 7);
            for ext in ["txt", "json"] {
                store
                    .put(
                        &format!("raw_training_data/{stem}.{ext}"),
                        Bytes::from("x"),
                        PutMode::Overwrite,
                    )
                    .await
                    .unwrap();
            }
            stems.push(stem);
        }
        let splits = split_points(stems.iter().map(String::as_str));
        assert_eq!(splits.len(), 1, "12,000 objects: two ranges");
        // A cut that is no sample key, and one past every key, change nothing either.
        for cuts in [
            splits,
            vec!["d3".to_owned(), "d3/s0".to_owned(), "zzz".to_owned()],
        ] {
            let whole = take(&store, &rules(&[])).await.unwrap();
            let ranged = take_in_ranges(&store, &rules(&[]), &cuts, &mut |_| {})
                .await
                .unwrap();
            assert_eq!(keys(&whole), keys(&ranged));
            assert_eq!(ranged.samples.len(), 6000);
        }
        assert!(
            split_points(["a", "b"].into_iter()).is_empty(),
            "small: one listing"
        );
        let many: Vec<String> = (0..100_000).map(|i| format!("k{i:06}")).collect();
        assert_eq!(
            split_points(many.iter().map(String::as_str)).len(),
            MAX_RANGES - 1
        );
    }
}
