//! The plugin [`Registry`]: backends, strategies and compression decorators by name.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use crate::{
    Error, KeyedSnapshotStrategyFactory, KeyedStateBackendFactory, OperatorSnapshotStrategyFactory,
    OperatorStateBackendFactory, Result, StreamCompressionDecorator,
    UncompressedStreamCompressionDecorator,
};

/// A link-time registration: a plugin crate's `register` function. Submit one with
/// [`submit_registration!`](crate::submit_registration).
#[derive(Debug)]
pub struct Registration {
    /// The crate that submitted it (for duplicate reports).
    pub crate_name: &'static str,
    /// Registers the crate's plugins.
    pub register: fn(&mut Registry) -> Result<()>,
}

inventory::collect!(Registration);

/// Submits a plugin crate's `register` function for link-time collection by
/// [`Registry::linked`].
#[macro_export]
macro_rules! submit_registration {
    ($register:path) => {
        $crate::__private::inventory::submit! {
            $crate::Registration {
                crate_name: ::core::env!("CARGO_PKG_NAME"),
                register: $register,
            }
        }
    };
}

/// The kind of a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PluginKind {
    /// A [`KeyedStateBackendFactory`].
    KeyedBackend,
    /// An [`OperatorStateBackendFactory`].
    OperatorBackend,
    /// A [`KeyedSnapshotStrategyFactory`].
    KeyedStrategy,
    /// An [`OperatorSnapshotStrategyFactory`].
    OperatorStrategy,
    /// A [`StreamCompressionDecorator`].
    Compression,
}

impl PluginKind {
    /// Every kind, in listing order.
    pub const ALL: [PluginKind; 5] = [
        PluginKind::KeyedBackend,
        PluginKind::OperatorBackend,
        PluginKind::KeyedStrategy,
        PluginKind::OperatorStrategy,
        PluginKind::Compression,
    ];

    /// Human-readable name of the kind, as used in errors.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::KeyedBackend => "keyed state backend",
            PluginKind::OperatorBackend => "operator state backend",
            PluginKind::KeyedStrategy => "keyed snapshot strategy",
            PluginKind::OperatorStrategy => "operator snapshot strategy",
            PluginKind::Compression => "compression decorator",
        }
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of [`Registry::plugins`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// What kind of plugin.
    pub kind: PluginKind,
    /// Its registered name.
    pub name: String,
    /// Its one-line description.
    pub description: String,
    /// The crate (or caller) that registered it.
    pub registered_by: String,
}

/// The plugins of one kind by name, each with what [`Registry::plugins`] lists of it.
struct Table<T> {
    kind: PluginKind,
    entries: BTreeMap<String, (T, PluginInfo)>,
}

impl<T: Clone> Table<T> {
    fn new(kind: PluginKind) -> Self {
        Table {
            kind,
            entries: BTreeMap::new(),
        }
    }

    fn insert(&mut self, name: &str, description: &str, by: &str, value: T) -> Result<()> {
        if let Some((_, first)) = self.entries.get(name) {
            return Err(Error::DuplicatePlugin {
                kind: self.kind.as_str(),
                name: name.to_owned(),
                first: first.registered_by.clone(),
                second: by.to_owned(),
            });
        }
        let info = PluginInfo {
            kind: self.kind,
            name: name.to_owned(),
            description: description.to_owned(),
            registered_by: by.to_owned(),
        };
        self.entries.insert(name.to_owned(), (value, info));
        Ok(())
    }

    fn infos(&self) -> impl Iterator<Item = PluginInfo> + '_ {
        self.entries.values().map(|(_, info)| info.clone())
    }

    fn get(&self, name: &str, conflicts: &[Error]) -> Result<T> {
        let kind = self.kind.as_str();
        if let Some(Error::DuplicatePlugin {
            first, second, ..
        }) = conflicts.iter().find(|err| {
            matches!(err, Error::DuplicatePlugin { kind: k, name: n, .. } if *k == kind && n == name)
        }) {
            return Err(Error::DuplicatePlugin {
                kind,
                name: name.to_owned(),
                first: first.clone(),
                second: second.clone(),
            });
        }
        match self.entries.get(name) {
            Some((value, _)) => Ok(value.clone()),
            None => Err(Error::UnknownPlugin {
                kind,
                name: name.to_owned(),
                available: if self.entries.is_empty() {
                    "none".to_owned()
                } else {
                    self.entries.keys().cloned().collect::<Vec<_>>().join(", ")
                },
            }),
        }
    }
}

