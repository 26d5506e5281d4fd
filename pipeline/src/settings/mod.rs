//! Settings: every environment variable of the system we replace keeps its name and default,
//! and each is also a long flag (`MIN_SAMPLES` ↔ `--min-samples`). New settings follow the same
//! rule. A bad value is refused by clap at parse time, naming the flag and its variable, with
//! exit code 2.
//!
//! This module is the composition root, as ripgrep's `HiArgs` is: the flags live here and
//! nowhere else, and [`Settings::job_config`], [`Settings::tuner`] and
//! [`ValidateArgs::config`] turn them into each component's own typed configuration
//! (`inventory::Rules`, the converter, `tuner::vertex::Config`, `validate::Config`, …). No
//! component sees a flag. Files that settings name (PROMPT=@file, CONVERT_CONFIG,
//! MODEL_LIMITS_FILE) are read here, once; what the run key digests comes from the same bytes.
//!
//! It is split by role, as ripgrep's `crates/core/flags/` is:
//!
//! * `groups`: the clap argument groups. [`Settings`] (`run` and `plan`) flattens the groups
//!   of one concern each: [`ModelSettings`] (shared with `validate`), [`Trigger`],
//!   [`VertexSettings`], [`EvalSettings`], [`NotifySettings`] and [`HttpSettings`];
//!   [`ValidateArgs`] are `autotune validate`'s. Their doc comments are the `--help` text.
//! * `parse`: the value parsers clap runs on each value, and [`read_setting_file`], the one
//!   way a file a setting names is read (bounded, never a kernel or device file).
//! * `compose`: the composition root, `impl Settings` and the groups' own builders: each
//!   component's configuration, and the checks of settings that make sense only together.
//! * `shape`: the settings that shape the datasets or the tuning job, in one list that builds
//!   the digest the run key includes; a test classifies every argument clap knows against it.
//! * `error`: [`SettingsError`], a setting that cannot be used, named as the user set it.
//!
//! Libraries never see a flag: they take the typed configuration `compose` builds, and their
//! tests build it directly.

mod compose;
mod error;
mod groups;
mod parse;
mod shape;

pub use compose::model_table;
pub use error::SettingsError;
pub use groups::{
    EvalModelArg, EvalSettings, HttpSettings, LogFormat, ModelSettings, NotifySettings,
    OutputFormat, Settings, Trigger, TunerArg, TuningModeArg, ValidateArgs, VertexSettings,
};
pub use parse::{MAX_SETTING_FILE_BYTES, read_setting_file};

/// Settings parsed as the binary parses them, for the tests of every part.
#[cfg(test)]
mod testing {
    use super::Settings;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        settings: Settings,
    }

    pub(super) fn settings(extra: &[&str]) -> Settings {
        use clap::Parser;
        let mut args = vec!["autotune", "--bucket-name", "memory://s"];
        args.extend_from_slice(extra);
        Cli::try_parse_from(args).unwrap().settings
    }

    pub(super) fn parse_err(extra: &[&str]) -> String {
        use clap::Parser;
        let mut args = vec!["autotune", "--bucket-name", "memory://s"];
        args.extend_from_slice(extra);
        Cli::try_parse_from(args).err().unwrap().to_string()
    }
}
