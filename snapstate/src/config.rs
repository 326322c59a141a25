//! [`StateConfig`]: state backend configuration in the keys Flink users know, loaded from
//! key/value pairs or a TOML file, building backends, strategies and checkpoint storage by
//! registered name.
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `state.backend.type` | keyed backend by registered name (`heap`, `rocksdb`, a third-party one) | `heap` |
//! | `execution.checkpointing.incremental` | checkpoint with the backend's `<backend>-incremental` strategy | `false` |
//! | `execution.checkpointing.strategy` | checkpoint with this registered strategy instead (overrides the above) | the backend's default |
//! | `execution.checkpointing.snapshot-compression` | key-group decorator by name (`none`, `snappy`, `lz4`); `true` means `snappy`, `false` `none`, as in Flink | `none` |
//! | `execution.checkpointing.dir` (or `state.checkpoints.dir`) | checkpoint storage: a path or `file:///path` (a local directory), `s3://bucket/prefix` or `memory://name/prefix` (object storage, feature `object-storage`) | required to build storage |
//! | `s3.*` | how object storage is reached: `s3.endpoint`, `s3.region`, `s3.access-key`, `s3.secret-key`, `s3.path.style.access`, part size, retries (see `state_storage_object::ObjectStoreOptions`) | the AWS environment variables |
//! | `state.backend.local-recovery` | keep task-local copies | `false` |
//! | `taskmanager.state.local.root-dirs` | where task-local copies go | `<checkpoint dir>/local` for a local checkpoint directory |
//! | `pipeline.max-parallelism` | number of key groups | `128` |
//! | `execution.checkpointing.timeout` | a checkpoint still pending this long is aborted | `10 min` |
//! | `execution.checkpointing.max-concurrent-checkpoints` | pending checkpoints at most; a trigger beyond is refused | `1` |
//! | `execution.checkpointing.min-pause` | least time from a completed checkpoint to the next trigger | `0 ms` |
//! | `execution.checkpointing.tolerable-failed-checkpoints` | failed checkpoints in a row the job survives | `0` |
//! | `execution.checkpointing.num-retained` | completed checkpoints kept (savepoints are never discarded) | `1` |
//! | `state.backend.<type>.*` | passed to backend `<type>`, when it is the one named, as its `<type>.*` options (`rocksdb.block-cache-size`, `heap.incremental.materialization-fraction`, a third-party backend's own) | |
//!
//! Credentials (`s3.access-key`, `s3.secret-key`, `s3.session-token`) never appear in
//! `Debug` output or errors; the environment (`AWS_ACCESS_KEY_ID`, ...) keeps them out of
//! configuration files altogether.
//!
//! In a TOML file the keys may be written flat (`"state.backend.type" = "rocksdb"`) or as
//! nested tables (`[state.backend]` `type = "rocksdb"`); both mean the same.
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "heap")]
//! # {
//! use snapstate::config::StateConfig;
//! use snapstate::KeyGroupRange;
//!
//! let config = StateConfig::from_toml_str(r#"
//!     [state.backend]
//!     type = "heap"
//!     [execution.checkpointing]
//!     snapshot-compression = "none"
//! "#)?;
//! let registry = snapstate::registry();
//! let params = config.keyed_params(KeyGroupRange::new(0, 127)?, registry)?;
//! let backend = config.keyed_backend(registry)?.create(params, registry)?;
//! assert_eq!(backend.backend_name(), "heap");
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use state_api::MaxParallelism;
use state_api::{
    CheckpointStorage, KeyGroupRange, KeyedBackendParams, KeyedStateBackendFactory,
    LocalRecoveryConfig, PluginKind, Registry,
};
use state_storage_local::{LocalCheckpointStorage, TaskLocalDirectory};

/// Why a configuration does not load or does not build.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A key this configuration does not know.
    #[error("unknown configuration key `{key}`; known: {known}")]
    UnknownKey {
        /// The key.
        key: String,
        /// The known keys, comma separated.
        known: String,
    },
    /// A value that does not parse for its key.
    #[error("configuration key `{key}` = `{value}`: {reason}")]
    InvalidValue {
        /// The key.
        key: String,
        /// The value as given.
        value: String,
        /// What was expected.
        reason: String,
    },
    /// A file that cannot be read, or is not TOML.
    #[error("configuration file {}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A plugin the configuration names is not linked into this binary.
    #[error("{what} `{name}` is not linked: {hint}")]
    NotLinked {
        /// What kind of plugin (`backend`, `snapshot strategy`, `compression`).
        what: &'static str,
        /// Its name.
        name: String,
        /// What to do: the feature to enable, or what is linked.
        hint: String,
    },
    /// A setting that is needed was not given.
    #[error("configuration key `{key}` is required {why}")]
    Missing {
        /// The key.
        key: &'static str,
        /// What needs it.
        why: &'static str,
    },
    /// Storage or parameters the contract crate refused.
    #[error(transparent)]
    Api(#[from] state_api::Error),
}

