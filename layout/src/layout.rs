//! The folders of a bucket and what an object name in them is.
//!
//! Four folders matter: `RAW_DATA_FOLDER` holds raw samples, `LABEL_FOLDER` their labels (it may
//! be the same folder), and the job writes its datasets under `JSONL_FOLDER` and its records and
//! lock under `MODEL_META_FOLDER`. A raw sample and its label share their path relative to their
//! folders, less the extension (`raw/a/b/x.png` pairs with `labels/a/b/x.json`): that path is the
//! object's *stem*.
//!
//! [`Layout::classify`] answers, for one object name, in this order:
//! 1. under `JSONL_FOLDER` or `MODEL_META_FOLDER`: the job's own output, never an input, even
//!    when those folders lie inside the input folders ([`Class::Output`]);
//! 2. a name ending in `/` (a console "folder"): ignored;
//! 3. under neither input folder: [`Class::Outside`];
//! 4. by extension, matched case-insensitively after the last dot of the file name: a raw sample,
//!    a label, or both (same folder, `x.txt` is raw text and a text label); `.gz` files count
//!    under their inner extension (`x.txt.gz` is `txt`), but only for text samples and labels,
//!    since media go to Vertex by URI and uncompressed. A file name with nothing before its
//!    extension (`.json`) is a hidden file, not a sample. Anything else is ignored.

use serde::Serialize;

use crate::defaults;
use crate::modality::Modality;

/// How a label is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelFormat {
    /// `.json`: parsed.
    Json,
    /// Any other label extension: used as it is.
    Text,
}

/// A folder as a key prefix: `""` for the bucket root, else the folder with one trailing `/`.
pub fn folder_prefix(folder: &str) -> String {
    let f = folder.trim_matches('/');
    if f.is_empty() {
        String::new()
    } else {
        format!("{f}/")
    }
}

/// The job's own output folders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFolder {
    /// `JSONL_FOLDER`: the generated datasets.
    Jsonl,
    /// `MODEL_META_FOLDER`: run records, manifests and the lock.
    ModelMeta,
}

impl OutputFolder {
    /// The setting naming the folder.
    pub fn setting(self) -> &'static str {
        match self {
            Self::Jsonl => "JSONL_FOLDER",
            Self::ModelMeta => "MODEL_META_FOLDER",
        }
    }
}

/// Why an object under an input folder is neither a raw sample nor a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// The name ends in `/`: a placeholder the console creates for a folder.
    FolderPlaceholder,
    /// No raw or label extension of its folder (or a hidden file such as `.json`).
    Extension,
    /// A `.gz` file of media (`x.png.gz`): only text samples and labels are decompressed.
    CompressedMedia,
}

/// A raw sample, as named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawName<'a> {
    /// Path relative to `RAW_DATA_FOLDER`, without extension (and without `.gz`).
    pub stem: &'a str,
    pub modality: Modality,
    /// Lower-case extension, without `.gz`.
    pub ext: &'a str,
    pub gzip: bool,
}

/// A label, as named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelName<'a> {
    /// Path relative to `LABEL_FOLDER`, without extension (and without `.gz`).
    pub stem: &'a str,
    pub format: LabelFormat,
    pub gzip: bool,
}

/// What an object name is; see the [module documentation](self) for the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class<'a> {
    Raw(RawName<'a>),
    Label(LabelName<'a>),
    /// Raw and label at once (`x.txt` when both folders are the same): it pairs with the other
    /// file of its stem, never with itself.
    Both(RawName<'a>, LabelName<'a>),
    /// Under an output folder: never counts, never starts a run.
    Output(OutputFolder),
    /// Under neither `RAW_DATA_FOLDER` nor `LABEL_FOLDER`.
    Outside,
    /// Under an input folder, but not a sample file.
    Ignored(Ignored),
}

impl Class<'_> {
    /// The object is a raw sample, a label or both: its upload can change the training set.
    pub fn is_input(&self) -> bool {
        matches!(self, Self::Raw(_) | Self::Label(_) | Self::Both(..))
    }
}