/// Plugins by kind and name.
///
/// Names are unique within a kind (a backend and its strategy may share a name, like
/// `heap`). A duplicate found while collecting link-time registrations does not fail the
/// whole registry: it is kept in [`conflicts`](Registry::conflicts) and reported by every
/// look-up of that name.
///
/// ```
/// use state_api::{Registry, UNCOMPRESSED};
///
/// let registry = Registry::global();
/// let none = registry.compression(UNCOMPRESSED)?;
/// assert_eq!(none.name(), "none");
/// let err = registry.compression("zstd-9000").unwrap_err();
/// assert!(err.to_string().contains("linked: "), "{err}");
/// # Ok::<(), state_api::Error>(())
/// ```
///
/// # Registration
///
/// Every plugin crate exports `pub fn register(registry: &mut Registry) -> Result<()>` and
/// submits the same function for link-time collection; [`Registry::linked`] (and the
/// process-wide [`Registry::global`]) runs every submitted function, while binaries, tests
/// and static-library users can build a registry by calling the `register` functions
/// themselves. (This example is compiled alone: its submission would otherwise reach every
/// other example's binary.)
///
/// ```standalone_crate
/// use state_api::{Registry, Result, UncompressedStreamCompressionDecorator};
///
/// /// A plugin crate's explicit registration path.
/// pub fn register(registry: &mut Registry) -> Result<()> {
///     // A real plugin registers its own decorator, backend or strategy here.
///     registry.register_compression(UncompressedStreamCompressionDecorator)
/// }
/// // The automatic path runs the same function when the crate is linked.
/// state_api::submit_registration!(register);
///
/// let mut registry = Registry::default();
/// register(&mut registry)?;
/// assert_eq!(registry.compression("none")?.name(), "none");
/// # Ok::<(), state_api::Error>(())
/// ```
///
/// `rustc` does not link a dependency that no code refers to, and with it vanish the
/// crate's `inventory` submissions: a binary that depends on `state-heap` but never names
/// it finds no `heap` backend. Refer to every plugin crate you rely on from each binary,
/// test and bench: `use state_heap as _;`, a call to its `link()` function (every plugin
/// crate has one), or a call to its `register` function. A facade crate can do this once
/// for all its features.
pub struct Registry {
    keyed_backends: Table<Arc<dyn KeyedStateBackendFactory>>,
    operator_backends: Table<Arc<dyn OperatorStateBackendFactory>>,
    keyed_strategies: Table<Arc<dyn KeyedSnapshotStrategyFactory>>,
    operator_strategies: Table<Arc<dyn OperatorSnapshotStrategyFactory>>,
    compressions: Table<Arc<dyn StreamCompressionDecorator>>,
    registrant: String,
    conflicts: Vec<Error>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("plugins", &self.plugins())
            .field("conflicts", &self.conflicts)
            .finish()
    }
}

impl Default for Registry {
    /// An empty registry (not even `none`); see [`Registry::linked`] for the usual one.
    fn default() -> Self {
        Registry {
            keyed_backends: Table::new(PluginKind::KeyedBackend),
            operator_backends: Table::new(PluginKind::OperatorBackend),
            keyed_strategies: Table::new(PluginKind::KeyedStrategy),
            operator_strategies: Table::new(PluginKind::OperatorStrategy),
            compressions: Table::new(PluginKind::Compression),
            registrant: "caller".to_owned(),
            conflicts: Vec::new(),
        }
    }
}

/// Registers what `state-api` itself provides: the `none` compression decorator.
pub fn register(registry: &mut Registry) -> Result<()> {
    registry.register_compression(UncompressedStreamCompressionDecorator)
}

crate::submit_registration!(register);

impl Registry {
    /// A registry of every plugin linked into this binary (through
    /// [`submit_registration!`](crate::submit_registration)), in a deterministic order.
    pub fn linked() -> Self {
        let mut registrations: Vec<&Registration> = inventory::iter::<Registration>().collect();
        registrations.sort_by_key(|r| (r.crate_name, r.register as usize));
        let mut registry = Registry::default();
        for registration in registrations {
            registry.registrant = registration.crate_name.to_owned();
            if let Err(err) = (registration.register)(&mut registry) {
                tracing::error!(crate_name = registration.crate_name, error = %err, "plugin registration failed");
                registry.conflicts.push(err);
            }
        }
        registry.registrant = "caller".to_owned();
        registry
    }

