//! Storage URLs: which store (`s3://bucket`, `file://`, `memory://name`) and which path in
//! it.
//!
//! | URL | store | path |
//! | --- | --- | --- |
//! | `s3://bucket/prefix` | the S3 bucket `bucket` | `prefix` |
//! | `file:///var/lib/checkpoints` | the local file system (through `object_store`) | `var/lib/checkpoints` |
//! | `memory://name/prefix` | the in-memory store `name` of this process (`memory:///prefix`: `default`) | `prefix` |
//!
//! URLs never carry credentials: a user name or password in one is refused.

use std::fmt;

use object_store::path::Path;
use state_api::{Error, Result};

/// The kinds of store a URL may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Scheme {
    /// An S3 bucket (AWS or an S3-compatible server).
    S3,
    /// The local file system.
    File,
    /// An in-memory store of this process.
    Memory,
}

/// One store: a scheme and the bucket or name in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct StoreRoot {
    pub(crate) scheme: Scheme,
    /// The bucket (`s3`), the store's name (`memory`), empty (`file`).
    pub(crate) authority: String,
}

impl fmt::Display for StoreRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scheme {
            Scheme::S3 => write!(f, "s3://{}", self.authority),
            Scheme::File => write!(f, "file://"),
            Scheme::Memory => write!(f, "memory://{}", self.authority),
        }
    }
}

/// A parsed storage URL: the store and a path in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ObjectUrl {
    pub(crate) root: StoreRoot,
    pub(crate) path: Path,
}

impl fmt::Display for ObjectUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.root.scheme {
            Scheme::File => write!(f, "file:///{}", self.path),
            _ => write!(f, "{}/{}", self.root, self.path),
        }
    }
}

fn invalid(url: &str, reason: &str) -> Error {
    Error::InvalidArgument(format!("checkpoint storage URL `{url}`: {reason}"))
}

impl ObjectUrl {
    /// Parses `text`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for text that is not such a URL, or carries credentials;
    /// [`Error::Unsupported`] for another scheme.
    pub(crate) fn parse(text: &str) -> Result<Self> {
        let url = url::Url::parse(text).map_err(|err| invalid(text, &err.to_string()))?;
        if !url.username().is_empty() || url.password().is_some() {
            // Never echo the URL: it holds a credential.
            return Err(Error::InvalidArgument(
                "checkpoint storage URLs must not carry credentials: configure them with `s3.access-key` and `s3.secret-key` or the AWS environment variables".into(),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(text, "no query or fragment is allowed"));
        }
        let host = url.host_str().unwrap_or_default().to_owned();
        let (scheme, authority) = match url.scheme() {
            "s3" if host.is_empty() => return Err(invalid(text, "no bucket named")),
            "s3" => (Scheme::S3, host),
            "file" if !(host.is_empty() || host == "localhost") => {
                return Err(invalid(text, "a file URL names no host: file:///path"));
            }
            "file" => (Scheme::File, String::new()),
            "memory" if host.is_empty() => (Scheme::Memory, "default".to_owned()),
            "memory" => (Scheme::Memory, host),
            other => {
                return Err(Error::Unsupported(format!(
                    "checkpoint storage scheme `{other}://` (in `{text}`): use s3://bucket/prefix, file:///path or memory://name/prefix"
                )));
            }
        };
        let path =
            Path::from_url_path(url.path()).map_err(|err| invalid(text, &err.to_string()))?;
        Ok(ObjectUrl {
            root: StoreRoot { scheme, authority },
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, root: &str, path: &str) {
        let url = ObjectUrl::parse(text).unwrap_or_else(|err| panic!("{text}: {err}"));
        assert_eq!(url.root.to_string(), root, "{text}");
        assert_eq!(url.path.as_ref(), path, "{text}");
    }

    #[test]
    fn urls() {
        check("s3://bucket/jobs/a", "s3://bucket", "jobs/a");
        check("s3://bucket", "s3://bucket", "");
        check("s3://bucket/jobs/a/", "s3://bucket", "jobs/a");
        check("file:///tmp/checkpoints", "file://", "tmp/checkpoints");
        check("memory://bench/run-1", "memory://bench", "run-1");
        check("memory:///run-1", "memory://default", "run-1");
        check("s3://bucket/with%20space", "s3://bucket", "with space");
    }

    fn check_refused(text: &str, expected: &str) {
        let err = ObjectUrl::parse(text).unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument(_) | Error::Unsupported(_)),
            "{err}"
        );
        assert!(err.to_string().contains(expected), "{text}: {err}");
    }

    #[test]
    fn bad_urls_are_refused() {
        check_refused("gs://bucket/x", "scheme `gs://`");
        check_refused("s3:///x", "no bucket");
        check_refused("file://host/x", "names no host");
        check_refused("s3://bucket/x?versionId=1", "no query");
        check_refused("not a url", "checkpoint storage URL");
    }

    #[test]
    fn credentials_in_a_url_are_refused_without_echoing_them() {
        let err = ObjectUrl::parse("s3://AKIA:hunter2@bucket/x").unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(!err.to_string().contains("AKIA"), "{err}");
    }
}
