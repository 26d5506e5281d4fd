//! What kind of file a raw sample is, which MIME type Vertex AI is told, how large Vertex allows
//! it to be (`pipeline/tests/contracts/GOOGLE-APIS.md` §2.4), and the setting that lists its extensions.

use serde::Serialize;

use crate::defaults;

/// The kind of a raw sample, chosen by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Modality {
    Text,
    Image,
    Document,
    Audio,
    Video,
}

impl Modality {
    /// Every modality, in the order that decides an extension listed under two of them (the
    /// first wins).
    pub const ALL: [Modality; 5] = [
        Self::Text,
        Self::Image,
        Self::Document,
        Self::Audio,
        Self::Video,
    ];

    /// Position in [`Modality::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The setting (environment variable) that lists this modality's extensions.
    pub fn extensions_setting(self) -> &'static str {
        match self {
            Self::Text => "TEXT_EXTENSIONS",
            Self::Image => "IMAGE_EXTENSIONS",
            Self::Document => "DOCUMENT_EXTENSIONS",
            Self::Audio => "AUDIO_EXTENSIONS",
            Self::Video => "VIDEO_EXTENSIONS",
        }
    }

    /// The default extensions of this modality, comma-separated (the setting's default).
    pub fn default_extensions(self) -> &'static str {
        match self {
            Self::Text => defaults::TEXT_EXTENSIONS,
            Self::Image => defaults::IMAGE_EXTENSIONS,
            Self::Document => defaults::DOCUMENT_EXTENSIONS,
            Self::Audio => defaults::AUDIO_EXTENSIONS,
            Self::Video => defaults::VIDEO_EXTENSIONS,
        }
    }

    /// Whether a `.gz` file of this modality is a sample: only text is decompressed on the fly;
    /// Vertex reads media by URI, uncompressed.
    pub fn reads_gzip(self) -> bool {
        self == Self::Text
    }

    /// Vertex's per-file limit for media passed by URI; text is bounded by tokens instead.
    pub fn max_bytes(self) -> Option<u64> {
        const MB: u64 = 1_000_000;
        match self {
            Self::Text => None,
            Self::Image | Self::Document => Some(20 * MB),
            Self::Audio | Self::Video => Some(100 * MB),
        }
    }

    /// MIME types Vertex accepts for this modality.
    pub fn accepted(self) -> &'static [&'static str] {
        match self {
            Self::Text => &["text/plain", "text/markdown", "text/csv", "text/html"],
            Self::Image => &[
                "image/png",
                "image/jpeg",
                "image/webp",
                "image/heic",
                "image/heif",
            ],
            Self::Document => &["application/pdf", "text/plain"],
            Self::Audio => &[
                "audio/x-aac",
                "audio/aac",
                "audio/flac",
                "audio/mp3",
                "audio/m4a",
                "audio/mpeg",
                "audio/mpga",
                "audio/mp4",
                "audio/ogg",
                "audio/pcm",
                "audio/wav",
                "audio/webm",
            ],
            Self::Video => &[
                "video/x-flv",
                "video/quicktime",
                "video/mpeg",
                "video/mpegs",
                "video/mpg",
                "video/mp4",
                "video/webm",
                "video/wmv",
                "video/3gpp",
            ],
        }
    }

    /// The MIME type for an extension of this modality, if Vertex accepts one.
    pub fn mime_type(self, ext: &str) -> Option<&'static str> {
        let mime = match ext {
            "txt" => "text/plain",
            "md" | "markdown" => "text/markdown",
            "csv" => "text/csv",
            "html" | "htm" => "text/html",
            "png" => "image/png",
            "jpg" | "jpeg" => "image/jpeg",
            "webp" => "image/webp",
            "heic" => "image/heic",
            "heif" => "image/heif",
            "pdf" => "application/pdf",
            "mp3" => "audio/mp3",
            "wav" => "audio/wav",
            "flac" => "audio/flac",
            "m4a" => "audio/m4a",
            "ogg" | "oga" => "audio/ogg",
            "aac" => "audio/aac",
            "mp4" | "m4v" => "video/mp4",
            "mov" => "video/quicktime",
            "webm" if self == Self::Audio => "audio/webm",
            "webm" => "video/webm",
            "mpeg" | "mpg" => "video/mpeg",
            "flv" => "video/x-flv",
            "wmv" => "video/wmv",
            "3gp" | "3gpp" => "video/3gpp",
            _ => return None,
        };
        self.accepted().contains(&mime).then_some(mime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mime_types_match_vertex_lists() {
        assert_eq!(Modality::Image.mime_type("jpg"), Some("image/jpeg"));
        assert_eq!(Modality::Video.mime_type("mov"), Some("video/quicktime"));
        assert_eq!(Modality::Audio.mime_type("webm"), Some("audio/webm"));
        assert_eq!(Modality::Image.mime_type("pdf"), None, "a pdf is no image");
        assert_eq!(
            Modality::Image.mime_type("gif"),
            None,
            "Vertex takes no gif"
        );
        assert_eq!(Modality::Video.max_bytes(), Some(100_000_000));
    }

    #[test]
    fn every_default_extension_has_a_mime_type_vertex_accepts() {
        for m in Modality::ALL {
            assert_eq!(Modality::ALL[m.index()], m);
            for ext in m.default_extensions().split(',') {
                assert!(m.mime_type(ext).is_some(), "{ext} ({m:?})");
            }
        }
    }

    #[test]
    fn serialises_in_snake_case() {
        assert_eq!(
            serde_json::to_string(&Modality::Document).unwrap(),
            "\"document\""
        );
    }
}
