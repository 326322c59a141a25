//! Checks every decorator's tests share: round trips, independent sections, corruption,
//! truncation and arbitrary input, plus data generators and a CRC-32C of our own.

use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};

use proptest::sample::Index;
use state_api::{Error, StreamCompressionDecorator};

/// Compresses `data` as one section, in one write.
pub(crate) fn compress(decorator: &dyn StreamCompressionDecorator, data: &[u8]) -> Vec<u8> {
    let mut stream = Vec::new();
    let mut section = decorator.compress(&mut stream);
    section.write_all(data).unwrap();
    section.finish().unwrap();
    stream
}

/// Compresses `pieces` as one section, flushing after each so each piece ends a chunk.
pub(crate) fn compress_pieces(
    decorator: &dyn StreamCompressionDecorator,
    pieces: &[Vec<u8>],
) -> Vec<u8> {
    let mut stream = Vec::new();
    let mut section = decorator.compress(&mut stream);
    for piece in pieces {
        section.write_all(piece).unwrap();
        section.flush().unwrap();
    }
    section.finish().unwrap();
    stream
}

/// Decompresses one section that fills `stream`.
pub(crate) fn decompress(
    decorator: &dyn StreamCompressionDecorator,
    stream: &[u8],
) -> io::Result<Vec<u8>> {
    let mut input = stream;
    let mut restored = Vec::new();
    decorator
        .decompress(&mut input)
        .read_to_end(&mut restored)?;
    Ok(restored)
}

/// Incompressible bytes (xorshift64*), the same for the same seed.
pub(crate) fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        bytes.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// Compressible text: words from a small vocabulary in a pseudo-random order.
pub(crate) fn text(len: usize) -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "checkpoint ",
        "key group ",
        "state ",
        "snapshot ",
        "backend ",
        "restore ",
        "value ",
        "window ",
        "timer ",
        "operator ",
        "barrier ",
        "\n",
    ];
    let mut out = Vec::with_capacity(len + 16);
    for byte in pseudo_random(len, 42) {
        if out.len() >= len {
            break;
        }
        out.extend_from_slice(WORDS[usize::from(byte) % WORDS.len()].as_bytes());
    }
    out.truncate(len);
    out
}

/// Pieces that, flushed one by one, give a small stream of several chunks or blocks:
/// compressible, incompressible, a single byte, compressible again.
pub(crate) fn multi_chunk_pieces() -> Vec<Vec<u8>> {
    vec![text(300), pseudo_random(200, 7), b"x".to_vec(), text(500)]
}

/// Asserts `err` is a codec finding (corruption or truncation) about `what`.
pub(crate) fn assert_codec_error(err: &io::Error, what: &str) {
    match err.kind() {
        io::ErrorKind::UnexpectedEof => assert_truncated(err, what),
        _ => assert_corrupted(err, what),
    }
}

/// Asserts `err` is kind `InvalidData` carrying [`Error::Corrupted`] about `what`.
pub(crate) fn assert_corrupted(err: &io::Error, what: &str) {
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    let inner = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Error>());
    assert!(
        matches!(inner, Some(Error::Corrupted { what: found, .. }) if found == what),
        "{err}"
    );
}

/// Asserts `err` is kind `UnexpectedEof` carrying [`Error::Truncated`] about `what`.
pub(crate) fn assert_truncated(err: &io::Error, what: &str) {
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    let inner = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Error>());
    assert!(
        matches!(inner, Some(Error::Truncated { what: found, .. }) if found == what),
        "{err}"
    );
}

/// Writes `data` in one call and in pieces, reads it back in one call and in pieces, and
/// checks the reader consumed the whole section.
pub(crate) fn check_round_trip(decorator: &dyn StreamCompressionDecorator, data: &[u8]) {
    for write_len in [data.len().max(1), 4093] {
        check_round_trip_in_writes(decorator, data, write_len);
    }
}

