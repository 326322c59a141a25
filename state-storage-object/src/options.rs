//! [`ObjectStoreOptions`] and [`Secret`]: how a store is reached and used, credentials that
//! are never printed.

use std::fmt;
use std::time::Duration;

use state_api::{Error, Result};

/// A credential: compared and cloned like a string, printed as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Retries of failed requests: exponential backoff with jitter, bounded in count and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryOptions {
    /// Retries after the first attempt; `0` disables retries.
    pub max_retries: usize,
    /// No retry starts once this much time passed since the first attempt.
    pub timeout: Duration,
    /// The first backoff.
    pub initial_backoff: Duration,
    /// The longest backoff.
    pub max_backoff: Duration,
}

impl Default for RetryOptions {
    fn default() -> Self {
        RetryOptions {
            max_retries: 10,
            timeout: Duration::from_secs(180),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
        }
    }
}

/// [`ObjectStoreOptions`]: how a store is reached (endpoint, region, credentials), how
/// streams upload (part size, parts in flight) and read (read-ahead), and how requests are
/// retried; [`Secret`] keeps credentials out of `Debug` output, errors and logs.
///
/// Options are set in code or from Flink-style keys ([`ObjectStoreOptions::set`]):
///
/// | key | meaning | default |
/// | --- | --- | --- |
/// | `s3.endpoint` | S3-compatible endpoint URL; `http://` allows plain HTTP (a loopback test server) | `AWS_ENDPOINT_URL`, else AWS |
/// | `s3.region` | region | `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1` |
/// | `s3.access-key`, `s3.secret-key`, `s3.session-token` | static credentials | `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, then the usual AWS providers |
/// | `s3.path.style.access` | `true`: `endpoint/bucket/key` requests; `false`: `bucket.endpoint/key` | `true` with an endpoint, else `false` |
/// | `s3.upload.part-size` | multipart part size (at least 5 MiB, S3's minimum); streams up to it are one PUT | `8 mb` |
/// | `s3.upload.parts-in-flight` | parts uploaded concurrently per stream | `4` |
/// | `s3.read-ahead` | bytes fetched per ranged GET when reading | `8 mb` |
/// | `s3.retry.max-retries` | retries of a failed request (5xx, connection errors, timeouts) | `10` |
/// | `s3.retry.timeout` | no retry starts after this much time since the first attempt | `3 min` |
/// | `s3.retry.initial-backoff`, `s3.retry.max-backoff` | exponential backoff with jitter between retries | `100 ms`, `15 s` |
/// | `s3.request.timeout`, `s3.connect.timeout` | one request, one connection attempt | `30 s`, `5 s` |
///
/// Sizes take `b`, `kb`, `mb`, `gb` (binary units); durations `ms`, `s`, `min`.
///
/// ```
/// use state_storage_object::ObjectStoreOptions;
///
/// let options = ObjectStoreOptions::from_pairs([
///     ("s3.endpoint", "http://127.0.0.1:9000"),
///     ("s3.secret-key", "do-not-print-me"),
///     ("s3.upload.part-size", "16 mb"),
/// ])?;
/// assert_eq!(options.part_size, 16 << 20);
/// assert!(!format!("{options:?}").contains("do-not-print-me"));
/// # Ok::<(), state_api::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectStoreOptions {
    /// `s3.endpoint`.
    pub endpoint: Option<String>,
    /// `s3.region`.
    pub region: Option<String>,
    /// `s3.access-key`.
    pub access_key: Option<Secret>,
    /// `s3.secret-key`.
    pub secret_key: Option<Secret>,
    /// `s3.session-token`.
    pub session_token: Option<Secret>,
    /// `s3.path.style.access`.
    pub path_style: Option<bool>,
    /// `s3.upload.part-size`.
    pub part_size: usize,
    /// `s3.upload.parts-in-flight`.
    pub parts_in_flight: usize,
    /// `s3.read-ahead`.
    pub read_ahead: usize,
    /// `s3.retry.*`.
    pub retry: RetryOptions,
    /// `s3.request.timeout`.
    pub request_timeout: Duration,
    /// `s3.connect.timeout`.
    pub connect_timeout: Duration,
}