/// Keys [`StateConfig`] reads (besides `state.backend.<type>.*` and `s3.*`).
const KEYS: [&str; 14] = [
    "state.backend.type",
    "execution.checkpointing.incremental",
    "execution.checkpointing.strategy",
    "execution.checkpointing.snapshot-compression",
    "execution.checkpointing.dir",
    "state.checkpoints.dir",
    "state.backend.local-recovery",
    "taskmanager.state.local.root-dirs",
    "pipeline.max-parallelism",
    "execution.checkpointing.timeout",
    "execution.checkpointing.max-concurrent-checkpoints",
    "execution.checkpointing.min-pause",
    "execution.checkpointing.tolerable-failed-checkpoints",
    "execution.checkpointing.num-retained",
];

/// The in-tree plugins by name, with the facade feature that links them.
const FEATURES: [(&str, &str); 8] = [
    ("heap", "heap"),
    ("heap-incremental", "heap"),
    ("rocksdb", "rocksdb"),
    ("rocksdb-full", "rocksdb"),
    ("rocksdb-incremental", "rocksdb"),
    ("operator", "operator"),
    ("snappy", "snappy"),
    ("lz4", "lz4"),
];

/// `s3.*` options for object storage as given, checked when storage is built. `Debug`
/// prints credentials as `***`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StorageOptions(BTreeMap<String, String>);

impl StorageOptions {
    /// Keys whose values are credentials.
    const SECRET_KEYS: [&'static str; 3] = ["s3.access-key", "s3.secret-key", "s3.session-token"];

    /// Sets `key` (an `s3.*` key) to `value`.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into(), value.into());
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Every option, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
    }
}

impl std::fmt::Debug for StorageOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(key, value)| {
                let shown = match Self::SECRET_KEYS.contains(&key.as_str()) {
                    true => "***",
                    false => value.as_str(),
                };
                (key, shown)
            }))
            .finish()
    }
}

/// State backend configuration; see the [module documentation](self) for the keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    /// `state.backend.type`.
    pub backend: String,
    /// `execution.checkpointing.incremental`.
    pub incremental: bool,
    /// `execution.checkpointing.strategy`.
    pub strategy: Option<String>,
    /// `execution.checkpointing.snapshot-compression`.
    pub compression: String,
    /// `execution.checkpointing.dir` / `state.checkpoints.dir` when it names a local
    /// directory (a path or `file://`).
    pub checkpoint_dir: Option<PathBuf>,
    /// `execution.checkpointing.dir` / `state.checkpoints.dir` when it names object
    /// storage (`s3://`, `memory://`); at most one of this and `checkpoint_dir` is set.
    pub checkpoint_url: Option<String>,
    /// `s3.*`: how object storage is reached.
    pub storage_options: StorageOptions,
    /// `state.backend.local-recovery`.
    pub local_recovery: bool,
    /// `taskmanager.state.local.root-dirs`.
    pub local_recovery_dir: Option<PathBuf>,
    /// `pipeline.max-parallelism`.
    pub max_parallelism: MaxParallelism,
    /// `state.backend.<type>.*` of every backend type, as `<type>.*`; the named backend
    /// gets its own (see [`keyed_params`](Self::keyed_params)).
    pub backend_options: BTreeMap<String, String>,
    /// `execution.checkpointing.timeout` (default 10 min), `max-concurrent-checkpoints`
    /// (1), `min-pause` (0), `tolerable-failed-checkpoints` (0) and `num-retained` (1):
    /// what a job's checkpoint coordinator keeps to.
    pub checkpointing: Checkpointing,
}

/// The `execution.checkpointing.*` keys of the checkpoint lifecycle, with Flink's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpointing {
    /// `execution.checkpointing.timeout`.
    pub timeout: Duration,
    /// `execution.checkpointing.max-concurrent-checkpoints`.
    pub max_concurrent: NonZeroUsize,
    /// `execution.checkpointing.min-pause`.
    pub min_pause: Duration,
    /// `execution.checkpointing.tolerable-failed-checkpoints`.
    pub tolerable_failures: u32,
    /// `execution.checkpointing.num-retained`.
    pub num_retained: NonZeroUsize,
}