/// The folders and extensions of one deployment: which objects are samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    raw_prefix: String,
    label_prefix: String,
    jsonl_prefix: String,
    model_meta_prefix: String,
    /// Lower-case extensions per modality, in [`Modality::ALL`] order.
    raw_extensions: [Vec<String>; 5],
    /// Lower-case label extensions.
    label_extensions: Vec<String>,
}

impl Default for Layout {
    /// The defaults of every setting.
    fn default() -> Self {
        Layout::new(
            defaults::RAW_DATA_FOLDER,
            defaults::LABEL_FOLDER,
            defaults::JSONL_FOLDER,
            defaults::MODEL_META_FOLDER,
        )
    }
}

/// Lower case, one leading dot removed, empty items dropped: what [`crate::parse_extension`]
/// returns for a valid extension.
fn normalise<I>(exts: I) -> Vec<String>
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    exts.into_iter()
        .map(|e| {
            let e = e.as_ref().trim();
            e.strip_prefix('.').unwrap_or(e).to_ascii_lowercase()
        })
        .filter(|e| !e.is_empty())
        .collect()
}

fn split_defaults(list: &str) -> Vec<String> {
    normalise(list.split(','))
}

impl Layout {
    /// A layout of these folders (leading and trailing `/` ignored, `""` = bucket root) with
    /// the default extensions. An empty output folder excludes nothing.
    pub fn new(
        raw_folder: &str,
        label_folder: &str,
        jsonl_folder: &str,
        model_meta_folder: &str,
    ) -> Self {
        Layout {
            raw_prefix: folder_prefix(raw_folder),
            label_prefix: folder_prefix(label_folder),
            jsonl_prefix: folder_prefix(jsonl_folder),
            model_meta_prefix: folder_prefix(model_meta_folder),
            raw_extensions: Modality::ALL.map(|m| split_defaults(m.default_extensions())),
            label_extensions: split_defaults(defaults::LABEL_EXTENSIONS),
        }
    }

    /// Replaces the extensions of `modality` (give them as [`crate::parse_extension`] returns
    /// them; they are lower-cased here in any case).
    #[must_use]
    pub fn with_extensions<I>(mut self, modality: Modality, exts: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.raw_extensions[modality.index()] = normalise(exts);
        self
    }

    /// Replaces the label extensions.
    #[must_use]
    pub fn with_label_extensions<I>(mut self, exts: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.label_extensions = normalise(exts);
        self
    }

    /// `RAW_DATA_FOLDER` without slashes (`""` = bucket root).
    pub fn raw_folder(&self) -> &str {
        self.raw_prefix.trim_end_matches('/')
    }

    /// `LABEL_FOLDER` without slashes.
    pub fn label_folder(&self) -> &str {
        self.label_prefix.trim_end_matches('/')
    }

    /// An output folder without slashes.
    pub fn output_folder(&self, which: OutputFolder) -> &str {
        match which {
            OutputFolder::Jsonl => self.jsonl_prefix.trim_end_matches('/'),
            OutputFolder::ModelMeta => self.model_meta_prefix.trim_end_matches('/'),
        }
    }

    /// The raw extensions of `modality`.
    pub fn extensions(&self, modality: Modality) -> &[String] {
        &self.raw_extensions[modality.index()]
    }

    /// The label extensions.
    pub fn label_extensions(&self) -> &[String] {
        &self.label_extensions
    }

    /// The key prefixes to list to see every input: one when a folder contains the other.
    pub fn list_prefixes(&self) -> Vec<&str> {
        let (r, l) = (self.raw_prefix.as_str(), self.label_prefix.as_str());
        if l.starts_with(r) {
            vec![r]
        } else if r.starts_with(l) {
            vec![l]
        } else {
            vec![r, l]
        }
    }