    /// The process-wide registry of linked plugins, built on first use.
    pub fn global() -> &'static Registry {
        static GLOBAL: OnceLock<Registry> = OnceLock::new();
        GLOBAL.get_or_init(Registry::linked)
    }

    /// Registration failures found while collecting linked plugins (duplicate names).
    pub fn conflicts(&self) -> &[Error] {
        &self.conflicts
    }

    /// Registered names of one kind, sorted.
    pub fn names(&self, kind: PluginKind) -> Vec<String> {
        self.plugins()
            .into_iter()
            .filter(|p| p.kind == kind)
            .map(|p| p.name)
            .collect()
    }

    /// Every registered plugin, by kind then name.
    pub fn plugins(&self) -> Vec<PluginInfo> {
        let mut out = Vec::new();
        out.extend(self.keyed_backends.infos());
        out.extend(self.operator_backends.infos());
        out.extend(self.keyed_strategies.infos());
        out.extend(self.operator_strategies.infos());
        out.extend(self.compressions.infos());
        out
    }
}

/// Defines, per plugin kind, the method that registers a plugin in the kind's table and the
/// one that looks a plugin up there.
macro_rules! plugin_methods {
    ($($table:ident: dyn $plugin:ident, $register:ident, $lookup:ident, $a:literal $what:literal;)*) => {
        impl Registry {
            $(
                #[doc = concat!("Registers ", $a, " ", $what, " under its name.")]
                pub fn $register(&mut self, plugin: impl $plugin) -> Result<()> {
                    let (name, description) = (plugin.name(), plugin.description());
                    self.$table.insert(name, description, &self.registrant, Arc::new(plugin))
                }

                #[doc = concat!("The ", $what, " named `name`.")]
                pub fn $lookup(&self, name: &str) -> Result<Arc<dyn $plugin>> {
                    self.$table.get(name, &self.conflicts)
                }
            )*
        }
    };
}

plugin_methods! {
    compressions: dyn StreamCompressionDecorator, register_compression, compression,
        "a" "compression decorator";
    keyed_backends: dyn KeyedStateBackendFactory, register_keyed_backend, keyed_backend,
        "a" "keyed backend factory";
    operator_backends: dyn OperatorStateBackendFactory, register_operator_backend,
        operator_backend, "an" "operator backend factory";
    keyed_strategies: dyn KeyedSnapshotStrategyFactory, register_keyed_strategy, keyed_strategy,
        "a" "keyed snapshot strategy factory";
    operator_strategies: dyn OperatorSnapshotStrategyFactory, register_operator_strategy,
        operator_strategy, "an" "operator snapshot strategy factory";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linked_registry_has_the_identity_decorator_from_state_api() {
        let registry = Registry::linked();
        let conflicts = registry.conflicts();
        assert!(conflicts.is_empty(), "{conflicts:?}");
        let plugins = registry.plugins();
        let none = plugins
            .iter()
            .find(|p| p.kind == PluginKind::Compression && p.name == "none")
            .unwrap();
        assert_eq!(none.registered_by, "state-api");
    }

    #[test]
    fn unknown_name_lists_what_is_linked() {
        let mut registry = Registry::default();
        register(&mut registry).unwrap();
        let err = registry.compression("snappy").err().unwrap();
        assert!(matches!(err, Error::UnknownPlugin { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "no compression decorator named `snappy` is linked; linked: none"
        );
        let err = registry.keyed_backend("heap").err().unwrap();
        assert!(err.to_string().ends_with("linked: none"), "{err}");
    }

    #[test]
    fn duplicate_name_is_reported_with_both_registrants() {
        let mut registry = Registry::default();
        register(&mut registry).unwrap();
        registry.registrant = "third-party-codecs".into();
        let err = register(&mut registry).unwrap_err();
        assert!(matches!(err, Error::DuplicatePlugin { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("`none`") && text.contains("third-party-codecs"),
            "{text}"
        );
    }

    #[test]
    fn conflicts_are_reported_by_lookups_of_that_name() {
        let mut registry = Registry::default();
        register(&mut registry).unwrap();
        let err = register(&mut registry).unwrap_err();
        registry.conflicts.push(err);
        let err = registry.compression("none").err().unwrap();
        assert!(matches!(err, Error::DuplicatePlugin { .. }), "{err}");
    }
}
