//! File extensions as the settings give them: normalised to lower case without a dot, and
//! refused when they could never match an object name.

/// Why a setting's value is not an extension (or a list of them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtensionError {
    /// Empty, or with characters other than ASCII letters and digits (`a/b`, `tar.gz`, `js*n`).
    #[error("{0:?} is not a file extension (ASCII letters and digits, e.g. txt or .png)")]
    Invalid(String),
    /// `gz` names the compression, not the kind of file: `x.txt.gz` counts as `txt`.
    #[error(
        "{0:?} is not a file extension: .gz files count under their inner extension (x.txt.gz is txt)"
    )]
    Compression(String),
    /// A list with no extension in it (`""`, `" , "`).
    #[error("lists no extension")]
    EmptyList,
}

/// Normalises one extension: trimmed, one leading dot removed, lower case; ASCII letters and
/// digits only, since an object name's extension is what follows its last dot.
pub fn parse_extension(s: &str) -> Result<String, ExtensionError> {
    let t = s.trim();
    let e = t.strip_prefix('.').unwrap_or(t).to_ascii_lowercase();
    if e.is_empty() || !e.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(ExtensionError::Invalid(s.to_owned()));
    }
    if e == "gz" {
        return Err(ExtensionError::Compression(s.to_owned()));
    }
    Ok(e)
}

/// Parses a comma-separated list, skipping empty items (`"txt,,md,"`); a list with no
/// extension at all is an error.
pub fn parse_extension_list(s: &str) -> Result<Vec<String>, ExtensionError> {
    let list = s
        .split(',')
        .filter(|e| !e.trim().is_empty())
        .map(parse_extension)
        .collect::<Result<Vec<_>, _>>()?;
    if list.is_empty() {
        return Err(ExtensionError::EmptyList);
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_are_normalised() {
        assert_eq!(parse_extension(".PNG").unwrap(), "png");
        assert_eq!(parse_extension(" Txt ").unwrap(), "txt");
        assert_eq!(parse_extension("mp4").unwrap(), "mp4");
        for bad in ["", ".", "..png", "a/b", "tar.gz", "js*n", "é", " "] {
            assert_eq!(
                parse_extension(bad),
                Err(ExtensionError::Invalid(bad.to_owned())),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_extension(".GZ"),
            Err(ExtensionError::Compression(_))
        ));
        assert!(
            parse_extension("a/b")
                .unwrap_err()
                .to_string()
                .contains("\"a/b\" is not a file extension")
        );
    }

    #[test]
    fn lists_skip_empty_items_but_not_bad_ones() {
        assert_eq!(parse_extension_list(" .TXT,,md, ").unwrap(), ["txt", "md"]);
        assert_eq!(parse_extension_list(" , "), Err(ExtensionError::EmptyList));
        assert_eq!(parse_extension_list(""), Err(ExtensionError::EmptyList));
        assert_eq!(
            parse_extension_list("json,js*n"),
            Err(ExtensionError::Invalid("js*n".into()))
        );
    }
}