impl Default for Checkpointing {
    fn default() -> Self {
        Checkpointing {
            timeout: Duration::from_secs(600),
            max_concurrent: NonZeroUsize::MIN,
            min_pause: Duration::ZERO,
            tolerable_failures: 0,
            num_retained: NonZeroUsize::MIN,
        }
    }
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            backend: "heap".into(),
            incremental: false,
            strategy: None,
            compression: "none".into(),
            checkpoint_dir: None,
            checkpoint_url: None,
            storage_options: StorageOptions::default(),
            local_recovery: false,
            local_recovery_dir: None,
            max_parallelism: MaxParallelism::of(128),
            backend_options: BTreeMap::new(),
            checkpointing: Checkpointing::default(),
        }
    }
}

fn invalid(key: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::InvalidValue {
        key: key.to_owned(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

/// A duration such as `10 min`, `30s`, `1h 30min` or `500 ms`.
fn duration(key: &str, value: &str) -> Result<Duration, ConfigError> {
    let compact: String = value.split_whitespace().collect();
    humantime::parse_duration(&compact).map_err(|_| {
        invalid(
            key,
            value,
            "expected a duration such as `10 min`, `30 s` or `500 ms`",
        )
    })
}

/// A whole number of at least 1.
fn positive(key: &str, value: &str) -> Result<NonZeroUsize, ConfigError> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid(key, value, "expected a whole number of at least 1"))
}

fn boolean(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(key, value, "expected `true` or `false`")),
    }
}

/// Schemes of object storage (`state-storage-object`).
const OBJECT_SCHEMES: [&str; 2] = ["s3", "memory"];

fn path(value: &str) -> Result<PathBuf, String> {
    match value.split_once("://") {
        None => Ok(PathBuf::from(value)),
        Some(("file", rest)) => Ok(PathBuf::from(rest)),
        Some((scheme, _)) => Err(format!(
            "`{scheme}://` is not a local directory; use a local path or file:///path"
        )),
    }
}

/// Flattens nested TOML tables into dotted keys with string values.
fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<(String, String)>) {
    for (key, value) in table {
        let key = match prefix.is_empty() {
            true => key.clone(),
            false => format!("{prefix}.{key}"),
        };
        match value {
            toml::Value::Table(inner) => flatten(&key, inner, out),
            toml::Value::String(text) => out.push((key, text.clone())),
            other => out.push((key, other.to_string())),
        }
    }
}

impl StateConfig {
    /// A configuration from `key = value` pairs, over the defaults.
    ///
    /// # Errors
    ///
    /// [`ConfigError::UnknownKey`] and [`ConfigError::InvalidValue`] naming the key.
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, ConfigError> {
        let mut config = StateConfig::default();
        for (key, value) in pairs {
            config.set(key.as_ref(), value.as_ref())?;
        }
        Ok(config)
    }

