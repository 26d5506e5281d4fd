//! The value parsers clap runs on each setting, and the reading of the files settings name
//! (`PROMPT=@file`, CONVERT_CONFIG, `MODEL_LIMITS_FILE)`: a bad value is refused here, at parse
//! time, with the message clap shows after the flag and its variable.

use std::path::Path;
use std::time::Duration;

use autotune_layout as layout;

fn parse_bounded_duration(s: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < min || d > max {
        return Err(format!(
            "{s} is not between {} and {}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(d)
}

pub(super) fn parse_http_timeout(s: &str) -> Result<Duration, String> {
    parse_bounded_duration(s, Duration::from_millis(100), Duration::from_secs(3600))
}

pub(super) fn parse_retry_deadline(s: &str) -> Result<Duration, String> {
    parse_bounded_duration(s, Duration::ZERO, Duration::from_secs(6 * 3600))
}

/// Largest file a setting may name (a prompt, templates, model limits): these are
/// configuration, never data, and must not exhaust memory (`PROMPT=@/dev/zero`).
pub const MAX_SETTING_FILE_BYTES: u64 = 1 << 20;

/// Where kernel and device files live: never configuration (`@/proc/self/environ` would put
/// the environment's secrets into every dataset).
const SYSTEM_FOLDERS: [&str; 3] = ["/proc", "/sys", "/dev"];

/// File systems of kernel state, wherever they are mounted (procfs, sysfs, debugfs, tracefs,
/// securityfs, cgroup and cgroup2, configfs, efivarfs, bpf).
const KERNEL_FILE_SYSTEMS: [u64; 10] = [
    0x9fa0,
    0x6265_6572,
    0x6462_6720,
    0x7472_6163,
    0x7363_6673,
    0x0027_e0eb,
    0x6367_7270,
    0x6265_6570,
    0xde5e_81e4,
    0xcafe_4a11,
];

/// Reads a file a setting names: a regular file of at most [`MAX_SETTING_FILE_BYTES`], as
/// UTF-8 text, that is not a kernel or device file: the path is resolved (links followed) and
/// refused under /proc, /sys or /dev, and on a kernel file system mounted anywhere else.
pub fn read_setting_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let real = std::fs::canonicalize(path).map_err(cannot)?;
    let kernel = || {
        format!(
            "{} is a kernel or device file ({}), not a configuration file",
            path.display(),
            real.display()
        )
    };
    if SYSTEM_FOLDERS.iter().any(|f| real.starts_with(f)) {
        return Err(kernel());
    }
    let file = std::fs::File::open(&real).map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if let Ok(fs) = rustix::fs::fstatfs(&file)
        && KERNEL_FILE_SYSTEMS.contains(&(fs.f_type as u64))
    {
        return Err(kernel());
    }
    if meta.len() > MAX_SETTING_FILE_BYTES {
        return Err(format!(
            "{} is larger than {MAX_SETTING_FILE_BYTES} bytes ({} bytes)",
            path.display(),
            meta.len()
        ));
    }
    let mut text = String::new();
    file.take(MAX_SETTING_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.len() as u64 > MAX_SETTING_FILE_BYTES {
        return Err(format!(
            "{} is larger than {MAX_SETTING_FILE_BYTES} bytes",
            path.display()
        ));
    }
    Ok(text)
}

pub(super) fn parse_bucket(s: &str) -> Result<String, String> {
    crate::storage::open(s).map_err(|e| e.to_string())?;
    Ok(s.to_owned())
}

pub(super) fn parse_eval_ratio(s: &str) -> Result<f64, String> {
    parse_f64_in(s, |v| (0.0..=0.5).contains(&v), "[0, 0.5]")
}

/// EVAL_CHECKPOINTS: `all`, `last` or `last:K`.
pub(super) fn parse_checkpoints(
    s: &str,
) -> Result<crate::evaluate::checkpoints::Selection, String> {
    s.parse()
        .map_err(|e: crate::evaluate::checkpoints::InvalidSelection| e.to_string())
}

pub(super) fn parse_confidence(s: &str) -> Result<f64, String> {
    parse_f64_in(s, |v| (0.5..1.0).contains(&v), "[0.5, 1)")
}

/// A number `within` the range `shown` (as the error names it).
fn parse_f64_in(s: &str, within: impl Fn(f64) -> bool, shown: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if within(v) {
        Ok(v)
    } else {
        Err(format!("{v} is not in {shown}"))
    }
}

/// NEAR_DUPLICATE_THRESHOLD: a similarity in (0, 1], or `off`.
pub(super) fn parse_near_duplicate_threshold(s: &str) -> Result<NearDuplicates, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(NearDuplicates(None));
    }
    parse_f64_in(s, |v| v > 0.0 && v <= 1.0, "(0, 1] (or off)").map(|v| NearDuplicates(Some(v)))
}

/// NEAR_DUPLICATE_THRESHOLD as parsed: `None` is `off`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NearDuplicates(pub Option<f64>);

impl std::fmt::Display for NearDuplicates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v}"),
            None => f.write_str("off"),
        }
    }
}

