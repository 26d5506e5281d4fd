//! The error of a setting that cannot be used.

/// A setting that cannot be used, named as the user set it. The binary exits 2 on it.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {reason}")]
pub struct SettingsError {
    pub setting: &'static str,
    pub reason: String,
}

pub(super) fn invalid(setting: &'static str, reason: impl Into<String>) -> SettingsError {
    SettingsError {
        setting,
        reason: reason.into(),
    }
}