impl Default for ObjectStoreOptions {
    fn default() -> Self {
        ObjectStoreOptions {
            endpoint: None,
            region: None,
            access_key: None,
            secret_key: None,
            session_token: None,
            path_style: None,
            part_size: Self::DEFAULT_PART_SIZE,
            parts_in_flight: 4,
            read_ahead: 8 << 20,
            retry: RetryOptions::default(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Every key [`ObjectStoreOptions::set`] knows.
pub const KEYS: [&str; 15] = [
    "s3.endpoint",
    "s3.region",
    "s3.access-key",
    "s3.secret-key",
    "s3.session-token",
    "s3.path.style.access",
    "s3.upload.part-size",
    "s3.upload.parts-in-flight",
    "s3.read-ahead",
    "s3.retry.max-retries",
    "s3.retry.timeout",
    "s3.retry.initial-backoff",
    "s3.retry.max-backoff",
    "s3.request.timeout",
    "s3.connect.timeout",
];

/// Keys whose values are credentials: never echoed in errors.
fn is_secret(key: &str) -> bool {
    matches!(key, "s3.access-key" | "s3.secret-key" | "s3.session-token")
}

/// A whole number and the unit after it (`"8 mb"` -> `(8, "mb")`), lowercased.
fn number_and_unit(text: &str) -> Option<(u64, String)> {
    let text = text.trim().to_ascii_lowercase();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    Some((number.parse().ok()?, unit.trim().to_owned()))
}

fn parse_size(text: &str) -> Option<usize> {
    let (number, unit) = number_and_unit(text)?;
    let shift = match unit.as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return None,
    };
    usize::try_from(number).ok()?.checked_mul(1 << shift)
}

fn parse_duration(text: &str) -> Option<Duration> {
    let (number, unit) = number_and_unit(text)?;
    match unit.as_str() {
        "" | "ms" => Some(Duration::from_millis(number)),
        "s" => Some(Duration::from_secs(number)),
        "min" => number.checked_mul(60).map(Duration::from_secs),
        _ => None,
    }
}

impl ObjectStoreOptions {
    /// S3 refuses parts below 5 MiB (but the last).
    pub const MIN_PART_SIZE: usize = 5 << 20;
    /// The default part size.
    pub const DEFAULT_PART_SIZE: usize = 8 << 20;

    /// Options from `key = value` pairs over the defaults.
    ///
    /// # Errors
    ///
    /// See [`set`](Self::set).
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self> {
        let mut options = ObjectStoreOptions::default();
        for (key, value) in pairs {
            options.set(key.as_ref(), value.as_ref())?;
        }
        Ok(options)
    }

    /// Sets `key` to `value`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] naming the key (and the value, unless it is a
    /// credential) for an unknown key or a value out of range.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let invalid = |expected: &str| {
            let shown = match is_secret(key) {
                true => "***",
                false => value,
            };
            Error::InvalidArgument(format!(
                "object storage option `{key}` = `{shown}`: expected {expected}"
            ))
        };
        let size = || parse_size(value).ok_or_else(|| invalid("a size such as `8 mb`"));
        let duration = || parse_duration(value).ok_or_else(|| invalid("a duration such as `30 s`"));
        match key {
            "s3.endpoint" => {
                if !(value.starts_with("http://") || value.starts_with("https://")) {
                    return Err(invalid("an http:// or https:// URL"));
                }
                self.endpoint = Some(value.trim_end_matches('/').to_owned());
            }
            "s3.region" => self.region = Some(value.to_owned()),
            "s3.access-key" => self.access_key = Some(Secret::new(value)),
            "s3.secret-key" => self.secret_key = Some(Secret::new(value)),
            "s3.session-token" => self.session_token = Some(Secret::new(value)),
            "s3.path.style.access" => {
                self.path_style = Some(match value {
                    "true" => true,
                    "false" => false,
                    _ => return Err(invalid("`true` or `false`")),
                })
            }
            "s3.upload.part-size" => {
                self.part_size = size()?;
                if self.part_size < Self::MIN_PART_SIZE {
                    return Err(invalid("at least 5 mb (S3's minimum part size)"));
                }
            }
            "s3.upload.parts-in-flight" => {
                self.parts_in_flight = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=64).contains(n))
                    .ok_or_else(|| invalid("a whole number from 1 to 64"))?
            }
            "s3.read-ahead" => {
                self.read_ahead = size()?;
                if self.read_ahead == 0 {
                    return Err(invalid("a size above 0"));
                }
            }
            "s3.retry.max-retries" => {
                self.retry.max_retries = value.parse().map_err(|_| invalid("a whole number"))?
            }
            "s3.retry.timeout" => self.retry.timeout = duration()?,
            "s3.retry.initial-backoff" => self.retry.initial_backoff = duration()?,
            "s3.retry.max-backoff" => self.retry.max_backoff = duration()?,
            "s3.request.timeout" => self.request_timeout = duration()?,
            "s3.connect.timeout" => self.connect_timeout = duration()?,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "unknown object storage option `{key}`; known: {}",
                    KEYS.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// The credentials set, to scrub from error texts.
    pub(crate) fn secrets(&self) -> Vec<String> {
        [&self.access_key, &self.secret_key, &self.session_token]
            .into_iter()
            .flatten()
            .map(|secret| secret.expose().to_owned())
            .filter(|secret| !secret.is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_size(text: &str, expected: Option<usize>) {
        assert_eq!(parse_size(text), expected, "{text}");
    }

    #[test]
    fn sizes() {
        check_size("5242880", Some(5 << 20));
        check_size("8mb", Some(8 << 20));
        check_size("8 MB", Some(8 << 20));
        check_size("64 kib", Some(64 << 10));
        check_size("1g", Some(1 << 30));
        check_size("8 furlongs", None);
        check_size("", None);
    }

    fn check_duration(text: &str, expected: Option<Duration>) {
        assert_eq!(parse_duration(text), expected, "{text}");
    }

    #[test]
    fn durations() {
        check_duration("250", Some(Duration::from_millis(250)));
        check_duration("250 ms", Some(Duration::from_millis(250)));
        check_duration("30s", Some(Duration::from_secs(30)));
        check_duration("3 min", Some(Duration::from_secs(180)));
        check_duration("soon", None);
    }

    #[test]
    fn bad_values_name_the_key_but_never_a_credential() {
        let err = ObjectStoreOptions::from_pairs([("s3.upload.part-size", "1 mb")]).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(err.to_string().contains("s3.upload.part-size"), "{err}");
        let err = ObjectStoreOptions::from_pairs([("s3.endpoint", "localhost:9000")]).unwrap_err();
        assert!(err.to_string().contains("http://"), "{err}");
        let err = ObjectStoreOptions::from_pairs([("s3.secret", "x")]).unwrap_err();
        assert!(err.to_string().contains("s3.secret-key"), "{err}");
        let err = ObjectStoreOptions::from_pairs([("s3.path.style.access", "yes")]).unwrap_err();
        assert!(err.to_string().contains("`true` or `false`"), "{err}");
    }

    #[test]
    fn debug_hides_credentials() {
        let options = ObjectStoreOptions::from_pairs([
            ("s3.access-key", "AKIA-VISIBLE-NOWHERE"),
            ("s3.secret-key", "secret-visible-nowhere"),
            ("s3.session-token", "token-visible-nowhere"),
        ])
        .unwrap();
        let shown = format!("{options:?}");
        for secret in options.secrets() {
            assert!(!shown.contains(&secret), "{shown}");
        }
        assert_eq!(options.secrets().len(), 3);
    }
}