/// Round trip with writes of `write_len` bytes and reads into a small buffer.
pub(crate) fn check_round_trip_in_writes(
    decorator: &dyn StreamCompressionDecorator,
    data: &[u8],
    write_len: usize,
) {
    let mut stream = Vec::new();
    let mut section = decorator.compress(&mut stream);
    for piece in data.chunks(write_len) {
        section.write_all(piece).unwrap();
    }
    section.finish().unwrap();

    let restored = decompress(decorator, &stream).unwrap();
    assert!(
        restored == data,
        "{}: {} bytes written in writes of {write_len}, {} bytes read back, or different bytes",
        decorator.name(),
        data.len(),
        restored.len()
    );

    let mut input = &stream[..];
    let mut restored = Vec::new();
    {
        let mut reader = decorator.decompress(&mut input);
        let mut buf = [0; 4099];
        loop {
            match reader.read(&mut buf).unwrap() {
                0 => break,
                n => restored.extend_from_slice(&buf[..n]),
            }
        }
        assert_eq!(
            reader.read(&mut buf).unwrap(),
            0,
            "read again after the end"
        );
    }
    assert!(restored == data, "{}: small reads", decorator.name());
    assert!(input.is_empty(), "{} bytes left unread", input.len());
}

/// Writes several sections into one stream, each after a raw 4-byte key-group id as the
/// keyed format does, and reads each back on its own, last first: by seeking to its offset
/// and by slicing out its bytes. `self_delimiting` codecs must also stop by themselves at the
/// section's end when the input goes on.
pub(crate) fn check_sections(decorator: &dyn StreamCompressionDecorator, self_delimiting: bool) {
    let sections = [
        Vec::new(),
        b"a few bytes".to_vec(),
        text(200_000),
        pseudo_random(70_000, 5),
        Vec::new(),
        text(1),
    ];
    let mut stream = Vec::new();
    let mut offsets = Vec::new();
    for (key_group, section) in (0u32..).zip(&sections) {
        offsets.push(stream.len());
        stream.extend_from_slice(&key_group.to_be_bytes());
        let mut writer = decorator.compress(&mut stream);
        writer.write_all(section).unwrap();
        writer.finish().unwrap();
    }
    offsets.push(stream.len());

    for (index, section) in sections.iter().enumerate().rev() {
        let (start, end) = (offsets[index], offsets[index + 1]);
        let key_group = u32::try_from(index).unwrap();
        let context = format!("{} key group {key_group}", decorator.name());

        let mut input = Cursor::new(&stream[..]);
        input.seek(SeekFrom::Start(start as u64)).unwrap();
        let mut id = [0; 4];
        input.read_exact(&mut id).unwrap();
        assert_eq!(u32::from_be_bytes(id), key_group, "{context}");
        {
            let mut reader = decorator.decompress(&mut input);
            let mut restored = vec![0; section.len()];
            reader.read_exact(&mut restored).unwrap();
            assert!(restored == *section, "{context}: different bytes");
            if self_delimiting {
                let mut rest = Vec::new();
                reader.read_to_end(&mut rest).unwrap();
                assert!(rest.is_empty(), "{context}: read on past the section");
            }
        }
        // The reader takes nothing of the next section. Without an end mark, reading the zero
        // bytes of an empty section reads nothing, not even its stream header.
        let stopped_at = usize::try_from(input.position()).unwrap();
        let header_left = !self_delimiting && section.is_empty();
        assert!(
            stopped_at == end || (header_left && stopped_at == start + 4),
            "{context}: stopped at {stopped_at}, the section is {start}..{end}"
        );

        let restored = decompress(decorator, &stream[start + 4..end]).unwrap();
        assert!(restored == *section, "{context}: sliced section");
    }
}

/// Flips bytes of `stream` (every position of a stream up to 4 KiB, 256 spread over a larger
/// one, plus its last 64; each with three masks) and checks the decoder reports corruption or
/// truncation. Where the format cannot tell, `undetectable(position, new_byte)` returns what
/// the decoder then reads (all of it: a partial read that ends without error is a miss).
///
/// A flip may also leave another encoding of the same data (a Snappy copy whose changed
/// offset points at an identical earlier run): harmless, so allowed, and counted in the
/// returned number for codecs that promise to see every flip.
pub(crate) fn check_corruption(
    decorator: &dyn StreamCompressionDecorator,
    stream: &[u8],
    undetectable: impl Fn(usize, u8) -> Option<Vec<u8>>,
) -> usize {
    let what = format!("{} compressed section", decorator.name());
    let original = decompress(decorator, stream).unwrap();
    let step = if stream.len() <= 4096 {
        1
    } else {
        stream.len() / 256
    };
    let positions = (0..stream.len())
        .step_by(step)
        .chain(stream.len().saturating_sub(64)..stream.len());
    let mut corrupt = stream.to_vec();
    let mut same_data = 0;
    for position in positions {
        for mask in [0x01, 0x80, 0xff] {
            corrupt[position] ^= mask;
            match decompress(decorator, &corrupt) {
                Err(err) => assert_codec_error(&err, &what),
                Ok(restored) if restored == original => same_data += 1,
                Ok(restored) => {
                    let expected = undetectable(position, corrupt[position]);
                    assert!(
                        expected.is_some_and(|expected| expected == restored),
                        "byte {position} of {} flipped with {mask:#04x} went unnoticed",
                        stream.len()
                    );
                }
            }
            corrupt[position] ^= mask;
        }
    }
    same_data
}

