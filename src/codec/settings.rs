//! The configuration of a codec source (`payload = "codec"`): the keys as written ([`CodecKeys`],
//! composed into a `[[source]]` by `crate::config`), and the checked settings ([`CodecSettings`]).
//! Checking is two steps, so that parsing configuration text reads no file: [`build`] checks the keys,
//! [`load`] (when a configuration file is loaded, for `run` and `check-config` alike) reads the script,
//! compiles it and runs its examples. Problems come back as messages for the configuration to place at
//! `FILE:LINE:COL`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value as Json};

use super::examples::run_examples;
use super::{Codec, CodecLimits};

/// The keys of a codec source.
pub const KEYS: [&str; 5] = [
    "codec",
    "variables",
    "fport",
    "codec_examples",
    "codec_timeout",
];

/// The longest `codec_timeout` that can be configured.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(5);

/// `codec_examples`: what a failing example does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExamplesPolicy {
    /// The codec is refused (the default).
    #[default]
    Refuse,
    /// The failures are logged at start and the codec is used.
    Warn,
}

/// A device's codec: its source's, with the device's own `codec` file (not yet loaded) and its
/// `variables` over the source's.
pub fn for_device(
    source: &CodecSettings,
    codec: Option<&Path>,
    variables: Option<&Map<String, Json>>,
) -> CodecSettings {
    let mut settings = source.clone();
    if let Some(path) = codec {
        settings.path = path.to_path_buf();
        settings.script = String::new();
        settings.example_failures = Vec::new();
    }
    for (name, value) in variables.into_iter().flatten() {
        settings.variables.insert(name.clone(), value.clone());
    }
    settings
}

/// The codec keys as written (all optional; `codec` is required with `payload = "codec"`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CodecKeys {
    pub codec: Option<PathBuf>,
    pub variables: Option<Map<String, Json>>,
    pub fport: Option<u8>,
    pub codec_examples: Option<ExamplesPolicy>,
    pub codec_timeout: Option<Duration>,
}

impl CodecKeys {
    /// The first codec key written, for "only with payload = \"codec\"".
    pub fn first_given(&self) -> Option<&'static str> {
        [
            ("codec", self.codec.is_some()),
            ("variables", self.variables.is_some()),
            ("fport", self.fport.is_some()),
            ("codec_examples", self.codec_examples.is_some()),
            ("codec_timeout", self.codec_timeout.is_some()),
        ]
        .into_iter()
        .find(|(_, given)| *given)
        .map(|(key, _)| key)
    }
}

/// A codec source's (or device's) checked settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodecSettings {
    pub path: PathBuf,
    /// The script, as read by [`load`] (empty until then).
    pub script: String,
    /// Passed to every call as `input.variables`.
    pub variables: Map<String, Json>,
    /// The FPort every payload is decoded with (a serial or radio link has none of its own).
    pub fport: u8,
    pub limits: CodecLimits,
    /// `codec_examples`.
    pub examples: ExamplesPolicy,
    /// The examples that failed under `codec_examples = "warn"` (logged at start).
    pub example_failures: Vec<String>,
}

/// Checks the keys as written (no file is read): `codec` is required, `codec_timeout` in range.
/// `Err((key, message))` names the key at fault. [`load`] reads the codec afterwards.
pub fn build(keys: CodecKeys) -> Result<CodecSettings, (&'static str, String)> {
    let path = keys.codec.ok_or((
        "payload",
        "payload = \"codec\" needs the codec's file: codec = \"codecs/NAME.js\" (relative to this file)".to_string(),
    ))?;
    if path.as_os_str().is_empty() {
        return Err((
            "codec",
            "is empty; write the path of the vendor's .js file".to_string(),
        ));
    }
    let mut limits = CodecLimits::default();
    if let Some(timeout) = keys.codec_timeout {
        if timeout.is_zero() || timeout > MAX_TIMEOUT {
            return Err((
                "codec_timeout",
                "must be longer than zero and at most \"5s\"; a decoder needs a few milliseconds (default \"100ms\")"
                    .to_string(),
            ));
        }
        limits.time_budget = timeout;
    }
    Ok(CodecSettings {
        path,
        script: String::new(),
        variables: keys.variables.unwrap_or_default(),
        fport: keys.fport.unwrap_or(1),
        limits,
        examples: keys.codec_examples.unwrap_or_default(),
        example_failures: Vec::new(),
    })
}

/// Reads the codec (a relative `codec` path is taken from `base_dir`, the configuration file's
/// folder), compiles it and runs its examples. A failing example refuses it unless
/// `codec_examples = "warn"`, which keeps the failures for the log.
pub fn load(settings: &mut CodecSettings, base_dir: &Path) -> Result<(), String> {
    let path = base_dir.join(&settings.path);
    let script = std::fs::read_to_string(&path).map_err(|error| {
        format!(
            "cannot read {}: {error}; write the path of the vendor's .js file",
            path.display()
        )
    })?;
    let failures = check(&path, &script, settings.limits)?;
    if !failures.is_empty() && settings.examples == ExamplesPolicy::Refuse {
        return Err(format!(
            "the codec fails {} of its own examples (fix the codec, or write codec_examples = \"warn\" to use it anyway):\n{}",
            failures.len(),
            failures.join("\n")
        ));
    }
    settings.path = path;
    settings.script = script;
    settings.example_failures = failures;
    Ok(())
}

/// Compiles the codec and runs its examples: the failures, or why it does not load at all.
fn check(path: &Path, script: &str, limits: CodecLimits) -> Result<Vec<String>, String> {
    let mut codec = Codec::load(&path.display().to_string(), script, limits)
        .map_err(|error| error.to_string())?;
    let report = run_examples(path, &mut codec)?;
    Ok(report.failures.iter().map(ToString::to_string).collect())
}