pub(super) fn parse_split_ratio(s: &str) -> Result<f64, String> {
    parse_f64_in(s, |v| v > 0.0 && v <= 1.0, "(0, 1]")
}

pub(super) fn parse_unit_ratio(s: &str) -> Result<f64, String> {
    parse_f64_in(s, |v| (0.0..=1.0).contains(&v), "[0, 1]")
}

pub(super) fn parse_positive(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v > 0.0 && v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{v} is not a positive number"))
    }
}

pub(super) fn parse_adapter_size(s: &str) -> Result<u8, String> {
    match s.parse::<u8>() {
        Ok(v @ (1 | 2 | 4 | 8 | 16 | 32)) => Ok(v),
        _ => Err(format!("{s:?} is not one of 1, 2, 4, 8, 16, 32")),
    }
}

/// Lease bounds: a second at least (renewals every third of it), the lease's own longest
/// (a dead run's lock must expire within a day).
const MIN_LEASE: Duration = Duration::from_secs(1);
const MAX_LEASE: Duration = crate::lease::MAX_DURATION;

pub(super) fn parse_lease(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < MIN_LEASE || d > MAX_LEASE {
        return Err("must be between 1s and 24h".to_owned());
    }
    Ok(d)
}

/// A humantime duration of at most a year: larger values overflow the clocks they are added to.
pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    const MAX: Duration = Duration::from_secs(366 * 24 * 3600);
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d > MAX {
        return Err(format!("{s:?} is longer than a year"));
    }
    Ok(d)
}

pub(super) fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("must be longer than 0s".to_owned());
    }
    Ok(d)
}

pub(super) fn parse_extension(s: &str) -> Result<String, String> {
    layout::parse_extension(s).map_err(|e| e.to_string())
}

pub(super) fn parse_file_name(s: &str) -> Result<String, String> {
    crate::storage::validate_key(s).map_err(|e| e.to_string())?;
    if s.contains('/') {
        return Err(format!("{s:?} must be a file name, not a path"));
    }
    Ok(s.to_owned())
}

/// A folder inside the bucket: relative, without `.` or `..` segments, so that nothing
/// outside the bucket is ever listed or read. Empty means the bucket's root.
pub(super) fn parse_folder(s: &str) -> Result<String, String> {
    if s.starts_with('/') {
        return Err(format!(
            "{s:?} is an absolute path: folders are relative to the bucket"
        ));
    }
    let body = s.trim_end_matches('/');
    if !body.is_empty() && crate::storage::validate_key(body).is_err() {
        return Err(format!(
            "{s:?} has an empty, '.' or '..' segment, or a line break: folders stay inside the bucket"
        ));
    }
    Ok(s.to_owned())
}

pub(super) fn parse_json_pointer(s: &str) -> Result<String, String> {
    if s.is_empty() || s.starts_with('/') {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a JSON pointer (it must start with '/', e.g. /answer)"
        ))
    }
}

