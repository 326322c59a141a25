//! How `object_store` failures become [`state_api::Error`]s.
//!
//! | failure | error |
//! | --- | --- |
//! | the bucket does not exist (S3 `NoSuchBucket`) | [`Error::NotFound`] naming the bucket |
//! | the object does not exist | [`Error::NotFound`] naming the object's URL |
//! | 401 / 403, S3 `AccessDenied`, `InvalidAccessKeyId`, `SignatureDoesNotMatch`, ... | [`Error::AccessDenied`] naming the URL |
//! | anything else once retries are exhausted (connection refused, timeouts, 5xx) | [`Error::Io`] with the URL as `path` and an `io::Error` of the fitting kind |
//!
//! The cause's text is kept as a [`StorageFailure`] with every configured credential
//! replaced by `***`, so no secret reaches an error message, a log line or `Debug` output,
//! even when a server echoes one back.

use std::error::Error as StdError;
use std::io;
use std::path::PathBuf;

use object_store::client::{HttpError, HttpErrorKind};
use state_api::Error;

/// The text of a failed storage request, credentials removed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StorageFailure {
    message: String,
}

/// Removes credentials from error texts.
#[derive(Debug, Clone, Default)]
pub(crate) struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub(crate) fn new(secrets: Vec<String>) -> Self {
        Redactor { secrets }
    }

    pub(crate) fn scrub(&self, mut text: String) -> String {
        for secret in &self.secrets {
            text = text.replace(secret.as_str(), "***");
        }
        text
    }

    /// The error and its causes, `: `-separated, credentials removed.
    pub(crate) fn describe(&self, err: &(dyn StdError + 'static)) -> String {
        let mut text = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            let line = cause.to_string();
            if !text.contains(&line) {
                text.push_str(": ");
                text.push_str(&line);
            }
            source = cause.source();
        }
        self.scrub(text)
    }
}

/// The `io::ErrorKind` a failure's causes carry (a transport failure, a file system
/// error), `Other` if none.
fn kind_of(err: &(dyn StdError + 'static)) -> io::ErrorKind {
    let mut cause: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(current) = cause {
        if let Some(http) = current.downcast_ref::<HttpError>() {
            return match http.kind() {
                HttpErrorKind::Connect => io::ErrorKind::ConnectionRefused,
                HttpErrorKind::Timeout => io::ErrorKind::TimedOut,
                HttpErrorKind::Interrupted => io::ErrorKind::ConnectionAborted,
                _ => io::ErrorKind::Other,
            };
        }
        if let Some(io) = current.downcast_ref::<io::Error>() {
            return io.kind();
        }
        cause = current.source();
    }
    io::ErrorKind::Other
}

/// S3 error codes (documented, stable) that mean the credentials were refused.
const ACCESS_DENIED_CODES: [&str; 6] = [
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "AllAccessDisabled",
];

/// Whether the response body in `text` carries S3 error code `code`.
fn has_code(text: &str, code: &str) -> bool {
    text.contains(&format!("<Code>{code}</Code>"))
}

/// Maps `err`, met while working on `url` (an object or a storage root) of `bucket` (for
/// S3), onto the contract's error. The S3 error code in a response decides where there
/// is one (listing errors reach us as generic errors); the error's kind decides otherwise.
pub(crate) fn map_error(
    err: object_store::Error,
    url: &str,
    bucket: Option<&str>,
    redactor: &Redactor,
) -> Error {
    let text = redactor.describe(&err);
    if let Some(bucket) = bucket
        && has_code(&text, "NoSuchBucket")
    {
        return Error::NotFound {
            what: format!("bucket `{bucket}` (for {url}): create it or fix the URL"),
        };
    }
    if ACCESS_DENIED_CODES.iter().any(|code| has_code(&text, code)) {
        return Error::AccessDenied {
            what: url.to_owned(),
        };
    }
    match err {
        object_store::Error::NotFound { .. } => Error::NotFound {
            what: format!("object {url}"),
        },
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => Error::AccessDenied {
            what: url.to_owned(),
        },
        other => Error::Io {
            path: PathBuf::from(url),
            source: io::Error::new(kind_of(&other), StorageFailure { message: text }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubbing_removes_every_secret() {
        let redactor = Redactor::new(vec!["AKIA1234".into(), "s3cr3t".into()]);
        let text = redactor.scrub("key AKIA1234 and s3cr3t and s3cr3t again".into());
        assert_eq!(text, "key *** and *** and *** again");
    }

    /// Maps a failure whose cause reads `cause` on `s3://bucket/a/b`.
    fn mapped(
        failure: fn(Box<dyn StdError + Send + Sync>) -> object_store::Error,
        cause: &str,
    ) -> Error {
        let redactor = Redactor::new(vec!["hunter2".into()]);
        map_error(
            failure(cause.into()),
            "s3://bucket/a/b",
            Some("bucket"),
            &redactor,
        )
    }

    fn not_found(source: Box<dyn StdError + Send + Sync>) -> object_store::Error {
        object_store::Error::NotFound {
            path: "a/b".into(),
            source,
        }
    }

    fn generic(source: Box<dyn StdError + Send + Sync>) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source,
        }
    }

    #[test]
    fn a_missing_object_names_it() {
        let err = mapped(not_found, "NoSuchKey");
        assert!(
            matches!(&err, Error::NotFound { what } if what.contains("s3://bucket/a/b")),
            "{err}"
        );
    }

    #[test]
    fn a_missing_bucket_names_it_whatever_the_variant() {
        for failure in [not_found, generic] {
            let err = mapped(failure, "<Code>NoSuchBucket</Code>");
            assert!(
                matches!(&err, Error::NotFound { what } if what.contains("bucket `bucket`")),
                "{err}"
            );
        }
    }

    #[test]
    fn refused_credentials_are_access_denied() {
        let err = mapped(generic, "403 <Code>SignatureDoesNotMatch</Code>");
        assert!(matches!(err, Error::AccessDenied { .. }), "{err}");
    }

    #[test]
    fn other_failures_are_io_errors_without_the_secret() {
        let err = mapped(generic, "server echoed hunter2");
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
    }
}
