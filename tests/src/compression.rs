//! Conformance of [`StreamCompressionDecorator`]s.
//!
//! ```
//! use state_api::UncompressedStreamCompressionDecorator;
//! use snapstate_tests::compression::{run_all, DecoratorCapabilities};
//!
//! run_all(&UncompressedStreamCompressionDecorator, DecoratorCapabilities::default());
//! ```
//!
//! [`run_all`] runs every contract below in one test; [`decorator_contracts!`](crate::decorator_contracts)
//! gives each contract a test of its own. The contracts hold for every decorator:
//!
//! - [`round_trip`]: empty, tiny and multi-MiB sections come back byte for byte, written in
//!   one write or many, read in one read or many; a section's reader reads all of the
//!   section and then keeps to its end.
//! - [`round_trip_arbitrary_writes`]: the same for arbitrary data in writes of any size.
//! - [`flushed_pieces_round_trip`]: flushing between writes, also with nothing new to flush,
//!   changes nothing of what is read back.
//! - [`sections_read_independently`]: each section of a stream is read from its own offset.
//! - [`truncation_never_yields_wrong_bytes`] and [`corruption_is_detected`]: cut or changed
//!   sections give typed errors or, where the decorator does not claim to see them, a prefix
//!   of the data or any data; never a panic.
//! - [`failures_are_latched`]: after a failure every later read fails the same way.
//! - [`arbitrary_input_never_panics`]: arbitrary bytes and randomly changed sections are read
//!   or reported as codec findings, never a panic.
//!
//! A failure is reported as an `io::Error` of kind `InvalidData` carrying
//! [`Error::Corrupted`] or of kind `UnexpectedEof` carrying [`Error::Truncated`], as
//! `state-api` specifies; any other error fails the contracts.
//!
//! The rest are building blocks for a decorator's own tests: sections written and read
//! ([`compress_section`], [`compress_pieces`], [`decompress_section`]), data
//! ([`random_bytes`], [`text_bytes`], [`multi_chunk_pieces`]), single-case checks for its
//! own property tests ([`round_trip_in_writes`], [`arbitrary_input`], [`mutated_section`]),
//! and exhaustive checks that take what only the decorator knows about its format
//! ([`corruption_at_every_byte`], [`truncation_at_every_byte`], [`failure_is_latched`]).
//! Those that meet failures return them, so a decorator's tests can check what they name.
//! Randomised contracts run a fixed number of cases from a fixed seed: the same inputs on
//! every run.

use std::fmt::Debug;
use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};

use proptest::prelude::*;
use proptest::test_runner::{TestRng, TestRunner};
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

/// Appends one section holding `data` to `stream`, in writes of `write_len` bytes.
fn write_section(
    decorator: &dyn StreamCompressionDecorator,
    stream: &mut Vec<u8>,
    data: &[u8],
    write_len: usize,
) {
    let mut section = decorator.compress(stream);
    for chunk in data.chunks(write_len) {
        section
            .write_all(chunk)
            .unwrap_or_else(|err| panic!("{}: compressing failed: {err}", decorator.name()));
    }
    section
        .finish()
        .unwrap_or_else(|err| panic!("{}: finishing a section failed: {err}", decorator.name()));
}

/// Compresses `data` as one section, in one write.
pub fn compress_section(decorator: &dyn StreamCompressionDecorator, data: &[u8]) -> Vec<u8> {
    let mut stream = Vec::new();
    write_section(decorator, &mut stream, data, data.len().max(1));
    stream
}

/// Compresses `pieces` as one section, flushing after each, so in a codec whose flush ends
/// the current chunk or block each piece ends one.
pub fn compress_pieces(decorator: &dyn StreamCompressionDecorator, pieces: &[Vec<u8>]) -> Vec<u8> {
    let mut stream = Vec::new();
    let mut section = decorator.compress(&mut stream);
    for piece in pieces {
        section
            .write_all(piece)
            .unwrap_or_else(|err| panic!("{}: compressing failed: {err}", decorator.name()));
        section
            .flush()
            .unwrap_or_else(|err| panic!("{}: flushing failed: {err}", decorator.name()));
    }
    section
        .finish()
        .unwrap_or_else(|err| panic!("{}: finishing a section failed: {err}", decorator.name()));
    stream
}