/// Cuts `stream` at every position and checks the decoder reports truncation, or, where
/// `clean_cut(cut)` names the length of data the format may deliver for that cut, returns
/// exactly that strict prefix of `original`; never different bytes.
pub(crate) fn check_truncation(
    decorator: &dyn StreamCompressionDecorator,
    stream: &[u8],
    original: &[u8],
    clean_cut: impl Fn(usize) -> Option<usize>,
) {
    let what = format!("{} compressed section", decorator.name());
    for cut in 0..stream.len() {
        match decompress(decorator, &stream[..cut]) {
            Err(err) => assert_truncated(&err, &what),
            Ok(restored) => {
                let expected = clean_cut(cut);
                assert!(
                    expected == Some(restored.len())
                        && restored.len() < original.len()
                        && original.starts_with(&restored),
                    "cut at {cut} of {} read {} bytes, expected {expected:?} bytes of the original",
                    stream.len(),
                    restored.len()
                );
            }
        }
    }
}

/// Reads `stream`, which must fail, and checks every read after the failure fails again
/// instead of handing out bytes from further on.
pub(crate) fn check_failure_is_latched(
    decorator: &dyn StreamCompressionDecorator,
    stream: &[u8],
    what: &str,
) {
    let mut input = stream;
    let mut reader = decorator.decompress(&mut input);
    let mut buf = [0; 64];
    let first = loop {
        match reader.read(&mut buf) {
            Ok(0) => panic!("{what}: the corrupt stream read to its end"),
            Ok(_) => continue,
            Err(err) => break err,
        }
    };
    assert_codec_error(&first, what);
    for _ in 0..3 {
        let again = reader.read(&mut buf).unwrap_err();
        assert_eq!(again.kind(), first.kind(), "{again}");
        assert_eq!(again.to_string(), first.to_string());
    }
}

/// Feeds arbitrary bytes to the decoder: it must not panic, and must either read them or
/// report a codec error, and keep to that answer on the next read.
pub(crate) fn check_arbitrary_input(
    decorator: &dyn StreamCompressionDecorator,
    bytes: &[u8],
    what: &str,
) {
    let mut input = bytes;
    let mut reader = decorator.decompress(&mut input);
    let mut restored = Vec::new();
    let mut buf = [0; 1];
    match reader.read_to_end(&mut restored) {
        Ok(_) => assert_eq!(reader.read(&mut buf).unwrap(), 0),
        Err(err) => {
            assert_codec_error(&err, what);
            assert_codec_error(&reader.read(&mut buf).unwrap_err(), what);
        }
    }
}

/// Compresses `data`, applies `flips` (position, xor mask) and feeds the result to the
/// decoder, as [`check_arbitrary_input`].
pub(crate) fn check_mutated_stream(
    decorator: &dyn StreamCompressionDecorator,
    data: &[u8],
    flips: &[(Index, u8)],
    what: &str,
) {
    let mut stream = compress(decorator, data);
    if stream.is_empty() {
        return;
    }
    for (position, mask) in flips {
        let position = position.index(stream.len());
        stream[position] ^= mask;
    }
    check_arbitrary_input(decorator, &stream, what);
}

/// CRC-32C (Castagnoli, reflected, polynomial 0x82f63b78), bit by bit: slow, obviously
/// right, and independent of the codec crates' own tables.
pub(crate) fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The masked CRC-32C the Snappy framing format stores per chunk.
pub(crate) fn crc32c_masked(data: &[u8]) -> u32 {
    crc32c(data).rotate_right(15).wrapping_add(0xa282_ead8)
}