    /// A configuration from TOML text (flat dotted keys or nested tables).
    ///
    /// # Errors
    ///
    /// [`ConfigError::File`] for text that is not TOML, and the errors of
    /// [`from_pairs`](Self::from_pairs).
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let table: toml::Table =
            text.parse()
                .map_err(|err: toml::de::Error| ConfigError::File {
                    path: PathBuf::from("<text>"),
                    reason: err.to_string(),
                })?;
        let mut pairs = Vec::new();
        flatten("", &table, &mut pairs);
        Self::from_pairs(pairs)
    }

    /// A configuration from the TOML file at `path`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::File`] naming the file, and the errors of
    /// [`from_pairs`](Self::from_pairs).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError::File {
            path: path.to_path_buf(),
            reason: err.to_string(),
        })?;
        Self::from_toml_str(&text).map_err(|err| match err {
            ConfigError::File { reason, .. } => ConfigError::File {
                path: path.to_path_buf(),
                reason,
            },
            other => other,
        })
    }

    /// Sets `key` to `value`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::UnknownKey`] and [`ConfigError::InvalidValue`] naming the key.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        // `state.backend.<type>.<option>`: the keys of this crate under `state.backend.`
        // (`type`, `local-recovery`) have no second dot.
        if let Some(option) = key.strip_prefix("state.backend.")
            && let Some((backend, name)) = option.split_once('.')
            && !backend.is_empty()
            && !name.is_empty()
        {
            self.backend_options
                .insert(option.to_owned(), value.to_owned());
            return Ok(());
        }
        match key {
            "state.backend.type" => self.backend = value.to_owned(),
            "execution.checkpointing.incremental" => self.incremental = boolean(key, value)?,
            "execution.checkpointing.strategy" => self.strategy = Some(value.to_owned()),
            "execution.checkpointing.snapshot-compression" => {
                self.compression = match value {
                    "true" => "snappy".to_owned(),
                    "false" => "none".to_owned(),
                    name => name.to_owned(),
                }
            }
            "execution.checkpointing.dir" | "state.checkpoints.dir" => {
                match value.split_once("://") {
                    Some((scheme, _)) if OBJECT_SCHEMES.contains(&scheme) => {
                        self.checkpoint_url = Some(value.to_owned());
                        self.checkpoint_dir = None;
                    }
                    Some((scheme, _)) if scheme != "file" => {
                        return Err(invalid(
                            key,
                            value,
                            &format!(
                                "checkpoint storage scheme `{scheme}://` is not supported; use a local path, file:///path, s3://bucket/prefix or memory://name/prefix"
                            ),
                        ));
                    }
                    _ => {
                        self.checkpoint_dir =
                            Some(path(value).map_err(|reason| invalid(key, value, &reason))?);
                        self.checkpoint_url = None;
                    }
                }
            }
            _ if key.starts_with("s3.") => {
                #[cfg(feature = "object-storage")]
                state_storage_object::ObjectStoreOptions::default().set(key, value)?;
                self.storage_options.insert(key, value);
            }
            "state.backend.local-recovery" => self.local_recovery = boolean(key, value)?,
            "taskmanager.state.local.root-dirs" => {
                self.local_recovery_dir =
                    Some(path(value).map_err(|reason| invalid(key, value, &reason))?)
            }
            "pipeline.max-parallelism" => {
                self.max_parallelism = value
                    .parse()
                    .ok()
                    .and_then(|n| MaxParallelism::new(n).ok())
                    .ok_or_else(|| invalid(key, value, "expected a whole number from 1 to 32768"))?
            }
            "execution.checkpointing.timeout" => {
                self.checkpointing.timeout = duration(key, value)?;
            }
            "execution.checkpointing.min-pause" => {
                self.checkpointing.min_pause = duration(key, value)?;
            }
            "execution.checkpointing.max-concurrent-checkpoints" => {
                self.checkpointing.max_concurrent = positive(key, value)?;
            }
            "execution.checkpointing.num-retained" => {
                self.checkpointing.num_retained = positive(key, value)?;
            }
            "execution.checkpointing.tolerable-failed-checkpoints" => {
                self.checkpointing.tolerable_failures = value
                    .trim()
                    .parse()
                    .map_err(|_| invalid(key, value, "expected a whole number"))?;
            }
            _ => {
                return Err(ConfigError::UnknownKey {
                    key: key.to_owned(),
                    known: format!("{}, state.backend.<type>.*, s3.*", KEYS.join(", ")),
                });
            }
        }
        Ok(())
    }

    /// The error for plugin `name` of kind `kind` missing from `registry`.
    fn not_linked(
        registry: &Registry,
        what: &'static str,
        kind: PluginKind,
        name: &str,
    ) -> ConfigError {
        let hint = match FEATURES.iter().find(|(plugin, _)| *plugin == name) {
            Some((_, feature)) => format!("enable feature `{feature}` of snapstate"),
            None => format!("linked: {}", registry.names(kind).join(", ")),
        };
        ConfigError::NotLinked {
            what,
            name: name.to_owned(),
            hint,
        }
    }

    /// The keyed backend factory the configuration names.
    ///
    /// # Errors
    ///
    /// [`ConfigError::NotLinked`] naming the feature to enable, or what is linked.
    pub fn keyed_backend(
        &self,
        registry: &Registry,
    ) -> Result<Arc<dyn KeyedStateBackendFactory>, ConfigError> {
        registry.keyed_backend(&self.backend).map_err(|_| {
            Self::not_linked(registry, "backend", PluginKind::KeyedBackend, &self.backend)
        })
    }

    /// The checkpoint strategy: `execution.checkpointing.strategy`, else
    /// `<backend>-incremental` when incremental checkpoints are on, else the backend's
    /// default (`None`).
    ///
    /// # Errors
    ///
    /// [`ConfigError::NotLinked`] for a strategy that is not linked (for incremental
    /// checkpoints: the backend has none); [`ConfigError::InvalidValue`] for a strategy of
    /// another backend.
    pub fn checkpoint_strategy(&self, registry: &Registry) -> Result<Option<String>, ConfigError> {
        let name = match (&self.strategy, self.incremental) {
            (Some(name), _) => name.clone(),
            (None, true) => format!("{}-incremental", self.backend),
            (None, false) => return Ok(None),
        };
        let factory = registry.keyed_strategy(&name).map_err(|_| {
            match self.strategy.is_none() && !FEATURES.iter().any(|(p, _)| *p == name) {
                true => ConfigError::NotLinked {
                    what: "incremental snapshot strategy",
                    name: name.clone(),
                    hint: format!(
                        "backend `{}` has no incremental strategy linked; linked strategies: {}",
                        self.backend,
                        registry.names(PluginKind::KeyedStrategy).join(", ")
                    ),
                },
                false => Self::not_linked(
                    registry,
                    "snapshot strategy",
                    PluginKind::KeyedStrategy,
                    &name,
                ),
            }
        })?;
        if factory.backend() != self.backend {
            return Err(invalid(
                "execution.checkpointing.strategy",
                &name,
                &format!(
                    "the strategy snapshots `{}` backends, not `{}`",
                    factory.backend(),
                    self.backend
                ),
            ));
        }
        Ok(Some(name))
    }

    /// The coordinator configuration of a job of `instances` instances: the
    /// `execution.checkpointing.*` lifecycle keys and `pipeline.max-parallelism`.
    #[cfg(feature = "coordinator")]
    pub fn coordinator_config(
        &self,
        instances: NonZeroU32,
    ) -> state_coordinator::CoordinatorConfig {
        let mut config = state_coordinator::CoordinatorConfig::new(instances, self.max_parallelism);
        config.timeout = self.checkpointing.timeout;
        config.max_concurrent = self.checkpointing.max_concurrent;
        config.min_pause = self.checkpointing.min_pause;
        config.tolerable_failures = self.checkpointing.tolerable_failures;
        config.num_retained = self.checkpointing.num_retained;
        config
    }

    /// Backend parameters for `range`: strategy, compression, local recovery, and the
    /// options of the named backend (`state.backend.<type>.*` of its type) as configured.
    ///
    /// # Errors
    ///
    /// [`ConfigError::NotLinked`] for a strategy or decorator that is not linked.
    pub fn keyed_params(
        &self,
        range: KeyGroupRange,
        registry: &Registry,
    ) -> Result<KeyedBackendParams, ConfigError> {
        registry.compression(&self.compression).map_err(|_| {
            Self::not_linked(
                registry,
                "compression",
                PluginKind::Compression,
                &self.compression,
            )
        })?;
        let mut params = KeyedBackendParams::new(self.max_parallelism, range);
        params.strategy = self.checkpoint_strategy(registry)?;
        params.compression = self.compression.clone();
        let prefix = format!("{}.", self.backend);
        params.options = self
            .backend_options
            .iter()
            .filter(|(key, _)| key.starts_with(&prefix))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        if self.local_recovery {
            let root = match (&self.local_recovery_dir, &self.checkpoint_dir) {
                (Some(dir), _) => dir.clone(),
                (None, Some(dir)) => dir.join("local"),
                (None, None) => {
                    return Err(ConfigError::Missing {
                        key: "taskmanager.state.local.root-dirs",
                        why: "for local recovery when no local checkpoint directory is set",
                    });
                }
            };
            params.local_recovery =
                LocalRecoveryConfig::enabled(Arc::new(TaskLocalDirectory::new(root)));
        }
        Ok(params)
    }

    /// The checkpoint storage the configuration names: a [`LocalCheckpointStorage`] for a
    /// local directory, object storage (feature `object-storage`) for `s3://` and
    /// `memory://` URLs, its store configured from the `s3.*` keys.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Missing`] without a checkpoint directory; [`ConfigError::NotLinked`]
    /// for object storage without feature `object-storage`; [`ConfigError::Api`] when the
    /// directory cannot be created or the store refuses (a missing bucket is
    /// [`state_api::Error::NotFound`], refused credentials
    /// [`state_api::Error::AccessDenied`]).
    pub fn storage(&self) -> Result<Arc<dyn CheckpointStorage>, ConfigError> {
        if let Some(url) = &self.checkpoint_url {
            return self.object_storage(url);
        }
        let dir = self.checkpoint_dir.as_ref().ok_or(ConfigError::Missing {
            key: "execution.checkpointing.dir",
            why: "to store checkpoints",
        })?;
        Ok(Arc::new(LocalCheckpointStorage::new(dir)?))
    }

    #[cfg(feature = "object-storage")]
    fn object_storage(&self, url: &str) -> Result<Arc<dyn CheckpointStorage>, ConfigError> {
        use state_storage_object::{ObjectCheckpointStorage, ObjectStoreOptions};
        let options = ObjectStoreOptions::from_pairs(self.storage_options.iter())?;
        Ok(Arc::new(ObjectCheckpointStorage::open(url, options)?))
    }

    #[cfg(not(feature = "object-storage"))]
    fn object_storage(&self, url: &str) -> Result<Arc<dyn CheckpointStorage>, ConfigError> {
        Err(ConfigError::NotLinked {
            what: "checkpoint storage",
            name: url.to_owned(),
            hint: "enable feature `object-storage` of snapstate".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "heap")]
    #[test]
    fn checkpointing_keys_set_the_lifecycle_and_refuse_bad_values() {
        assert_eq!(
            StateConfig::default().checkpointing,
            Checkpointing::default()
        );
        let config = StateConfig::from_toml_str(
            r#"
            [execution.checkpointing]
            timeout = "1 h 30 min"
            min-pause = "500ms"
            max-concurrent-checkpoints = 2
            tolerable-failed-checkpoints = 3
            num-retained = 4
            "#,
        )
        .unwrap();
        let expected = Checkpointing {
            timeout: Duration::from_secs(90 * 60),
            max_concurrent: NonZeroUsize::new(2).unwrap(),
            min_pause: Duration::from_millis(500),
            tolerable_failures: 3,
            num_retained: NonZeroUsize::new(4).unwrap(),
        };
        assert_eq!(config.checkpointing, expected);
        for (key, value) in [
            ("execution.checkpointing.timeout", "soon"),
            ("execution.checkpointing.min-pause", "-1 s"),
            ("execution.checkpointing.num-retained", "0"),
            ("execution.checkpointing.max-concurrent-checkpoints", "many"),
            ("execution.checkpointing.tolerable-failed-checkpoints", "-1"),
        ] {
            let err = StateConfig::from_pairs([(key, value)]).unwrap_err();
            assert!(
                matches!(&err, ConfigError::InvalidValue { key: named, .. } if named == key),
                "{key} = {value}: {err}"
            );
        }
    }

    #[cfg(feature = "coordinator")]
    #[test]
    fn the_coordinator_config_carries_the_keys_and_the_max_parallelism() {
        let config = StateConfig::from_pairs([
            ("execution.checkpointing.num-retained", "3"),
            ("execution.checkpointing.timeout", "2 min"),
            ("pipeline.max-parallelism", "256"),
        ])
        .unwrap();
        let coordination = config.coordinator_config(NonZeroU32::new(4).unwrap());
        assert_eq!(coordination.num_retained.get(), 3);
        assert_eq!(coordination.timeout, Duration::from_secs(120));
        assert_eq!(coordination.max_parallelism.get(), 256);
        assert_eq!(coordination.instances.get(), 4);
    }

    #[test]
    fn a_third_party_backend_gets_its_own_options_and_no_others() {
        let config = StateConfig::from_pairs([
            ("state.backend.type", "my-tree"),
            ("state.backend.my-tree.fanout", "16"),
            ("state.backend.my-tree.cache.size", "1mb"),
            ("state.backend.rocksdb.block-cache-size", "1048576"),
        ])
        .unwrap();
        let range = KeyGroupRange::new(0, 127).unwrap();
        let params = config.keyed_params(range, crate::registry()).unwrap();
        let options: Vec<(&str, &str)> = params
            .options
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        assert_eq!(
            options,
            [("my-tree.cache.size", "1mb"), ("my-tree.fanout", "16")]
        );
        for key in [
            "state.backend.",
            "state.backend.x",
            "state.backend..x",
            "state.backend.x.",
        ] {
            let err = StateConfig::from_pairs([(key, "1")]).unwrap_err();
            assert!(
                matches!(err, ConfigError::UnknownKey { .. }),
                "{key}: {err}"
            );
        }
    }

    #[test]
    fn pairs_and_toml_tables_mean_the_same() {
        let pairs = StateConfig::from_pairs([
            ("state.backend.type", "rocksdb"),
            ("execution.checkpointing.incremental", "true"),
            ("execution.checkpointing.snapshot-compression", "true"),
            ("execution.checkpointing.dir", "file:///tmp/checkpoints"),
            ("pipeline.max-parallelism", "256"),
            ("state.backend.rocksdb.block-cache-size", "1048576"),
        ])
        .unwrap();
        let nested = StateConfig::from_toml_str(
            r#"
            pipeline.max-parallelism = 256
            [state.backend]
            type = "rocksdb"
            rocksdb.block-cache-size = 1048576
            [execution.checkpointing]
            incremental = true
            snapshot-compression = true
            dir = "file:///tmp/checkpoints"
            "#,
        )
        .unwrap();
        assert_eq!(pairs, nested);
        assert_eq!(pairs.compression, "snappy");
        assert_eq!(
            pairs.checkpoint_dir,
            Some(PathBuf::from("/tmp/checkpoints"))
        );
        assert_eq!(pairs.backend_options["rocksdb.block-cache-size"], "1048576");
    }

    #[test]
    fn bad_keys_and_values_are_named() {
        let err = StateConfig::from_pairs([("state.backend", "heap")]).unwrap_err();
        assert!(matches!(err, ConfigError::UnknownKey { .. }), "{err}");
        assert!(err.to_string().contains("state.backend.type"), "{err}");
        let err =
            StateConfig::from_pairs([("execution.checkpointing.incremental", "yes")]).unwrap_err();
        assert!(
            err.to_string().contains("expected `true` or `false`"),
            "{err}"
        );
        let err = StateConfig::from_pairs([("pipeline.max-parallelism", "0")]).unwrap_err();
        assert!(matches!(err, ConfigError::InvalidValue { .. }), "{err}");
        let err = StateConfig::from_pairs([("execution.checkpointing.dir", "gs://bucket/x")])
            .unwrap_err();
        assert!(err.to_string().contains("gs://"), "{err}");
        let err = StateConfig::from_toml_str("state = [").unwrap_err();
        assert!(matches!(err, ConfigError::File { .. }), "{err}");
    }

    #[test]
    fn an_unlinked_plugin_names_the_feature_to_enable() {
        let registry = Registry::default();
        let config = StateConfig {
            backend: "rocksdb".into(),
            ..StateConfig::default()
        };
        let err = config.keyed_backend(&registry).err().unwrap();
        assert_eq!(
            err.to_string(),
            "backend `rocksdb` is not linked: enable feature `rocksdb` of snapstate"
        );
        let config = StateConfig {
            backend: "my-backend".into(),
            ..StateConfig::default()
        };
        let err = config.keyed_backend(&registry).err().unwrap();
        assert!(err.to_string().contains("linked: "), "{err}");
        let config = StateConfig {
            compression: "lz4".into(),
            ..StateConfig::default()
        };
        let err = config
            .keyed_params(KeyGroupRange::new(0, 127).unwrap(), &registry)
            .unwrap_err();
        assert!(err.to_string().contains("enable feature `lz4`"), "{err}");
    }

    #[test]
    fn object_storage_urls_and_s3_options_are_kept_and_credentials_never_printed() {
        let config = StateConfig::from_toml_str(
            r#"
            [execution.checkpointing]
            dir = "s3://bucket/jobs/counts"
            [s3]
            endpoint = "http://127.0.0.1:9000"
            access-key = "AKIA-NOT-PRINTED"
            secret-key = "secret-not-printed"
            path.style.access = true
            "#,
        )
        .unwrap();
        assert_eq!(
            config.checkpoint_url.as_deref(),
            Some("s3://bucket/jobs/counts")
        );
        assert_eq!(config.checkpoint_dir, None);
        assert_eq!(
            config.storage_options.get("s3.path.style.access"),
            Some("true")
        );
        let shown = format!("{config:?}");
        assert!(!shown.contains("AKIA-NOT-PRINTED"), "{shown}");
        assert!(!shown.contains("secret-not-printed"), "{shown}");
        let err = StateConfig::from_pairs([
            ("execution.checkpointing.dir", "memory://job"),
            ("state.backend.local-recovery", "true"),
        ])
        .unwrap()
        .keyed_params(KeyGroupRange::new(0, 127).unwrap(), crate::registry())
        .unwrap_err();
        assert!(matches!(err, ConfigError::Missing { .. }), "{err}");
    }

    #[cfg(not(feature = "object-storage"))]
    #[test]
    fn object_storage_without_the_feature_names_it() {
        let config =
            StateConfig::from_pairs([("execution.checkpointing.dir", "memory://job")]).unwrap();
        let err = config.storage().unwrap_err();
        assert!(
            err.to_string().contains("enable feature `object-storage`"),
            "{err}"
        );
    }

    #[cfg(feature = "object-storage")]
    #[test]
    fn memory_urls_build_object_storage_and_bad_s3_options_are_named() {
        use state_api::CheckpointId;
        use std::io::Write;
        let config =
            StateConfig::from_pairs([("execution.checkpointing.dir", "memory://config-test/job")])
                .unwrap();
        let storage = config.storage().unwrap();
        assert_eq!(storage.location(), "memory://config-test/job");
        let factory = storage.stream_factory(CheckpointId::new(1)).unwrap();
        let mut out = factory
            .create_output_stream(state_api::CheckpointedStateScope::Exclusive)
            .unwrap();
        out.write_all(b"state").unwrap();
        assert_eq!(out.close_and_get_handle().unwrap().state_size(), 5);
        let err = StateConfig::from_pairs([("s3.upload.part-size", "1 kb")]).unwrap_err();
        assert!(err.to_string().contains("s3.upload.part-size"), "{err}");
        let err = StateConfig::from_pairs([("s3.secret-key-typo", "hunter2")]).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[cfg(feature = "heap")]
    #[test]
    fn heap_with_incremental_checkpoints_picks_heap_incremental_and_its_options() {
        let config = StateConfig::from_pairs([
            ("execution.checkpointing.incremental", "true"),
            (
                "state.backend.heap.incremental.materialization-fraction",
                "0.5",
            ),
        ])
        .unwrap();
        let registry = crate::registry();
        let params = config
            .keyed_params(KeyGroupRange::new(0, 127).unwrap(), registry)
            .unwrap();
        assert_eq!(params.strategy.as_deref(), Some("heap-incremental"));
        assert_eq!(
            params.options["heap.incremental.materialization-fraction"],
            "0.5"
        );
        let backend = config
            .keyed_backend(registry)
            .unwrap()
            .create(params, registry)
            .unwrap();
        assert_eq!(backend.backend_name(), "heap");
    }

    #[cfg(feature = "heap")]
    #[test]
    fn an_incremental_strategy_a_backend_lacks_is_named() {
        let config = StateConfig::from_pairs([
            ("state.backend.type", "third-party"),
            ("execution.checkpointing.incremental", "true"),
        ])
        .unwrap();
        let err = config.checkpoint_strategy(crate::registry()).unwrap_err();
        assert!(
            err.to_string()
                .contains("backend `third-party` has no incremental strategy linked"),
            "{err}"
        );
    }

    #[cfg(feature = "rocksdb")]
    #[test]
    fn rocksdb_with_incremental_checkpoints_builds_a_backend_that_checkpoints_incrementally() {
        use state_api::{CheckpointId, SnapshotRequest};
        let dir = tempfile::tempdir().unwrap();
        let config = StateConfig::from_pairs([
            ("state.backend.type", "rocksdb"),
            ("execution.checkpointing.incremental", "true"),
            ("execution.checkpointing.dir", dir.path().to_str().unwrap()),
        ])
        .unwrap();
        let registry = crate::registry();
        let mut params = config
            .keyed_params(KeyGroupRange::new(0, 127).unwrap(), registry)
            .unwrap();
        assert_eq!(params.strategy.as_deref(), Some("rocksdb-incremental"));
        params.working_dir = Some(dir.path().join("work"));
        let mut backend = config
            .keyed_backend(registry)
            .unwrap()
            .create(params, registry)
            .unwrap();
        backend
            .register_state(&state_api::StateMetaInfo::value("count", "void", "bytes"))
            .unwrap();
        backend.set_current_key(b"k").unwrap();
        backend.put_value("count", b"", b"1").unwrap();
        let storage = config.storage().unwrap();
        let task = backend
            .snapshot(
                &SnapshotRequest::new(
                    CheckpointId::new(1),
                    0,
                    state_api::CheckpointOptions::checkpoint().clone(),
                ),
                storage.stream_factory(CheckpointId::new(1)).unwrap(),
            )
            .unwrap();
        let result = task.run().unwrap();
        let handle = result.job_manager_owned().unwrap();
        assert!(
            handle.is::<state_api::IncrementalRemoteKeyedStateHandle>(),
            "{handle:?}"
        );
    }
}