    /// What the object `name` is.
    pub fn classify<'a>(&'a self, name: &'a str) -> Class<'a> {
        for (prefix, which) in [
            (&self.jsonl_prefix, OutputFolder::Jsonl),
            (&self.model_meta_prefix, OutputFolder::ModelMeta),
        ] {
            if !prefix.is_empty() && name.starts_with(prefix.as_str()) {
                return Class::Output(which);
            }
        }
        if name.ends_with('/') {
            return Class::Ignored(Ignored::FolderPlaceholder);
        }
        let in_raw = name.strip_prefix(self.raw_prefix.as_str());
        let in_label = name.strip_prefix(self.label_prefix.as_str());
        if in_raw.is_none() && in_label.is_none() {
            return Class::Outside;
        }
        let mut media_gz = false;
        let raw = in_raw.and_then(split_name).and_then(|(stem, ext, gzip)| {
            let (modality, ext) = self.modality_of(ext)?;
            if gzip && !modality.reads_gzip() {
                media_gz = true;
                return None;
            }
            Some(RawName {
                stem,
                modality,
                ext,
                gzip,
            })
        });
        let label = in_label.and_then(split_name).and_then(|(stem, ext, gzip)| {
            let ext = self
                .label_extensions
                .iter()
                .find(|e| e.eq_ignore_ascii_case(ext))?;
            let format = if ext == "json" {
                LabelFormat::Json
            } else {
                LabelFormat::Text
            };
            Some(LabelName { stem, format, gzip })
        });
        match (raw, label) {
            (Some(r), Some(l)) => Class::Both(r, l),
            (Some(r), None) => Class::Raw(r),
            (None, Some(l)) => Class::Label(l),
            (None, None) if media_gz => Class::Ignored(Ignored::CompressedMedia),
            (None, None) => Class::Ignored(Ignored::Extension),
        }
    }

    /// The modality of a raw extension (any case) and its lower-case form.
    fn modality_of(&self, ext: &str) -> Option<(Modality, &str)> {
        Modality::ALL.into_iter().find_map(|m| {
            self.raw_extensions[m.index()]
                .iter()
                .find(|e| e.eq_ignore_ascii_case(ext))
                .map(|e| (m, e.as_str()))
        })
    }
}