/// `@path` reads the text from a file, so long prompts live beside the configuration.
pub(super) fn parse_text_or_file(s: &str) -> Result<String, String> {
    match s.strip_prefix('@') {
        Some(path) => {
            let text = read_setting_file(Path::new(path))?;
            Ok(text.trim_end_matches(['\r', '\n']).to_owned())
        }
        None => Ok(s.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{parse_err, settings};
    use super::*;

    #[test]
    fn ratios_are_bounded() {
        assert!(parse_split_ratio("0.9").is_ok());
        assert!(parse_split_ratio("1").is_ok());
        assert!(
            parse_split_ratio("1.5")
                .unwrap_err()
                .contains("not in (0, 1]")
        );
        assert!(parse_split_ratio("0").is_err());
        assert_eq!(
            parse_near_duplicate_threshold("OFF"),
            Ok(NearDuplicates(None))
        );
        assert_eq!(
            parse_near_duplicate_threshold("0.8"),
            Ok(NearDuplicates(Some(0.8)))
        );
        assert!(parse_near_duplicate_threshold("0").is_err());
        assert!(parse_near_duplicate_threshold("1.2").is_err());
        assert!(parse_split_ratio("abc").is_err());
        assert!(parse_unit_ratio("0").is_ok());
        assert!(parse_unit_ratio("-0.1").is_err());
    }

    #[test]
    fn extensions_are_normalised() {
        assert_eq!(parse_extension(".PNG").unwrap(), "png");
        assert!(parse_extension("a/b").is_err());
        assert!(parse_adapter_size("3").is_err());
        assert_eq!(parse_adapter_size("16").unwrap(), 16);
        assert!(parse_json_pointer("answer").is_err());
        assert!(parse_file_name("a/b.jsonl").is_err());
    }

    #[test]
    fn setting_files_are_ordinary_files_never_kernel_or_device_files() {
        // The environment (secrets) must never become a prompt, and so land in datasets.
        for (flag, setting) in [
            ("--system-instruction", "SYSTEM_INSTRUCTION"),
            ("--prompt", "PROMPT"),
        ] {
            let e = parse_err(&[flag, "@/proc/self/environ"]);
            assert!(e.contains(setting), "{e}");
            assert!(e.contains("/proc"), "{e}");
            assert!(e.contains("kernel or device"), "names the reason: {e}");
        }
        // Through a link, or a path that only resolves into /proc, /sys or /dev.
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("innocent.txt");
        std::os::unix::fs::symlink("/proc/self/environ", &link).unwrap();
        let e = read_setting_file(&link).unwrap_err();
        assert!(e.contains("innocent.txt"), "{e}");
        assert!(
            e.contains("kernel or device file (/proc/"),
            "names where it leads: {e}"
        );
        for bad in [
            "/proc/self/status",
            "/proc/../proc/self/cmdline",
            "/sys/kernel/mm/../uevent_seqnum",
            "/dev/null",
        ] {
            let e = read_setting_file(Path::new(bad)).unwrap_err();
            assert!(e.contains(bad), "{bad}: {e}");
        }
        // Not a regular file.
        let e = read_setting_file(dir.path()).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        // Too large: refused without reading it whole.
        let big = dir.path().join("big.txt");
        std::fs::write(&big, vec![b'a'; (MAX_SETTING_FILE_BYTES + 1) as usize]).unwrap();
        let e = read_setting_file(&big).unwrap_err();
        assert!(e.contains("larger than 1048576 bytes"), "{e}");
        // An ordinary file, also through a link.
        let ok = dir.path().join("prompt.txt");
        std::fs::write(&ok, "Answer briefly.\n").unwrap();
        let ok_link = dir.path().join("prompt-link.txt");
        std::os::unix::fs::symlink(&ok, &ok_link).unwrap();
        assert_eq!(read_setting_file(&ok_link).unwrap(), "Answer briefly.\n");
        let at = format!("@{}", ok.display());
        assert_eq!(
            settings(&["--system-instruction", &at])
                .system_instruction
                .as_deref(),
            Some("Answer briefly.")
        );
    }

    #[test]
    fn folders_stay_inside_the_bucket() {
        for good in ["", "raw", "raw/", "data/raw", "a.b/c"] {
            assert!(parse_folder(good).is_ok(), "{good:?}");
        }
        for bad in [
            "/etc",
            "../../../../etc",
            "..",
            "a/../b",
            "./a",
            "a//b",
            "a\nb",
        ] {
            assert!(parse_folder(bad).is_err(), "{bad:?}");
        }
    }
}