/// Decompresses one section that fills `stream`, reading to its end. A failure must be a
/// codec finding, an `io::Error` of kind `InvalidData` carrying [`Error::Corrupted`] or of
/// kind `UnexpectedEof` carrying [`Error::Truncated`]; it is returned unpacked.
pub fn decompress_section(
    decorator: &dyn StreamCompressionDecorator,
    stream: &[u8],
) -> Result<Vec<u8>, Error> {
    let mut input = stream;
    let mut restored = Vec::new();
    match decorator.decompress(&mut input).read_to_end(&mut restored) {
        Ok(_) => Ok(restored),
        Err(err) => Err(finding(decorator, err, "reading a section")),
    }
}

/// Unpacks an error of `decorator`'s reader, which must be a codec finding: kind
/// `InvalidData` carrying [`Error::Corrupted`], or kind `UnexpectedEof` carrying
/// [`Error::Truncated`]. `context` says what was being read.
fn finding(decorator: &dyn StreamCompressionDecorator, err: io::Error, context: &str) -> Error {
    let kind = err.kind();
    let text = err.to_string();
    let error = Error::stream(context, err);
    let typed = matches!(
        (kind, &error),
        (io::ErrorKind::InvalidData, Error::Corrupted { .. })
            | (io::ErrorKind::UnexpectedEof, Error::Truncated { .. })
    );
    assert!(
        typed,
        "{}: {context}: a failed read must be an io::Error of kind InvalidData carrying \
         Error::Corrupted or of kind UnexpectedEof carrying Error::Truncated; got kind {kind:?}: {text}",
        decorator.name()
    );
    error
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

/// Pieces that, written and flushed one by one ([`compress_pieces`]), make a small section of
/// several chunks or blocks in a codec whose flush ends one: compressible, incompressible, a
/// single byte, compressible again.
pub fn multi_chunk_pieces() -> Vec<Vec<u8>> {
    vec![
        text_bytes(300),
        random_bytes(200, 7),
        b"x".to_vec(),
        text_bytes(500),
    ]
}

/// Writes `data` as one section in writes of `write_len` bytes, then reads it back in one
/// read and in reads into a 4099-byte buffer. Each time the data must come back byte for
/// byte, the reader must have read all of the section's bytes (bytes left unread would be
/// bytes unchecked), and a read after the end must read nothing.
pub fn round_trip_in_writes(
    decorator: &dyn StreamCompressionDecorator,
    data: &[u8],
    write_len: usize,
) {
    check_round_trip(decorator, "arbitrary data", data, write_len);
}

/// [`round_trip_in_writes`], with `label` naming the data in failures.
fn check_round_trip(
    decorator: &dyn StreamCompressionDecorator,
    label: &str,
    data: &[u8],
    write_len: usize,
) {
    let name = decorator.name();
    let write_len = write_len.max(1);
    let context = if write_len >= data.len() {
        format!("{label}, {} bytes written in one write", data.len())
    } else {
        format!(
            "{label}, {} bytes written in writes of {write_len}",
            data.len()
        )
    };
    let mut stream = Vec::new();
    write_section(decorator, &mut stream, data, write_len);

    for read_len in [None, Some(4099)] {
        let how = match read_len {
            None => "read in one read".to_owned(),
            Some(len) => format!("read in reads of {len}"),
        };
        let mut input = &stream[..];
        let mut restored = Vec::new();
        {
            let mut reader = decorator.decompress(&mut input);
            let mut buf = vec![0; read_len.unwrap_or(64)];
            let read = match read_len {
                None => reader.read_to_end(&mut restored).map(drop),
                Some(_) => loop {
                    match reader.read(&mut buf) {
                        Ok(0) => break Ok(()),
                        Ok(n) => restored.extend_from_slice(&buf[..n]),
                        Err(err) => break Err(err),
                    }
                },
            };
            if let Err(err) = read {
                panic!("{name}: {context}, {how}: {err}");
            }
            assert!(
                restored == data,
                "{name}: {context}, {how}: {} bytes read back, or different bytes",
                restored.len()
            );
            match reader.read(&mut buf) {
                Ok(0) => {}
                Ok(n) => panic!("{name}: {context}, {how}: a read after the end read {n} bytes"),
                Err(err) => panic!("{name}: {context}, {how}: a read after the end failed: {err}"),
            }
        }
        assert!(
            input.is_empty(),
            "{name}: {context}, {how}: the reader left {} of the section's {} bytes unread",
            input.len(),
            stream.len()
        );
    }
}

/// Empty, tiny and multi-MiB sections come back byte for byte, written in one write and in
/// many (one byte at a time for the tiny ones), read in one read and in many
/// ([`round_trip_in_writes`]).
pub fn round_trip(decorator: &dyn StreamCompressionDecorator) {
    let cases: [(&str, Vec<u8>); 5] = [
        ("empty", Vec::new()),
        ("one byte", vec![42]),
        ("small", b"hello key group".to_vec()),
        ("5 MiB random", random_bytes(5 << 20, 1)),
        ("5 MiB text", text_bytes(5 << 20)),
    ];
    for (label, data) in cases {
        let many = if data.len() < 1024 { 1 } else { 4093 };
        for write_len in [usize::MAX, many] {
            check_round_trip(decorator, label, &data, write_len);
        }
    }
}

/// Runs `test` on `cases` values of `strategy` drawn from a fixed seed, so every run checks
/// the same inputs; a failure shrinks to a small input, printed with the panic naming
/// `decorator` and `rule`.
fn for_generated<S>(
    decorator: &dyn StreamCompressionDecorator,
    rule: &str,
    strategy: S,
    test: impl Fn(S::Value),
) where
    S: Strategy,
    S::Value: Debug,
{
    let config = ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let rng = TestRng::deterministic_rng(config.rng_algorithm);
    let mut runner = TestRunner::new_with_rng(config, rng);
    if let Err(err) = runner.run(&strategy, |value| {
        test(value);
        Ok(())
    }) {
        panic!("{}: {rule}: {err}", decorator.name());
    }
}

/// Arbitrary data up to 20,000 bytes, written in writes of any size from 1 to 5,000 bytes,
/// comes back byte for byte ([`round_trip_in_writes`]).
pub fn round_trip_arbitrary_writes(decorator: &dyn StreamCompressionDecorator) {
    for_generated(
        decorator,
        "arbitrary data in writes of any size must round trip",
        (
            proptest::collection::vec(any::<u8>(), 0..20_000),
            1..5000usize,
        ),
        |(data, write_len)| round_trip_in_writes(decorator, &data, write_len),
    );
}

/// Flushing after every write, also before the first write, twice in a row and with
/// nothing written since the last flush, changes nothing of what is read back.
pub fn flushed_pieces_round_trip(decorator: &dyn StreamCompressionDecorator) {
    let cases = [
        ("several chunks", multi_chunk_pieces()),
        ("nothing", vec![Vec::new()]),
        (
            "empty flushes",
            vec![
                Vec::new(),
                text_bytes(10),
                Vec::new(),
                Vec::new(),
                random_bytes(70_000, 11),
                Vec::new(),
            ],
        ),
        (
            "pieces larger than a chunk",
            vec![text_bytes(200_000), random_bytes(150_000, 12), vec![0; 3]],
        ),
    ];
    for (label, pieces) in cases {
        let stream = compress_pieces(decorator, &pieces);
        let restored = decompress_section(decorator, &stream)
            .unwrap_or_else(|err| panic!("{}: flushed pieces ({label}): {err}", decorator.name()));
        assert!(
            restored == pieces.concat(),
            "{}: flushed pieces ({label}): restored bytes differ",
            decorator.name()
        );
    }
}

/// Consecutive sections of one stream, each after a raw 4-byte key-group id as the keyed
/// format writes them, are each readable on their own, last first: by seeking to the
/// section's offset in the whole stream and reading as many bytes as it holds, which is how
/// a restore reads only the key groups it needs, and from the section's bytes alone.
pub fn sections_read_independently(decorator: &dyn StreamCompressionDecorator) {
    let name = decorator.name();
    let sections = [
        Vec::new(),
        b"a few bytes".to_vec(),
        text_bytes(200_000),
        random_bytes(70_000, 5),
        Vec::new(),
        text_bytes(1),
        random_bytes(3000, 3),
        text_bytes(70_004),
        Vec::new(),
    ];
    let mut stream = Vec::new();
    let mut offsets = Vec::new();
    for (key_group, section) in (0u32..).zip(&sections) {
        offsets.push(stream.len());
        stream.extend_from_slice(&key_group.to_be_bytes());
        write_section(decorator, &mut stream, section, 7919);
    }
    offsets.push(stream.len());

    for (index, section) in sections.iter().enumerate().rev() {
        let (start, end) = (offsets[index], offsets[index + 1]);
        let key_group = u32::try_from(index).expect("a handful of sections");

        let mut input = Cursor::new(&stream[..]);
        input
            .seek(SeekFrom::Start(start as u64))
            .expect("seeking in memory");
        let mut id = [0; 4];
        input.read_exact(&mut id).expect("the id is in the stream");
        assert_eq!(
            u32::from_be_bytes(id),
            key_group,
            "{name}: key group {key_group}: the previous section's writer wrote past its end"
        );
        let mut restored = vec![0; section.len()];
        decorator
            .decompress(&mut input)
            .read_exact(&mut restored)
            .unwrap_or_else(|err| {
                panic!("{name}: key group {key_group}, read from its offset in the stream: {err}")
            });
        assert!(
            restored == *section,
            "{name}: key group {key_group}, read from its offset in the stream: restored bytes differ"
        );

        let restored = decompress_section(decorator, &stream[start + 4..end])
            .unwrap_or_else(|err| panic!("{name}: key group {key_group}, its bytes alone: {err}"));
        assert!(
            restored == *section,
            "{name}: key group {key_group}, its bytes alone: restored bytes differ"
        );
    }
}

/// The streams the damage contracts cut and change, with their data: a large section, looked
/// at in `large_count` places, and a small one of several chunks ([`multi_chunk_pieces`]),
/// looked at in every place.
fn damage_cases(
    decorator: &dyn StreamCompressionDecorator,
    large_count: usize,
) -> [(&'static str, Vec<u8>, Vec<u8>, usize); 2] {
    let large = [text_bytes(100_000), random_bytes(50_000, 3)].concat();
    let large_stream = compress_section(decorator, &large);
    let small = multi_chunk_pieces();
    let small_stream = compress_pieces(decorator, &small);
    let step = (large_stream.len() / large_count).max(1);
    [
        ("a large section", large_stream, large, step),
        (
            "a small section of flushed pieces",
            small_stream,
            small.concat(),
            1,
        ),
    ]
}

/// A section cut at any byte gives an error or, where the format cannot tell, a prefix
/// of the data: never different bytes, never a panic.
pub fn truncation_never_yields_wrong_bytes(
    decorator: &dyn StreamCompressionDecorator,
    capabilities: DecoratorCapabilities,
) {
    let name = decorator.name();
    for (label, stream, data, step) in damage_cases(decorator, 2000) {
        for cut in (0..stream.len()).step_by(step) {
            match decompress_section(decorator, &stream[..cut]) {
                // `decompress_section` checked the error is typed.
                Err(_) => {}
                Ok(back) => {
                    assert!(
                        !capabilities.detects_truncation,
                        "{name}: {label} cut at {cut} of {} was not detected",
                        stream.len()
                    );
                    assert!(
                        back.len() < data.len() && data.starts_with(&back),
                        "{name}: {label} cut at {cut} returned bytes that are not a prefix of the data"
                    );
                }
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
    let name = decorator.name();
    if !capabilities.detects_corruption {
        println!(
            "`{name}` does not claim to detect corruption: checking only that changed bytes never panic"
        );
    }
    for (label, stream, data, step) in damage_cases(decorator, 1500) {
        let mut corrupt = stream.clone();
        for position in (0..stream.len()).step_by(step) {
            for flip in [0x01u8, 0x80, 0xFF] {
                corrupt[position] ^= flip;
                // `decompress_section` checks an error is typed.
                if let Ok(back) = decompress_section(decorator, &corrupt) {
                    assert!(
                        !capabilities.detects_corruption || back == data,
                        "{name}: {label}: byte {position} ^ {flip:#x} returned wrong data without an error"
                    );
                }
                corrupt[position] ^= flip;
            }
        }
    }
}

/// What [`corruption_at_every_byte`] found.
#[derive(Debug)]
pub struct CorruptionReport {
    /// Every error reported, in the order of the flips.
    pub findings: Vec<Error>,
    /// How many flips read back the original data: another encoding of the same data, which
    /// is harmless; a codec that promises to see every flip expects none.
    pub same_data: usize,
}

/// Asserts every one of `findings` is a codec finding ([`Error::Corrupted`] or
/// [`Error::Truncated`]) about `what` (`"lz4 compressed section"`): what a codec's own tests
/// check of the errors [`corruption_at_every_byte`] and [`truncation_at_every_byte`] return.
pub fn assert_findings_about<'e>(what: &str, findings: impl IntoIterator<Item = &'e Error>) {
    for finding in findings {
        assert!(
            matches!(
                finding,
                Error::Corrupted { what: about, .. } | Error::Truncated { what: about, .. }
                    if about == what
            ),
            "a finding about another thing than {what}: {finding}"
        );
    }
}

/// Flips bytes of `stream`, a section holding data, and checks each flip is reported as a
/// codec finding: every position of a stream up to 4 KiB, 256 spread over a larger one,
/// plus its last 64; each with three masks. Where the format cannot tell,
/// `undetectable(position, new_byte)` returns what the decoder then reads (all of it: a
/// read that ends without error and with other data is a miss).
///
/// A flip may also leave another encoding of the same data (a copy whose changed offset
/// points at an identical earlier run): harmless, so allowed, and counted in the report.
pub fn corruption_at_every_byte(
    decorator: &dyn StreamCompressionDecorator,
    stream: &[u8],
    undetectable: impl Fn(usize, u8) -> Option<Vec<u8>>,
) -> CorruptionReport {
    let name = decorator.name();
    let original = decompress_section(decorator, stream)
        .unwrap_or_else(|err| panic!("{name}: the intact section: {err}"));
    let step = if stream.len() <= 4096 {
        1
    } else {
        stream.len() / 256
    };
    let positions = (0..stream.len())
        .step_by(step)
        .chain(stream.len().saturating_sub(64)..stream.len());
    let mut corrupt = stream.to_vec();
    let mut report = CorruptionReport {
        findings: Vec::new(),
        same_data: 0,
    };
    for position in positions {
        for mask in [0x01u8, 0x80, 0xff] {
            corrupt[position] ^= mask;
            match decompress_section(decorator, &corrupt) {
                Err(err) => report.findings.push(err),
                Ok(restored) if restored == original => report.same_data += 1,
                Ok(restored) => {
                    let expected = undetectable(position, corrupt[position]);
                    assert!(
                        expected.is_some_and(|expected| expected == restored),
                        "{name}: byte {position} of {} flipped with {mask:#04x} went unnoticed",
                        stream.len()
                    );
                }
            }
            corrupt[position] ^= mask;
        }
    }
    report
}

/// Cuts `stream`, a section holding `original`, at every position and checks each cut is
/// reported as [`Error::Truncated`] or, where `clean_cut(cut)` names the length of data the
/// format may deliver for that cut, reads exactly that strict prefix of `original`; never
/// different bytes. Returns the errors reported.
pub fn truncation_at_every_byte(
    decorator: &dyn StreamCompressionDecorator,
    stream: &[u8],
    original: &[u8],
    clean_cut: impl Fn(usize) -> Option<usize>,
) -> Vec<Error> {
    let name = decorator.name();
    let mut findings = Vec::new();
    for cut in 0..stream.len() {
        match decompress_section(decorator, &stream[..cut]) {
            Err(err) => {
                assert!(
                    matches!(err, Error::Truncated { .. }),
                    "{name}: cut at {cut} of {}: a cut must be reported as truncated: {err}",
                    stream.len()
                );
                findings.push(err);
            }
            Ok(restored) => {
                let expected = clean_cut(cut);
                assert!(
                    expected == Some(restored.len())
                        && restored.len() < original.len()
                        && original.starts_with(&restored),
                    "{name}: cut at {cut} of {} read {} bytes, expected {expected:?} bytes of the original",
                    stream.len(),
                    restored.len()
                );
            }
        }
    }
    findings
}

/// Reads `input` in small reads until it fails or ends. After a failure, every later read
/// must fail again the same way (same kind, same message) instead of handing out bytes from
/// further on; after the end, every later read must read nothing. Returns the failure.
fn read_and_latch(
    decorator: &dyn StreamCompressionDecorator,
    input: &[u8],
    label: &str,
) -> Option<Error> {
    let name = decorator.name();
    let mut input = input;
    let mut reader = decorator.decompress(&mut input);
    let mut buf = [0; 64];
    let first = loop {
        match reader.read(&mut buf) {
            Ok(0) => break None,
            Ok(_) => continue,
            Err(err) => break Some(err),
        }
    };
    for _ in 0..3 {
        match (&first, reader.read(&mut buf)) {
            (None, Ok(0)) => {}
            (None, Ok(n)) => panic!("{name}: {label}: a read after the end read {n} bytes"),
            (None, Err(err)) => panic!("{name}: {label}: a read after the end failed: {err}"),
            (Some(first), Ok(n)) => panic!(
                "{name}: {label}: a read after the failure `{first}` read {n} bytes instead of failing again"
            ),
            (Some(first), Err(again)) => assert!(
                again.kind() == first.kind() && again.to_string() == first.to_string(),
                "{name}: {label}: a read after the failure `{first}` ({:?}) failed differently: `{again}` ({:?})",
                first.kind(),
                again.kind()
            ),
        }
    }
    first.map(|err| finding(decorator, err, label))
}

/// Reads `stream`, which must fail, and checks every read after the failure fails again
/// the same way instead of handing out bytes from further on. Returns the failure.
pub fn failure_is_latched(decorator: &dyn StreamCompressionDecorator, stream: &[u8]) -> Error {
    read_and_latch(decorator, stream, "a failing section").unwrap_or_else(|| {
        panic!(
            "{}: the section expected to fail read to its end",
            decorator.name()
        )
    })
}

/// A section that fails to read (cut, or with changed bytes) keeps failing the same way on
/// every later read, and one that reads to its end keeps to its end: a reader never hands out
/// bytes from beyond the place it stopped at.
pub fn failures_are_latched(decorator: &dyn StreamCompressionDecorator) {
    let stream = compress_pieces(decorator, &multi_chunk_pieces());
    let len = stream.len();
    assert!(
        len > 0,
        "{}: 1001 bytes of data compressed to nothing",
        decorator.name()
    );
    let mut failed = 0;
    for cut in [1, len / 3, len / 2, len.saturating_sub(1)] {
        let label = format!("a section of {len} bytes cut at {cut}");
        failed += usize::from(read_and_latch(decorator, &stream[..cut], &label).is_some());
    }
    for position in [
        0,
        len / 4,
        len / 2,
        len.saturating_sub(5),
        len.saturating_sub(1),
    ] {
        let mut corrupt = stream.clone();
        corrupt[position] ^= 0x55;
        let label = format!("a section of {len} bytes with byte {position} changed");
        failed += usize::from(read_and_latch(decorator, &corrupt, &label).is_some());
    }
    if failed == 0 {
        println!(
            "`{}` read every cut and changed section to its end: no failure to check latching on",
            decorator.name()
        );
    }
}

/// Feeds arbitrary `bytes` to the decoder: it must not panic, and must either read them or
/// report a codec finding, and keep to that answer on later reads. Returns what was read or
/// the finding.
pub fn arbitrary_input(
    decorator: &dyn StreamCompressionDecorator,
    bytes: &[u8],
) -> Result<Vec<u8>, Error> {
    let name = decorator.name();
    let mut input = bytes;
    let mut reader = decorator.decompress(&mut input);
    let mut restored = Vec::new();
    let mut buf = [0; 1];
    match reader.read_to_end(&mut restored) {
        Ok(_) => match reader.read(&mut buf) {
            Ok(0) => Ok(restored),
            Ok(n) => panic!("{name}: arbitrary input: a read after the end read {n} bytes"),
            Err(err) => panic!("{name}: arbitrary input: a read after the end failed: {err}"),
        },
        Err(err) => {
            let err = finding(decorator, err, "reading arbitrary input");
            match reader.read(&mut buf) {
                Ok(n) => panic!(
                    "{name}: arbitrary input: a read after the failure `{err}` read {n} bytes"
                ),
                Err(again) => {
                    finding(decorator, again, "reading arbitrary input after a failure");
                }
            }
            Err(err)
        }
    }
}

/// Compresses `data`, applies `flips` (a position, taken modulo the section's length, and a
/// mask to xor it with) and feeds the result to the decoder as [`arbitrary_input`] does.
/// Returns what was read or the finding, `None` for a section of no bytes.
pub fn mutated_section(
    decorator: &dyn StreamCompressionDecorator,
    data: &[u8],
    flips: &[(usize, u8)],
) -> Option<Result<Vec<u8>, Error>> {
    let mut stream = compress_section(decorator, data);
    if stream.is_empty() {
        return None;
    }
    let len = stream.len();
    for (position, mask) in flips {
        stream[position % len] ^= mask;
    }
    Some(arbitrary_input(decorator, &stream))
}

/// No input, a byte, a section's first bytes, arbitrary bytes up to 2 KiB and sections of
/// arbitrary data with up to seven bytes changed are read or reported as codec findings
/// ([`arbitrary_input`], [`mutated_section`]); never a panic.
pub fn arbitrary_input_never_panics(decorator: &dyn StreamCompressionDecorator) {
    let section = compress_section(decorator, &text_bytes(1000));
    for fixed in [&[][..], &[0], &[0xff], &section[..section.len().min(8)]] {
        let _ = arbitrary_input(decorator, fixed);
    }
    for_generated(
        decorator,
        "arbitrary bytes must be read or reported",
        proptest::collection::vec(any::<u8>(), 0..2048),
        |bytes| {
            let _ = arbitrary_input(decorator, &bytes);
        },
    );
    for_generated(
        decorator,
        "sections with changed bytes must be read or reported",
        (
            proptest::collection::vec(any::<u8>(), 0..4096),
            proptest::collection::vec((any::<usize>(), 1..=255u8), 1..8),
        ),
        |(data, flips)| {
            let _ = mutated_section(decorator, &data, &flips);
        },
    );
}

/// Runs every decorator check.
pub fn run_all(decorator: &dyn StreamCompressionDecorator, capabilities: DecoratorCapabilities) {
    round_trip(decorator);
    round_trip_arbitrary_writes(decorator);
    flushed_pieces_round_trip(decorator);
    sections_read_independently(decorator);
    truncation_never_yields_wrong_bytes(decorator, capabilities);
    corruption_is_detected(decorator, capabilities);
    failures_are_latched(decorator);
    arbitrary_input_never_panics(decorator);
}

/// One `#[test]` per decorator contract, in a module of the given name, so a broken
/// contract fails its own test and hides none of the others. The decorator is a value of a
/// type implementing [`StreamCompressionDecorator`]; the capabilities a
/// [`DecoratorCapabilities`]:
///
/// ```ignore
/// snapstate_tests::decorator_contracts!(
///     deflate_contracts,
///     DeflateStreamCompressionDecorator,
///     DecoratorCapabilities { detects_corruption: false, detects_truncation: true }
/// );
/// ```
///
/// [`run_all`] runs the same contracts in one test.
#[macro_export]
macro_rules! decorator_contracts {
    ($module:ident, $decorator:expr, $capabilities:expr $(,)?) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            $crate::decorator_contracts!(@tests $decorator;
                round_trip,
                round_trip_arbitrary_writes,
                flushed_pieces_round_trip,
                sections_read_independently,
                failures_are_latched,
                arbitrary_input_never_panics,
            );
            $crate::decorator_contracts!(@with_capabilities $decorator, $capabilities;
                truncation_never_yields_wrong_bytes,
                corruption_is_detected,
            );
        }
    };
    (@tests $decorator:expr; $($contract:ident,)*) => {
        $(
            #[test]
            fn $contract() {
                $crate::compression::$contract(&$decorator);
            }
        )*
    };
    (@with_capabilities $decorator:expr, $capabilities:expr; $($contract:ident,)*) => {
        $(
            #[test]
            fn $contract() {
                $crate::compression::$contract(&$decorator, $capabilities);
            }
        )*
    };
}
