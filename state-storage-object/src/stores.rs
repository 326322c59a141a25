//! [`ObjectStores`]: the process-wide registry of configured stores.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use state_api::{Error, Result};

use crate::error::Redactor;
use crate::location::{ObjectUrl, Scheme, StoreRoot};
use crate::options::ObjectStoreOptions;
use crate::transport::RetryUnsentConnector;

/// One configured store and the options it was built with.
pub(crate) struct Store {
    pub(crate) root: StoreRoot,
    pub(crate) inner: Arc<dyn ObjectStore>,
    pub(crate) options: ObjectStoreOptions,
    pub(crate) redactor: Redactor,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The options print credentials as `***`; the built store is not printed.
        f.debug_struct("Store")
            .field("root", &self.root.to_string())
            .field("options", &self.options)
            .finish()
    }
}

impl Store {
    /// The bucket, for S3 stores.
    pub(crate) fn bucket(&self) -> Option<&str> {
        match self.root.scheme {
            Scheme::S3 => Some(&self.root.authority),
            _ => None,
        }
    }

    /// Maps `err` met on `url` of this store.
    pub(crate) fn error(&self, err: object_store::Error, url: &str) -> Error {
        crate::error::map_error(err, url, self.bucket(), &self.redactor)
    }
}

/// [`ObjectStores`]: the process-wide registry of configured stores.
///
/// A handle read back from checkpoint metadata names its store by URL (`s3://bucket`) and
/// nothing else: no endpoint, no credentials. Opening or discarding it looks the store up
/// here. [`ObjectCheckpointStorage::open`](crate::ObjectCheckpointStorage::open) registers
/// its store with the options it was given, so in a process that opened the storage, its
/// handles resolve to the same store, connection pool and credentials. A process that only
/// restores (a fresh process reading metadata) configures the store first with
/// [`ObjectStores::configure`] or by opening the storage; a store used without either is
/// built from defaults and the standard AWS environment variables.
///
/// Stores are keyed by their root URL alone (`s3://bucket`): a process has one
/// configuration per bucket name, the last one given. In-memory stores (`memory://name`)
/// live as long as the process: every use of one name sees the same objects.
pub struct ObjectStores {
    stores: Mutex<HashMap<StoreRoot, Arc<Store>>>,
    memory: Mutex<HashMap<String, Arc<InMemory>>>,
}

impl fmt::Debug for ObjectStores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
        let mut roots: Vec<String> = stores.keys().map(ToString::to_string).collect();
        roots.sort();
        f.debug_struct("ObjectStores")
            .field("stores", &roots)
            .finish()
    }
}

impl ObjectStores {
    /// The registry of this process.
    pub fn global() -> &'static ObjectStores {
        static GLOBAL: OnceLock<ObjectStores> = OnceLock::new();
        GLOBAL.get_or_init(|| ObjectStores {
            stores: Mutex::default(),
            memory: Mutex::default(),
        })
    }

    /// Configures the store `url` is in (its bucket, file system or in-memory name) with
    /// `options`: storages opened and handles read afterwards use them. A store already
    /// configured with other options is replaced; streams open on it finish on the old one.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] / [`Error::Unsupported`] for a URL that is not a storage
    /// URL; [`Error::InvalidArgument`] when the store cannot be built from the options.
    pub fn configure(&self, url: &str, options: ObjectStoreOptions) -> Result<()> {
        let url = ObjectUrl::parse(url)?;
        self.store(&url.root, Some(options)).map(drop)
    }

    /// The store of `root`: built from `options` unless one with equal options exists,
    /// or (without options) the configured one, else one built from defaults and the
    /// environment.
    pub(crate) fn store(
        &self,
        root: &StoreRoot,
        options: Option<ObjectStoreOptions>,
    ) -> Result<Arc<Store>> {
        let mut stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = stores.get(root)
            && options
                .as_ref()
                .is_none_or(|options| *options == existing.options)
        {
            return Ok(existing.clone());
        }
        let options = options.unwrap_or_default();
        let store = Arc::new(Store {
            root: root.clone(),
            inner: self.build(root, &options)?,
            redactor: Redactor::new(options.secrets()),
            options,
        });
        stores.insert(root.clone(), store.clone());
        Ok(store)
    }

    fn build(
        &self,
        root: &StoreRoot,
        options: &ObjectStoreOptions,
    ) -> Result<Arc<dyn ObjectStore>> {
        match root.scheme {
            Scheme::Memory => {
                let mut memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
                let store = memory
                    .entry(root.authority.clone())
                    .or_insert_with(|| Arc::new(InMemory::new()));
                Ok(store.clone())
            }
            Scheme::File => Ok(Arc::new(LocalFileSystem::new())),
            Scheme::S3 => build_s3(&root.authority, options),
        }
    }
}

fn build_s3(bucket: &str, options: &ObjectStoreOptions) -> Result<Arc<dyn ObjectStore>> {
    // rustls needs a process-wide crypto provider for HTTPS; keep one installed before us.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Some(endpoint) = &options.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    let region = options
        .region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok())
        .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
        .unwrap_or_else(|| "us-east-1".to_owned());
    builder = builder.with_region(region);
    let path_style = options.path_style.unwrap_or(options.endpoint.is_some());
    builder = builder.with_virtual_hosted_style_request(!path_style);
    if let Some(key) = &options.access_key {
        builder = builder.with_access_key_id(key.expose());
    }
    if let Some(secret) = &options.secret_key {
        builder = builder.with_secret_access_key(secret.expose());
    }
    if let Some(token) = &options.session_token {
        builder = builder.with_token(token.expose());
    }
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: options.retry.initial_backoff,
            max_backoff: options.retry.max_backoff,
            base: 2.0,
        },
        max_retries: options.retry.max_retries,
        retry_timeout: options.retry.timeout,
    };
    // Plain HTTP only where the endpoint asks for it (a loopback test server).
    let allow_http = options
        .endpoint
        .as_ref()
        .is_some_and(|endpoint| endpoint.starts_with("http://"));
    let client = ClientOptions::new()
        .with_allow_http(allow_http)
        .with_timeout(options.request_timeout)
        .with_connect_timeout(options.connect_timeout);
    let store = builder
        .with_http_connector(RetryUnsentConnector::default())
        .with_retry(retry)
        .with_client_options(client)
        .build()
        .map_err(|err| {
            // The builder's errors name settings, never their values; scrub anyway.
            let text = Redactor::new(options.secrets()).describe(&err);
            Error::InvalidArgument(format!("object storage `s3://{bucket}`: {text}"))
        })?;
    Ok(Arc::new(store))
}
