//! The variable-length integers of the canonical format from version 3 on: unsigned LEB128
//! of a `u32`. Seven bits per byte, least significant group first; every byte but the last
//! has its top bit (`0x80`) set. A value below 128 takes one byte, below 16384 two, and any
//! `u32` at most [`MAX_LEN`] bytes.
//!
//! Only the shortest encoding of a value is valid: a last byte of `0x00` after other bytes
//! (an *overlong* encoding) is refused, so every value has exactly one encoding and a
//! stream is written again byte for byte.

/// The most bytes a `u32` takes.
pub(super) const MAX_LEN: usize = 5;

/// What makes bytes not a varint of this format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Malformed {
    /// The fifth byte has its top bit set: the varint would run on past 5 bytes.
    TooLong,
    /// The fifth byte carries bits above the 32nd: the value exceeds `u32::MAX`.
    AboveU32,
    /// The last byte is `0x00` after others: not the shortest encoding.
    Overlong,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Malformed::TooLong => "a variable-length integer runs past 5 bytes",
            Malformed::AboveU32 => "a variable-length integer exceeds 4294967295",
            Malformed::Overlong => {
                "a variable-length integer is not in its shortest form (its last byte is 0)"
            }
        })
    }
}

/// Appends `value` to `out`.
#[inline(always)]
pub(super) fn put(out: &mut Vec<u8>, value: u32) {
    if value < 0x80 {
        // Nearly every length of a key, namespace or small value: one byte, inlined where
        // entries are written.
        out.push(value as u8);
    } else {
        put_long(out, value);
    }
}

/// [`put`] of a value of two bytes or more.
#[inline(never)]
fn put_long(out: &mut Vec<u8>, value: u32) {
    let mut rest = value;
    while rest >= 0x80 {
        out.push((rest as u8) | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// Decodes the varint at the start of `bytes`: its value and how many bytes it took, or
/// `None` when `bytes` end before it does (then `bytes` is shorter than [`MAX_LEN`]).
#[inline]
pub(super) fn decode(bytes: &[u8]) -> Result<Option<(u32, usize)>, Malformed> {
    if let Some(&first) = bytes.first()
        && first < 0x80
    {
        return Ok(Some((u32::from(first), 1)));
    }
    let mut value = 0u32;
    for (index, &byte) in bytes.iter().enumerate().take(MAX_LEN) {
        if index == MAX_LEN - 1 {
            if byte & 0x80 != 0 {
                return Err(Malformed::TooLong);
            }
            // 4 * 7 bits are taken: 4 are left.
            if byte > 0x0F {
                return Err(Malformed::AboveU32);
            }
        }
        value |= u32::from(byte & 0x7F) << (7 * index);
        if byte & 0x80 == 0 {
            if byte == 0 && index > 0 {
                return Err(Malformed::Overlong);
            }
            return Ok(Some((value, index + 1)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn encoded(value: u32) -> Vec<u8> {
        let mut out = Vec::new();
        put(&mut out, value);
        out
    }

    fn check(value: u32, bytes: &[u8]) {
        assert_eq!(encoded(value), bytes, "encoding of {value}");
        assert_eq!(
            decode(bytes),
            Ok(Some((value, bytes.len()))),
            "decoding {bytes:02x?}"
        );
    }

    #[test]
    fn zero() {
        check(0, &[0x00]);
    }

    #[test]
    fn largest_one_byte_value() {
        check(127, &[0x7F]);
    }

    #[test]
    fn smallest_two_byte_value() {
        check(128, &[0x80, 0x01]);
    }

    #[test]
    fn three_hundred() {
        check(300, &[0xAC, 0x02]);
    }

    #[test]
    fn largest_two_byte_value() {
        check(16_383, &[0xFF, 0x7F]);
    }

    #[test]
    fn u32_max_takes_five_bytes() {
        check(u32::MAX, &[0xFF, 0xFF, 0xFF, 0xFF, 0x0F]);
    }

    fn check_malformed(bytes: &[u8], expected: Malformed) {
        assert_eq!(decode(bytes), Err(expected), "decoding {bytes:02x?}");
    }

    #[test]
    fn a_sixth_byte_is_too_long() {
        check_malformed(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00], Malformed::TooLong);
        check_malformed(&[0xFF; 10], Malformed::TooLong);
    }

    #[test]
    fn a_value_above_u32_max_is_refused() {
        check_malformed(&[0xFF, 0xFF, 0xFF, 0xFF, 0x10], Malformed::AboveU32);
        check_malformed(&[0x80, 0x80, 0x80, 0x80, 0x7F], Malformed::AboveU32);
    }

    #[test]
    fn overlong_encodings_are_refused() {
        check_malformed(&[0x80, 0x00], Malformed::Overlong);
        check_malformed(&[0x81, 0x80, 0x00], Malformed::Overlong);
        check_malformed(&[0xFF, 0xFF, 0xFF, 0xFF, 0x00], Malformed::Overlong);
    }

    #[test]
    fn bytes_ending_inside_a_varint_are_incomplete() {
        for bytes in [&[][..], &[0x80], &[0xFF, 0xFF, 0xFF, 0xFF]] {
            assert_eq!(decode(bytes), Ok(None), "decoding {bytes:02x?}");
        }
    }

    #[test]
    fn bytes_after_a_varint_are_left_alone() {
        assert_eq!(decode(&[0xAC, 0x02, 0xFF, 0xFF]), Ok(Some((300, 2))));
    }

    proptest! {
        #[test]
        fn every_value_round_trips_in_its_shortest_form(value in any::<u32>()) {
            let bytes = encoded(value);
            let bits = 32 - value.leading_zeros() as usize;
            prop_assert_eq!(bytes.len(), bits.div_ceil(7).max(1));
            prop_assert_eq!(decode(&bytes), Ok(Some((value, bytes.len()))));
            for cut in 0..bytes.len() {
                prop_assert_eq!(decode(&bytes[..cut]), Ok(None));
            }
        }

        #[test]
        fn any_bytes_decode_to_a_value_that_encodes_back_or_an_error(
            bytes in prop::collection::vec(any::<u8>(), 0..8),
        ) {
            match decode(&bytes) {
                Ok(Some((value, len))) => prop_assert_eq!(encoded(value), &bytes[..len]),
                Ok(None) => prop_assert!(bytes.len() < MAX_LEN),
                Err(_) => {}
            }
        }
    }
}
