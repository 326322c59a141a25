//! The plugin [`Registry`]: backends, strategies and compression decorators by name.
//!
//! # Registration
//!
//! Every plugin crate exports `pub fn register(registry: &mut Registry) -> Result<()>`
//! and submits the same function for link-time collection (this example is compiled
//! alone: its submission would otherwise reach every other example's binary):
//!
//! ```standalone_crate
//! use state_api::{Registry, Result, UncompressedStreamCompressionDecorator};
//!
//! /// A plugin crate's explicit registration path.
//! pub fn register(registry: &mut Registry) -> Result<()> {
//!     // A real plugin registers its own decorator, backend or strategy here.
//!     registry.register_compression(UncompressedStreamCompressionDecorator)
//! }
//! // The automatic path runs the same function when the crate is linked.
//! state_api::submit_registration!(register);
//!
//! let mut registry = Registry::default();
//! register(&mut registry)?;
//! assert_eq!(registry.compression("none")?.name(), "none");
//! # Ok::<(), state_api::Error>(())
//! ```
//!
//! [`Registry::linked`] (and the process-wide [`Registry::global`]) runs every submitted
//! function. Binaries, tests and static-library users can instead build a registry by
//! calling the `register` functions themselves.
//!
//! # The linker pitfall
//!
//! `rustc` does not link a dependency that no code refers to, and with it vanish the
//! crate's `inventory` submissions: a binary that depends on `state-heap` but never names
//! it finds no `heap` backend. Refer to every plugin crate you rely on from each binary,
//! test and bench: `use state_heap as _;`, or a call to its `link()` function (every
//! plugin crate has one), or build the registry by calling its `register` function. A
//! facade crate can do this once for all its features.
//!
//! # Example
//!
//! ```
//! use state_api::{Registry, UNCOMPRESSED};
//!
//! let registry = Registry::global();
//! let none = registry.compression(UNCOMPRESSED)?;
//! assert_eq!(none.name(), "none");
//! let err = registry.compression("zstd-9000").unwrap_err();
//! assert!(err.to_string().contains("linked: "), "{err}");
//! # Ok::<(), state_api::Error>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use crate::{
    Error, KeyedSnapshotStrategyFactory, KeyedStateBackendFactory, OperatorSnapshotStrategyFactory,
    OperatorStateBackendFactory, Result, StreamCompressionDecorator,
    UncompressedStreamCompressionDecorator,
};

/// A link-time registration: a plugin crate's `register` function.
///
/// Submit one with [`submit_registration!`](crate::submit_registration).
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

#[derive(Clone)]
struct Entry<T> {
    value: T,
    description: String,
    registered_by: String,
}

#[derive(Clone)]
struct Table<T> {
    kind: PluginKind,
    entries: BTreeMap<String, Entry<T>>,
}

impl<T: Clone> Table<T> {
    fn new(kind: PluginKind) -> Self {
        Table {
            kind,
            entries: BTreeMap::new(),
        }
    }

    fn insert(&mut self, name: &str, description: &str, by: &str, value: T) -> Result<()> {
        if let Some(existing) = self.entries.get(name) {
            return Err(Error::DuplicatePlugin {
                kind: self.kind.as_str(),
                name: name.to_owned(),
                first: existing.registered_by.clone(),
                second: by.to_owned(),
            });
        }
        self.entries.insert(
            name.to_owned(),
            Entry {
                value,
                description: description.to_owned(),
                registered_by: by.to_owned(),
            },
        );
        Ok(())
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
            Some(entry) => Ok(entry.value.clone()),
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

    /// Registers a compression decorator under its name.
    pub fn register_compression(
        &mut self,
        decorator: impl StreamCompressionDecorator,
    ) -> Result<()> {
        let (name, description) = (decorator.name(), decorator.description());
        self.compressions
            .insert(name, description, &self.registrant, Arc::new(decorator))
    }

    /// Registers a keyed backend factory under its name.
    pub fn register_keyed_backend(&mut self, factory: impl KeyedStateBackendFactory) -> Result<()> {
        let (name, description) = (factory.name(), factory.description());
        self.keyed_backends
            .insert(name, description, &self.registrant, Arc::new(factory))
    }

    /// Registers an operator backend factory under its name.
    pub fn register_operator_backend(
        &mut self,
        factory: impl OperatorStateBackendFactory,
    ) -> Result<()> {
        let (name, description) = (factory.name(), factory.description());
        self.operator_backends
            .insert(name, description, &self.registrant, Arc::new(factory))
    }

    /// Registers a keyed snapshot strategy factory under its name.
    pub fn register_keyed_strategy(
        &mut self,
        factory: impl KeyedSnapshotStrategyFactory,
    ) -> Result<()> {
        let (name, description) = (factory.name(), factory.description());
        self.keyed_strategies
            .insert(name, description, &self.registrant, Arc::new(factory))
    }

    /// Registers an operator snapshot strategy factory under its name.
    pub fn register_operator_strategy(
        &mut self,
        factory: impl OperatorSnapshotStrategyFactory,
    ) -> Result<()> {
        let (name, description) = (factory.name(), factory.description());
        self.operator_strategies
            .insert(name, description, &self.registrant, Arc::new(factory))
    }

    /// The compression decorator named `name`.
    pub fn compression(&self, name: &str) -> Result<Arc<dyn StreamCompressionDecorator>> {
        self.compressions.get(name, &self.conflicts)
    }

    /// The keyed backend factory named `name`.
    pub fn keyed_backend(&self, name: &str) -> Result<Arc<dyn KeyedStateBackendFactory>> {
        self.keyed_backends.get(name, &self.conflicts)
    }

    /// The operator backend factory named `name`.
    pub fn operator_backend(&self, name: &str) -> Result<Arc<dyn OperatorStateBackendFactory>> {
        self.operator_backends.get(name, &self.conflicts)
    }

    /// The keyed snapshot strategy factory named `name`.
    pub fn keyed_strategy(&self, name: &str) -> Result<Arc<dyn KeyedSnapshotStrategyFactory>> {
        self.keyed_strategies.get(name, &self.conflicts)
    }

    /// The operator snapshot strategy factory named `name`.
    pub fn operator_strategy(
        &self,
        name: &str,
    ) -> Result<Arc<dyn OperatorSnapshotStrategyFactory>> {
        self.operator_strategies.get(name, &self.conflicts)
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
        fn list<T>(table: &Table<T>, out: &mut Vec<PluginInfo>) {
            out.extend(table.entries.iter().map(|(name, entry)| PluginInfo {
                kind: table.kind,
                name: name.clone(),
                description: entry.description.clone(),
                registered_by: entry.registered_by.clone(),
            }));
        }
        let mut out = Vec::new();
        list(&self.keyed_backends, &mut out);
        list(&self.operator_backends, &mut out);
        list(&self.keyed_strategies, &mut out);
        list(&self.operator_strategies, &mut out);
        list(&self.compressions, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linked_registry_has_the_identity_decorator_from_state_api() {
        let registry = Registry::linked();
        assert!(
            registry.conflicts().is_empty(),
            "{:?}",
            registry.conflicts()
        );
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
