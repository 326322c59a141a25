//! Conformance of [`StreamCompressionDecorator`]s.
//!
//! ```
//! use state_api::UncompressedStreamCompressionDecorator;
//! use snapstate_tests::compression::{run_all, DecoratorCapabilities};
//!
//! run_all(&UncompressedStreamCompressionDecorator, DecoratorCapabilities::default());
//! ```

use std::io::{Read, Write};

use state_api::{Error, StreamCompressionDecorator};

/// What a decorator can promise beyond the basic contract.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecoratorCapabilities {
    /// Its format carries checksums: any changed byte is reported as an error, never
    /// returned as data.
    pub detects_corruption: bool,
    /// Its format marks the end of a section: input cut anywhere is reported as an error.
    pub detects_truncation: bool,
}

fn compress(
    decorator: &dyn StreamCompressionDecorator,
    sections: &[&[u8]],
) -> (Vec<u8>, Vec<usize>) {
    let mut stream = Vec::new();
    let mut offsets = Vec::new();
    for data in sections {
        offsets.push(stream.len());
        let mut section = decorator.compress(&mut stream);
        // Several writes of uneven size, as a snapshot writer issues them.
        for chunk in data.chunks(7919) {
            section
                .write_all(chunk)
                .unwrap_or_else(|err| panic!("{}: compressing failed: {err}", decorator.name()));
        }
        section.finish().unwrap_or_else(|err| {
            panic!("{}: finishing a section failed: {err}", decorator.name())
        });
    }
    (stream, offsets)
}

/// Decompresses one section starting at the beginning of `input`.
fn decompress(
    decorator: &dyn StreamCompressionDecorator,
    mut input: &[u8],
) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    decorator
        .decompress(&mut input)
        .read_to_end(&mut out)
        .map_err(|err| {
            Error::stream(format!("decompressing a {} section", decorator.name()), err)
        })?;
    Ok(out)
}

/// Pseudo-random bytes (xorshift), deterministic per seed.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Compressible text-like bytes.
pub fn text_bytes(len: usize) -> Vec<u8> {
    b"key group sections of a keyed snapshot, "
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

/// Empty, tiny and multi-MiB sections come back byte for byte.
pub fn round_trip(decorator: &dyn StreamCompressionDecorator) {
    let cases: [(&str, Vec<u8>); 5] = [
        ("empty", Vec::new()),
        ("one byte", vec![42]),
        ("small", b"hello key group".to_vec()),
        ("3 MiB random", random_bytes(3 << 20, 1)),
        ("3 MiB text", text_bytes(3 << 20)),
    ];
    for (label, data) in cases {
        let (stream, _) = compress(decorator, &[&data]);
        let back = decompress(decorator, &stream)
            .unwrap_or_else(|err| panic!("{}: {label}: {err}", decorator.name()));
        assert!(
            back == data,
            "{}: {label}: restored bytes differ",
            decorator.name()
        );
    }
}

/// Consecutive sections of one stream are each readable from their own offset, which is
/// how a restore reads only the key groups it needs.
pub fn sections_read_independently(decorator: &dyn StreamCompressionDecorator) {
    let sections: Vec<Vec<u8>> = (0..6u64)
        .map(|i| match i % 3 {
            0 => random_bytes(1000 * i as usize, i),
            1 => text_bytes(70_000 + i as usize),
            _ => Vec::new(),
        })
        .collect();
    let refs: Vec<&[u8]> = sections.iter().map(Vec::as_slice).collect();
    let (stream, offsets) = compress(decorator, &refs);
    for (index, (offset, expected)) in offsets.iter().zip(&sections).enumerate().rev() {
        let end = offsets.get(index + 1).copied().unwrap_or(stream.len());
        let back = decompress(decorator, &stream[*offset..end])
            .unwrap_or_else(|err| panic!("{}: section {index}: {err}", decorator.name()));
        assert!(
            back == *expected,
            "{}: section {index} differs",
            decorator.name()
        );
    }
}

/// A section cut at any byte gives an error or, where the format cannot tell, a prefix
/// of the data: never different bytes, never a panic.
pub fn truncation_never_yields_wrong_bytes(
    decorator: &dyn StreamCompressionDecorator,
    capabilities: DecoratorCapabilities,
) {
    let data = [random_bytes(70_000, 9), text_bytes(70_000)].concat();
    let (stream, _) = compress(decorator, &[&data]);
    let step = (stream.len() / 2000).max(1);
    for cut in (0..stream.len()).step_by(step) {
        match decompress(decorator, &stream[..cut]) {
            Err(err) => assert!(
                matches!(err, Error::Truncated { .. } | Error::Corrupted { .. }),
                "{}: cut at {cut}: untyped error {err}",
                decorator.name()
            ),
            Ok(back) => {
                assert!(
                    !capabilities.detects_truncation,
                    "{}: cut at {cut} of {} was not detected",
                    decorator.name(),
                    stream.len()
                );
                assert!(
                    back.len() < data.len() && data.starts_with(&back),
                    "{}: cut at {cut} returned bytes that are not a prefix of the data",
                    decorator.name()
                );
            }
        }
    }
}

/// Changed bytes never panic and errors are typed; a decorator that claims to detect
/// corruption reports every change instead of returning different data.
pub fn corruption_is_detected(
    decorator: &dyn StreamCompressionDecorator,
    capabilities: DecoratorCapabilities,
) {
    if !capabilities.detects_corruption {
        println!(
            "`{}` does not claim to detect corruption: checking only that changed bytes never panic",
            decorator.name()
        );
    }
    let data = [text_bytes(100_000), random_bytes(50_000, 3)].concat();
    let (stream, _) = compress(decorator, &[&data]);
    let step = (stream.len() / 1500).max(1);
    for position in (0..stream.len()).step_by(step) {
        for flip in [0x01u8, 0x80, 0xFF] {
            let mut corrupt = stream.clone();
            corrupt[position] ^= flip;
            match decompress(decorator, &corrupt) {
                Err(err) => assert!(
                    matches!(err, Error::Corrupted { .. } | Error::Truncated { .. }),
                    "{}: byte {position} ^ {flip:#x}: untyped error {err}",
                    decorator.name()
                ),
                Ok(back) => assert!(
                    !capabilities.detects_corruption || back == data,
                    "{}: byte {position} ^ {flip:#x} returned wrong data without an error",
                    decorator.name()
                ),
            }
        }
    }
}

/// Runs every decorator check.
pub fn run_all(decorator: &dyn StreamCompressionDecorator, capabilities: DecoratorCapabilities) {
    round_trip(decorator);
    sections_read_independently(decorator);
    truncation_never_yields_wrong_bytes(decorator, capabilities);
    corruption_is_detected(decorator, capabilities);
}