/// Splits a path relative to its folder into stem, extension (as written) and whether it ends
/// in `.gz`. `None` without an extension or without a file name before it (`a/.json`).
fn split_name(rel: &str) -> Option<(&str, &str, bool)> {
    let file_start = rel.rfind('/').map_or(0, |i| i + 1);
    let file = &rel[file_start..];
    let (inner, gzip) = match file.len().checked_sub(3) {
        Some(cut) if file.is_char_boundary(cut) && file[cut..].eq_ignore_ascii_case(".gz") => {
            (&file[..cut], true)
        }
        _ => (file, false),
    };
    let dot = inner.rfind('.')?;
    let ext = &inner[dot + 1..];
    if dot == 0 || ext.is_empty() {
        return None;
    }
    Some((&rel[..file_start + dot], ext, gzip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(stem: &str, modality: Modality, ext: &str, gzip: bool) -> RawName<'static> {
        RawName {
            stem: Box::leak(stem.to_owned().into_boxed_str()),
            modality,
            ext: Box::leak(ext.to_owned().into_boxed_str()),
            gzip,
        }
    }

    fn label(stem: &str, format: LabelFormat, gzip: bool) -> LabelName<'static> {
        LabelName {
            stem: Box::leak(stem.to_owned().into_boxed_str()),
            format,
            gzip,
        }
    }

    /// The table both crates rely on: the trigger starts the job exactly for the inputs the
    /// pipeline counts (`Class::is_input`), and both read the same class from this one function.
    #[test]
    fn default_layout_classifies_the_table() {
        use Class::{Both, Ignored as Ign, Label, Output, Outside, Raw};
        use LabelFormat::{Json, Text};
        use Modality::{Audio, Document, Image, Video};
        let l = Layout::default();
        let cases: Vec<(&str, Class<'static>)> = vec![
            (
                "raw_training_data/a.png",
                Raw(raw("a", Image, "png", false)),
            ),
            (
                "raw_training_data/nested/deeper/a.PDF",
                Raw(raw("nested/deeper/a", Document, "pdf", false)),
            ),
            (
                "raw_training_data/a.txt.gz",
                Both(
                    raw("a", Modality::Text, "txt", true),
                    label("a", Text, true),
                ),
            ),
            (
                "raw_training_data/a.TXT",
                Both(
                    raw("a", Modality::Text, "txt", false),
                    label("a", Text, false),
                ),
            ),
            ("raw_training_data/a.json", Label(label("a", Json, false))),
            (
                "raw_training_data/sub/a.JSON.GZ",
                Label(label("sub/a", Json, true)),
            ),
            (
                "raw_training_data/v.tar.mp4",
                Raw(raw("v.tar", Video, "mp4", false)),
            ),
            (
                "raw_training_data/s.ogg",
                Raw(raw("s", Audio, "ogg", false)),
            ),
            (
                "raw_training_data/café 100%.md",
                Raw(raw("café 100%", Modality::Text, "md", false)),
            ),
            (
                "training_datasets/run1/sft_train.jsonl",
                Output(OutputFolder::Jsonl),
            ),
            ("training_datasets/x.json", Output(OutputFolder::Jsonl)),
            (
                "trained_model/model_metadata_1.json",
                Output(OutputFolder::ModelMeta),
            ),
            (
                "trained_model/training.lock.json",
                Output(OutputFolder::ModelMeta),
            ),
            ("raw_training_data/", Ign(Ignored::FolderPlaceholder)),
            ("raw_training_data/sub/", Ign(Ignored::FolderPlaceholder)),
            ("other/a.png", Outside),
            ("raw_training_datax/a.png", Outside),
            ("a.png", Outside),
            ("raw_training_data/a.exe", Ign(Ignored::Extension)),
            ("raw_training_data/a.gif", Ign(Ignored::Extension)),
            ("raw_training_data/a.png.gz", Ign(Ignored::CompressedMedia)),
            ("raw_training_data/a.pdf.gz", Ign(Ignored::CompressedMedia)),
            ("raw_training_data/a.gz", Ign(Ignored::Extension)),
            ("raw_training_data/.txt", Ign(Ignored::Extension)),
            ("raw_training_data/.txt.gz", Ign(Ignored::Extension)),
            ("raw_training_data/sub/.json", Ign(Ignored::Extension)),
            ("raw_training_data/txt", Ign(Ignored::Extension)),
            ("raw_training_data/a.", Ign(Ignored::Extension)),
            ("raw_training_data/é.gz", Ign(Ignored::Extension)),
        ];
        for (name, want) in cases {
            assert_eq!(l.classify(name), want, "{name}");
        }
    }

    #[test]
    fn separate_folders_and_output_inside_inputs() {
        let l = Layout::new(
            "/data/raw/",
            "data/labels",
            "data/labels/out",
            "data/raw/out",
        );
        assert_eq!(l.raw_folder(), "data/raw");
        assert_eq!(l.output_folder(OutputFolder::ModelMeta), "data/raw/out");
        let c = |n| l.classify(n);
        assert!(matches!(c("data/raw/q1.md"), Class::Raw(r) if r.stem == "q1"));
        assert!(matches!(c("data/labels/q1.json"), Class::Label(x) if x.stem == "q1"));
        assert_eq!(c("data/labels/q1.png"), Class::Ignored(Ignored::Extension));
        assert!(
            matches!(c("data/raw/q1.txt"), Class::Raw(_)),
            "no label here"
        );
        assert_eq!(
            c("data/labels/out/x.txt"),
            Class::Output(OutputFolder::Jsonl)
        );
        assert_eq!(
            c("data/raw/out/x.txt"),
            Class::Output(OutputFolder::ModelMeta)
        );
        assert_eq!(l.list_prefixes(), ["data/raw/", "data/labels/"]);
    }

    #[test]
    fn nested_folders_give_each_side_its_own_stem() {
        let l = Layout::new("d", "d/labels", "out", "meta");
        assert_eq!(l.list_prefixes(), ["d/"]);
        assert_eq!(
            l.classify("d/labels/a.txt"),
            Class::Both(
                raw("labels/a", Modality::Text, "txt", false),
                label("a", LabelFormat::Text, false)
            )
        );
        assert_eq!(Layout::new("d/raw", "d", "o", "m").list_prefixes(), ["d/"]);
    }

    #[test]
    fn bucket_root_folders_and_empty_outputs() {
        let l = Layout::new("", "/", "training_datasets", "trained_model");
        assert_eq!(
            l.classify("trained_model/x.json"),
            Class::Output(OutputFolder::ModelMeta)
        );
        assert!(l.classify("anywhere/x.json").is_input());
        assert_eq!(l.list_prefixes(), [""]);
        // An empty output folder excludes nothing (the trigger refuses one in its settings).
        let l = Layout::new("", "", "", "");
        assert!(l.classify("training_datasets/x.json").is_input());
    }

    #[test]
    fn configured_extensions_replace_one_modality() {
        let l = Layout::default()
            .with_extensions(Modality::Image, ["PNG", ".gif"])
            .with_extensions(Modality::Video, ["txt", "webm"])
            .with_label_extensions(["yaml"]);
        assert_eq!(l.extensions(Modality::Image), ["png", "gif"]);
        assert!(matches!(l.classify("raw_training_data/a.GIF"), Class::Raw(r) if r.ext == "gif"));
        assert_eq!(
            l.classify("raw_training_data/a.jpg"),
            Class::Ignored(Ignored::Extension),
            "jpg no longer listed"
        );
        // txt listed under text and video: the first modality wins.
        assert!(
            matches!(l.classify("raw_training_data/a.txt"), Class::Raw(r) if r.modality == Modality::Text)
        );
        assert_eq!(
            l.classify("raw_training_data/a.yaml"),
            Class::Label(label("a", LabelFormat::Text, false))
        );
        assert_eq!(
            l.classify("raw_training_data/a.json"),
            Class::Ignored(Ignored::Extension)
        );
        // A media extension configured as a label is read gzip-compressed as a label.
        let l = Layout::default().with_label_extensions(["png"]);
        assert!(matches!(
            l.classify("raw_training_data/a.png.gz"),
            Class::Label(_)
        ));
    }

    #[test]
    fn defaults_are_the_documented_lists() {
        let l = Layout::default();
        assert_eq!(l.raw_folder(), "raw_training_data");
        assert_eq!(l.label_folder(), "raw_training_data");
        assert_eq!(l.output_folder(OutputFolder::Jsonl), "training_datasets");
        assert_eq!(l.output_folder(OutputFolder::ModelMeta), "trained_model");
        assert_eq!(l.extensions(Modality::Text), ["txt", "md", "csv", "html"]);
        assert_eq!(
            l.extensions(Modality::Image),
            ["png", "jpg", "jpeg", "webp"]
        );
        assert_eq!(l.extensions(Modality::Document), ["pdf"]);
        assert_eq!(
            l.extensions(Modality::Audio),
            ["mp3", "wav", "flac", "m4a", "ogg"]
        );
        assert_eq!(l.extensions(Modality::Video), ["mp4", "mov", "webm"]);
        assert_eq!(l.label_extensions(), ["json", "txt"]);
        for m in Modality::ALL {
            assert_eq!(
                crate::parse_extension_list(m.default_extensions()).unwrap(),
                l.extensions(m),
                "{} defaults are valid settings",
                m.extensions_setting()
            );
        }
    }
}
