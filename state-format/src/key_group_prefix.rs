//! The key-group prefix of keys in a key-value store: the key group as a big-endian
//! integer of [`MaxParallelism::prefix_bytes`] bytes in front of every key, so a key
//! group's keys are one contiguous range and sorted by key group.

#[cfg(doc)]
use state_api::MaxParallelism;
use state_api::{Error, Result};

/// Appends `key_group` to `out` as a big-endian integer of `prefix_bytes` bytes.
///
/// `prefix_bytes` comes from [`MaxParallelism::prefix_bytes`]
/// and `key_group` is below the max parallelism, so it fits; debug builds assert
/// both. Otherwise only the low `prefix_bytes` bytes are written (and leading zeros
/// beyond 4 bytes).
pub fn write_key_group_prefix(key_group: u32, prefix_bytes: usize, out: &mut Vec<u8>) {
    debug_assert!(
        (1..=4).contains(&prefix_bytes),
        "key-group prefix width {prefix_bytes} is outside of 1..=4"
    );
    debug_assert!(
        prefix_bytes >= 4 || key_group >> (8 * prefix_bytes) == 0,
        "key group {key_group} does not fit in {prefix_bytes} bytes"
    );
    let bytes = key_group.to_be_bytes();
    let zeros = prefix_bytes.saturating_sub(bytes.len());
    out.resize(out.len() + zeros, 0);
    out.extend_from_slice(&bytes[bytes.len() - (prefix_bytes - zeros)..]);
}

/// Reads the key group from the first `prefix_bytes` bytes of `bytes`, big-endian, as
/// written by [`write_key_group_prefix`].
///
/// Fails with [`Error::InvalidArgument`] unless `prefix_bytes` is in `1..=4`, and
/// with [`Error::Corrupted`] if `bytes` is shorter than `prefix_bytes`.
///
/// # Examples
///
/// ```
/// use state_api::MaxParallelism;
/// use state_format::key_group_prefix::{read_key_group_prefix, write_key_group_prefix};
///
/// let prefix_bytes = MaxParallelism::new(1024)?.prefix_bytes();
/// let mut key = Vec::new();
/// write_key_group_prefix(700, prefix_bytes, &mut key);
/// key.extend_from_slice(b"user-key");
/// assert_eq!(&key[..2], [0x02, 0xbc]);
/// assert_eq!(read_key_group_prefix(&key, prefix_bytes)?, 700);
/// # Ok::<(), state_api::Error>(())
/// ```
#[inline]
pub fn read_key_group_prefix(bytes: &[u8], prefix_bytes: usize) -> Result<u32> {
    match bytes.get(..prefix_bytes) {
        Some(prefix) if (1..=4).contains(&prefix_bytes) => Ok(prefix
            .iter()
            .fold(0, |key_group, &byte| (key_group << 8) | u32::from(byte))),
        _ => Err(prefix_error(bytes, prefix_bytes)),
    }
}

/// Why `bytes` has no key-group prefix of `prefix_bytes` bytes; out of line, so that the
/// read above inlines where keys are read one by one.
#[cold]
#[inline(never)]
fn prefix_error(bytes: &[u8], prefix_bytes: usize) -> Error {
    if !(1..=4).contains(&prefix_bytes) {
        return Error::InvalidArgument(format!(
            "key-group prefix width {prefix_bytes} is outside of 1..=4"
        ));
    }
    Error::Corrupted {
        what: "key-group prefix".to_owned(),
        reason: format!("expected {prefix_bytes} bytes, found only {}", bytes.len()),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use state_api::MaxParallelism;

    use super::*;

    fn prefix_bytes_of(max_parallelism: u32) -> usize {
        MaxParallelism::new(max_parallelism).unwrap().prefix_bytes()
    }

    /// Asserts that `result` is an `InvalidArgument` whose message mentions every one of
    /// `values`.
    #[track_caller]
    fn check_invalid<T: std::fmt::Debug>(result: Result<T>, values: &[&str]) {
        let err = result.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        for value in values {
            assert!(err.to_string().contains(value), "{err} lacks {value:?}");
        }
    }

    #[track_caller]
    fn check_prefix(key_group: u32, max_parallelism: u32, expected: &[u8]) {
        let prefix_bytes = MaxParallelism::new(max_parallelism).unwrap().prefix_bytes();
        let mut out = vec![0xaa];
        write_key_group_prefix(key_group, prefix_bytes, &mut out);
        assert_eq!(&out[1..], expected, "prefix of {key_group}");
        out.push(0x55);
        assert_eq!(
            read_key_group_prefix(&out[1..], prefix_bytes).unwrap(),
            key_group
        );
    }

    #[test]
    fn key_group_prefix() {
        assert_eq!(prefix_bytes_of(1), 1);
        assert_eq!(prefix_bytes_of(128), 1);
        assert_eq!(prefix_bytes_of(129), 2);
        assert_eq!(prefix_bytes_of(32_768), 2);
        check_prefix(0, 128, &[0]);
        check_prefix(127, 128, &[127]);
        check_prefix(0, 129, &[0, 0]);
        check_prefix(128, 129, &[0, 128]);
        check_prefix(700, 1024, &[0x02, 0xbc]);
        check_prefix(32_767, 32_768, &[0x7f, 0xff]);
    }

    #[test]
    fn key_group_prefix_other_widths() {
        let mut out = Vec::new();
        write_key_group_prefix(0x0001_0203, 4, &mut out);
        assert_eq!(out, [0, 1, 2, 3]);
        assert_eq!(read_key_group_prefix(&out, 4).unwrap(), 0x0001_0203);
        assert_eq!(read_key_group_prefix(&out, 3).unwrap(), 0x0102);
    }

    #[test]
    fn read_key_group_prefix_errors() {
        let err = read_key_group_prefix(&[7], 2).unwrap_err();
        assert!(matches!(err, Error::Corrupted { .. }), "{err}");
        assert!(
            err.to_string().contains("expected 2 bytes, found only 1"),
            "{err}"
        );
        let err = read_key_group_prefix(&[], 1).unwrap_err();
        assert!(matches!(err, Error::Corrupted { .. }), "{err}");
        check_invalid(read_key_group_prefix(&[1, 2, 3], 0), &["width 0"]);
        check_invalid(read_key_group_prefix(&[1, 2, 3, 4, 5], 5), &["width 5"]);
    }

    proptest! {
        #[test]
        fn prop_prefix_round_trip(max_parallelism in 1..=32_768u32, seed in any::<u32>()) {
            let key_group = seed % max_parallelism;
            let prefix_bytes = MaxParallelism::new(max_parallelism).unwrap().prefix_bytes();
            let mut out = Vec::new();
            write_key_group_prefix(key_group, prefix_bytes, &mut out);
            prop_assert_eq!(out.len(), prefix_bytes);
            prop_assert_eq!(read_key_group_prefix(&out, prefix_bytes).unwrap(), key_group);
        }
    }
}
