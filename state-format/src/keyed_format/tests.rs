//! Tests of the canonical keyed format: round trips, the writer's rules, and that damaged
//! streams are reported with the key group they hit.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use state_api::{
    ByteStreamStateHandle, KeyedStateHandle, StateMetaInfo, UncompressedStreamCompressionDecorator,
};

const MAX_PARALLELISM: MaxParallelism = MaxParallelism::of(128);

type Entries = BTreeMap<KeyGroup, Vec<(u16, Vec<u8>, Vec<u8>)>>;

fn header(states: usize) -> KeyedBackendSerializationProxy {
    KeyedBackendSerializationProxy::new(
        "bytes",
        (0..states)
            .map(|i| StateMetaInfo::value(format!("s{i}"), "void", "bytes"))
            .collect(),
        "none",
        MaxParallelism::of(128),
    )
}

fn kg(key_group: u32) -> KeyGroup {
    KeyGroup::new(key_group).unwrap()
}

fn key(key_group: u32, key: &[u8]) -> Vec<u8> {
    CompositeKey::new(MAX_PARALLELISM)
        .build(kg(key_group), key, b"")
        .expect("test keys are small")
}

/// A writer of `range` into `out`, uncompressed.
fn uncompressed_writer<'a>(
    out: &'a mut dyn Write,
    header: &KeyedBackendSerializationProxy,
    range: KeyGroupRange,
) -> Result<KeyedSnapshotWriter<'a>> {
    KeyedSnapshotWriter::new(
        out,
        0,
        header,
        &UncompressedStreamCompressionDecorator,
        range,
        MAX_PARALLELISM,
    )
}

/// Writes `entries` (grouped by key group, in state order) over `range`.
fn write(range: KeyGroupRange, states: usize, entries: &Entries) -> KeyGroupsStateHandle {
    write_with(&header(states), range, entries)
}

fn read_all(handle: &KeyGroupsStateHandle) -> Result<Entries> {
    read_all_with(handle, READ_BUFFER)
}

/// [`read_all`] with `read_buffer` bytes read ahead.
fn read_all_with(handle: &KeyGroupsStateHandle, read_buffer: usize) -> Result<Entries> {
    let mut reader = KeyedSnapshotReader::open(handle, Registry::global(), MAX_PARALLELISM)?
        .with_read_buffer(read_buffer);
    let mut all = Entries::new();
    for key_group in reader.key_group_range().iter() {
        let mut found = Vec::new();
        reader.read_key_group(key_group, &mut |entry| {
            found.push((entry.state_id, entry.key.to_vec(), entry.value.to_vec()));
            Ok(())
        })?;
        if !found.is_empty() {
            all.insert(key_group, found);
        }
    }
    Ok(all)
}

fn bytes_of(handle: &KeyGroupsStateHandle) -> Vec<u8> {
    let stream = handle.delegate().downcast_ref::<ByteStreamStateHandle>();
    stream
        .expect("tests write byte-stream handles")
        .data()
        .to_vec()
}

fn with_bytes(handle: &KeyGroupsStateHandle, bytes: Vec<u8>) -> KeyGroupsStateHandle {
    let checksums = handle
        .offsets()
        .range()
        .iter()
        .map(|kg| handle.checksum(kg).unwrap())
        .collect();
    KeyGroupsStateHandle::new(
        handle.offsets().clone(),
        Arc::new(ByteStreamStateHandle::new("damaged", bytes)),
    )
    .with_checksums(checksums)
    .unwrap()
}

fn sample() -> (KeyGroupRange, Entries) {
    let range = KeyGroupRange::new(10, 14).unwrap();
    let mut entries = Entries::new();
    entries.insert(
        kg(10),
        vec![
            (0, key(10, b"a"), b"1".to_vec()),
            (0, key(10, b"b"), b"2".to_vec()),
            (2, key(10, b"c"), vec![]),
        ],
    );
    entries.insert(kg(12), vec![(1, key(12, b"only"), vec![7; 3000])]);
    entries.insert(
        kg(14),
        vec![
            (2, key(14, b"x"), b"late state first".to_vec()),
            (0, key(14, b"y"), b"then state 0".to_vec()),
        ],
    );
    (range, entries)
}

/// [`sample`] written with three states.
fn sample_handle() -> (KeyGroupsStateHandle, Entries) {
    let (range, entries) = sample();
    (write(range, 3, &entries), entries)
}

#[test]
fn entries_round_trip_with_empty_key_groups_and_several_states() {
    let (handle, entries) = sample_handle();
    assert_eq!(read_all(&handle).unwrap(), entries);
}

#[test]
fn a_narrowed_handle_reads_its_key_groups_only() {
    let (handle, entries) = sample_handle();
    let narrowed = handle
        .intersection(&KeyGroupRange::new(12, 20).unwrap())
        .unwrap();
    let narrowed = narrowed.downcast_ref::<KeyGroupsStateHandle>().unwrap();
    let mut expected = entries.clone();
    expected.remove(&kg(10));
    assert_eq!(read_all(narrowed).unwrap(), expected);
}

#[test]
fn an_empty_range_writes_only_the_header() {
    let handle = write(KeyGroupRange::EMPTY, 1, &Entries::new());
    assert!(read_all(&handle).unwrap().is_empty());
}

#[test]
fn the_flag_and_end_mark_sit_where_the_table_says() {
    let range = KeyGroupRange::new(3, 3).unwrap();
    let mut entries = Entries::new();
    entries.insert(kg(3), vec![(0, key(3, b"k"), b"v".to_vec())]);
    let handle = write(range, 1, &entries);
    let bytes = bytes_of(&handle);
    let section = &bytes[handle.offsets().offset(kg(3)).unwrap() as usize..];
    let mut expected = Vec::new();
    expected.extend_from_slice(&3u32.to_be_bytes());
    expected.extend_from_slice(&0u16.to_be_bytes());
    expected.push(3 | META_DATA_FOLLOWS); // key-group prefix
    expected.extend_from_slice(&[1, b'k']); // key
    expected.push(0); // empty namespace
    expected.extend_from_slice(&[1, b'v']); // value
    expected.extend_from_slice(&END_OF_KEY_GROUP_MARK.to_be_bytes());
    assert_eq!(section, expected);
    assert_eq!(
        handle.checksum(kg(3)),
        Some(crc32c::crc32c(&expected)),
        "the checksum covers the id and the uncompressed data"
    );
}

/// Flips one bit of every byte of `handle`'s key-group data in turn: each flip is reported
/// as a corruption or truncation of a key group.
fn check_every_changed_byte_is_reported(handle: &KeyGroupsStateHandle) {
    let bytes = bytes_of(handle);
    let first_section = handle
        .offsets()
        .offset(handle.offsets().range().start())
        .unwrap() as usize;
    for position in first_section..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[position] ^= 0x01;
        let err = read_all(&with_bytes(handle, damaged))
            .expect_err(&format!("byte {position} changed without an error"));
        assert!(
            matches!(err, Error::KeyGroup { .. }),
            "byte {position}: {err}"
        );
        assert!(
            matches!(
                err.root(),
                Error::Corrupted { .. } | Error::Truncated { .. }
            ),
            "byte {position}: {err}"
        );
    }
}

#[test]
fn every_changed_byte_after_the_header_is_reported_with_its_key_group() {
    check_every_changed_byte_is_reported(&sample_handle().0);
}

#[test]
fn a_checksum_mismatch_names_the_key_group_and_the_stream() {
    let (handle, _) = sample_handle();
    let mut bytes = bytes_of(&handle);
    // The last byte of the 3000-byte value of key group 12: lengths stay intact.
    let end_of_12 = handle.offsets().offset(kg(13)).unwrap() as usize - 3;
    bytes[end_of_12] ^= 0x40;
    let err = read_all(&with_bytes(&handle, bytes)).unwrap_err();
    let Error::KeyGroup {
        key_group,
        location,
        source,
    } = &err
    else {
        panic!("not a key-group error: {err}");
    };
    assert_eq!(*key_group, kg(12));
    assert!(location.contains("damaged"), "{err}");
    assert!(matches!(**source, Error::Corrupted { .. }), "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");
}

#[test]
fn a_cut_stream_is_truncated_in_the_key_group_it_ends_in() {
    let (handle, _) = sample_handle();
    let bytes = bytes_of(&handle);
    let cut = handle.offsets().offset(kg(12)).unwrap() as usize + 100;
    let err = read_all(&with_bytes(&handle, bytes[..cut].to_vec())).unwrap_err();
    assert!(
        matches!(err, Error::KeyGroup { key_group, .. } if key_group == kg(12)),
        "{err}"
    );
    assert!(matches!(err.root(), Error::Truncated { .. }), "{err}");
}

#[test]
fn foreign_bytes_are_a_corrupted_header_named_after_the_stream() {
    let (handle, _) = sample_handle();
    let err = read_all(&with_bytes(
        &handle,
        b"PK\x03\x04 a zip file, not a snapshot".to_vec(),
    ))
    .unwrap_err();
    assert!(
        matches!(&err, Error::Snapshot { location, .. } if location.contains("damaged")),
        "{err}"
    );
    assert!(matches!(err.root(), Error::Corrupted { .. }), "{err}");
}

#[test]
fn errors_of_the_visitor_are_named_by_key_group() {
    let (handle, _) = sample_handle();
    let mut reader =
        KeyedSnapshotReader::open(&handle, Registry::global(), MAX_PARALLELISM).unwrap();
    let err = reader
        .read_key_group(kg(10), &mut |_| Err(Error::Unsupported("no thanks".into())))
        .unwrap_err();
    assert!(
        matches!(err, Error::KeyGroup { key_group, .. } if key_group == kg(10)),
        "{err}"
    );
    assert!(matches!(err.root(), Error::Unsupported(_)), "{err}");
}

fn write_one(
    states: usize,
    key_group: u32,
    entries: impl FnOnce(&mut KeyGroupEntryWriter<'_>) -> Result<()>,
) -> Result<()> {
    let mut bytes = Vec::new();
    let header = header(states);
    let mut writer = KeyedSnapshotWriter::new(
        &mut bytes,
        0,
        &header,
        &UncompressedStreamCompressionDecorator,
        KeyGroupRange::new(0, 1).unwrap(),
        MAX_PARALLELISM,
    )?;
    writer.write_key_group(kg(key_group), entries)
}

#[test]
fn the_writer_rejects_entries_that_break_the_format() {
    let check = |result: Result<()>, needle: &str| {
        let err = result.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(err.to_string().contains(needle), "{err} lacks {needle}");
    };
    check(
        write_one(1, 0, |g| g.write_entry(1, &key(0, b"k"), b"")),
        "state id 1",
    );
    check(
        write_one(1, 0, |g| g.write_entry(0, &key(5, b"k"), b"")),
        "key group 5",
    );
    check(
        write_one(1, 0, |g| g.write_entry(0, &[], b"")),
        "no key-group prefix",
    );
    check(
        write_one(2, 0, |g| {
            g.write_entry(0, &key(0, b"a"), b"")?;
            g.write_entry(1, &key(0, b"b"), b"")?;
            g.write_entry(0, &key(0, b"c"), b"")
        }),
        "not written together",
    );
    check(write_one(1, 1, |_| Ok(())), "out of order");
    check(
        write_one(1, 0, |g| {
            g.write_entry(0, &composite(0, b"k", b"", b"user"), b"")
        }),
        "has a user key of 4 bytes",
    );
    check(
        write_one(1, 0, |g| g.write_entry(0, &[0, 0, 0, 0, 9, b'k'], b"")),
        "is not a composite key",
    );
}

#[test]
fn the_writer_insists_on_every_key_group_and_the_header_decorator() {
    let mut bytes = Vec::new();
    let header = header(1);
    let mut writer = KeyedSnapshotWriter::new(
        &mut bytes,
        0,
        &header,
        &UncompressedStreamCompressionDecorator,
        KeyGroupRange::new(0, 1).unwrap(),
        MAX_PARALLELISM,
    )
    .unwrap();
    writer.write_key_group(kg(0), |_| Ok(())).unwrap();
    let err = writer.finish().unwrap_err();
    assert!(err.to_string().contains("ended after key group 0"), "{err}");

    let lz4_header =
        KeyedBackendSerializationProxy::new("bytes", vec![], "lz4", MaxParallelism::of(128));
    let err = KeyedSnapshotWriter::new(
        &mut bytes,
        0,
        &lz4_header,
        &UncompressedStreamCompressionDecorator,
        KeyGroupRange::EMPTY,
        MAX_PARALLELISM,
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
}

#[test]
fn composite_keys_split_into_their_parts() {
    for max_parallelism in [128, 129, 32768] {
        let composite = CompositeKey::new(MaxParallelism::of(max_parallelism));
        let mut bytes = Vec::new();
        composite
            .build_into(kg(127), b"key", b"window-1", b"user", &mut bytes)
            .unwrap();
        let parts = composite.split(&bytes).unwrap();
        assert_eq!(
            parts,
            CompositeKeyParts {
                key_group: kg(127),
                key: b"key",
                namespace: b"window-1",
                user_key: b"user"
            }
        );
        let err = composite
            .split(&bytes[..composite.prefix_bytes() + 5])
            .unwrap_err();
        assert!(matches!(err, Error::Corrupted { .. }), "{err}");
    }
}

#[test]
fn lists_encode_and_decode() {
    let elements: Vec<&[u8]> = vec![b"", b"one", &[0xFF; 300]];
    let mut bytes = Vec::new();
    encode_list(elements.iter().copied(), &mut bytes).unwrap();
    assert_eq!(decode_list(&bytes).unwrap(), elements);
    let err = decode_list(&bytes[..bytes.len() - 1]).unwrap_err();
    assert!(err.to_string().contains("element 2"), "{err}");
}

fn arbitrary_entries() -> impl Strategy<Value = Entries> {
    let entry = (
        0u16..3,
        prop::collection::vec(any::<u8>(), 0..20),
        prop::collection::vec(any::<u8>(), 0..40),
    );
    prop::collection::btree_map(0u32..8, prop::collection::vec(entry, 1..12), 0..8).prop_map(
        |groups| {
            groups
                .into_iter()
                .map(|(kg, mut raw)| {
                    // Entries of a state go together, in any state order.
                    raw.sort_by_key(|(state, _, _)| (*state as u32 * 7 + kg) % 3);
                    let entries = raw
                        .into_iter()
                        .map(|(state, k, v)| (state, key(kg, &k), v))
                        .collect();
                    (self::kg(kg), entries)
                })
                .collect()
        },
    )
}

proptest! {
    #[test]
    fn any_entries_round_trip(entries in arbitrary_entries()) {
        let handle = write(KeyGroupRange::new(0, 7).unwrap(), 3, &entries);
        prop_assert_eq!(read_all(&handle).unwrap(), entries);
    }
}

#[test]
fn key_groups_larger_than_the_write_buffer_keep_their_flags() {
    let range = KeyGroupRange::new(0, 1).unwrap();
    let mut entries = Entries::new();
    let mut group = Vec::new();
    for i in 0u32..5_000 {
        group.push((1, key(0, &i.to_be_bytes()), vec![i as u8; 30]));
    }
    group.push((0, key(0, b"after the first state"), vec![1; 100_000]));
    group.push((2, key(0, b"last"), b"v".to_vec()));
    entries.insert(kg(0), group);
    let handle = write(range, 3, &entries);
    assert_eq!(read_all(&handle).unwrap(), entries);
}

/// What a writer produced: the stream's bytes, the key groups' offsets and checksums.
type Written = (Vec<u8>, KeyGroupRangeOffsets, Vec<u32>);

/// Which key groups are slow to encode, named.
type SlowPattern = (&'static str, fn(u32) -> bool);

/// Writes `entries` over `range` with the two-thread writer: the first `sequential` key
/// groups one by one, the rest with [`write_key_groups_in_two`]; encoding a key group for
/// which `slow` holds takes a few milliseconds longer, so that either thread falls behind.
fn write_in_two(
    range: KeyGroupRange,
    entries: &Entries,
    sequential: u32,
    section_limit: usize,
    slow: impl Fn(u32) -> bool + Sync,
) -> Result<Written> {
    let mut bytes = Vec::new();
    let header = header(3);
    let context = SnapshotContext::new(CheckpointId::new(1));
    let entries_of = |group: &mut KeyGroupEntryWriter<'_>| -> Result<()> {
        let key_group = group.key_group();
        if slow(key_group.get()) {
            std::thread::sleep(std::time::Duration::from_millis(3));
        }
        if key_group == kg(100) {
            return Err(Error::InvalidArgument("key group 100 refused".into()));
        }
        for (state, key, value) in entries.get(&key_group).into_iter().flatten() {
            group.write_entry(*state, key, value)?;
        }
        Ok(())
    };
    let (offsets, checksums) = {
        let mut writer = uncompressed_writer(&mut bytes, &header, range)?;
        for key_group in range.iter().take(sequential as usize) {
            writer.write_key_group(key_group, entries_of)?;
        }
        let limits = SectionLimits {
            section: section_limit,
            ahead: usize::MAX,
        };
        write_key_groups_in_two(&context, &mut writer, entries_of, limits)?;
        writer.finish()?
    };
    Ok((bytes, offsets, checksums))
}

/// Entries in most key groups of 0..=47, sections of a few bytes to a few KiB.
fn many_key_groups() -> (KeyGroupRange, Entries) {
    let range = KeyGroupRange::new(0, 47).unwrap();
    let mut entries = Entries::new();
    for key_group in range.iter().map(KeyGroup::get).filter(|kg| kg % 5 != 3) {
        let group = (0..(key_group * 7) % 40)
            .map(|i| {
                let state = (i % 3) as u16;
                let value = vec![(key_group + i) as u8; (i as usize * 13) % 300];
                (state, key(key_group, &i.to_be_bytes()), value)
            })
            .collect::<Vec<_>>();
        let mut group = group;
        group.sort_by_key(|(state, _, _)| *state);
        entries.insert(kg(key_group), group);
    }
    (range, entries)
}

#[test]
fn two_threads_write_exactly_the_bytes_of_one() {
    let (range, entries) = many_key_groups();
    let handle = write(range, 3, &entries);
    let expected: Written = (
        bytes_of(&handle),
        handle.offsets().clone(),
        range
            .iter()
            .map(|kg| handle.checksum(kg).unwrap())
            .collect(),
    );
    let slow_patterns: [SlowPattern; 5] = [
        ("none slow", |_| false),
        ("even slow", |kg| kg.is_multiple_of(2)),
        ("odd slow", |kg| kg % 2 == 1),
        ("every third slow", |kg| kg.is_multiple_of(3)),
        ("a slow run", |kg| (10..20).contains(&kg)),
    ];
    for (pattern, slow) in slow_patterns {
        // 1 KiB sends the larger sections back to the streaming path.
        for section_limit in [usize::MAX, 1024, 0] {
            for sequential in [0, 3] {
                let written = write_in_two(range, &entries, sequential, section_limit, slow)
                    .unwrap_or_else(|err| panic!("{pattern}, limit {section_limit}: {err}"));
                assert!(
                    written == expected,
                    "{pattern}, limit {section_limit}, {sequential} written before: \
                     the bytes differ from the one-thread writer's"
                );
            }
        }
    }
}

#[test]
fn an_error_of_either_thread_ends_the_two_thread_writer() {
    let range = KeyGroupRange::new(90, 110).unwrap();
    let entries = Entries::new();
    for slow in [
        |_| false,
        |kg: u32| kg.is_multiple_of(2),
        |kg: u32| kg % 2 == 1,
    ] {
        for section_limit in [usize::MAX, 0] {
            let err = write_in_two(range, &entries, 0, section_limit, slow).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidArgument(message) if message.contains("key group 100 refused")),
                "{err}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn two_threads_round_trip_any_entries(
        entries in arbitrary_entries(),
        section_limit in prop_oneof![Just(usize::MAX), 0usize..200],
    ) {
        let range = KeyGroupRange::new(0, 7).unwrap();
        let handle = write(range, 3, &entries);
        let (bytes, offsets, _) = write_in_two(range, &entries, 0, section_limit, |_| false).unwrap();
        prop_assert_eq!(&offsets, handle.offsets());
        prop_assert!(bytes == bytes_of(&handle));
    }
}

/// A stream that takes a while for every write.
struct SlowStream(Vec<u8>);

impl Write for SlowStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        std::thread::sleep(std::time::Duration::from_millis(2));
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes `range`'s `entries` with [`write_key_groups_in_two`] into `stream`; the sections
/// allocated. When `slow_helper`, the helper thread sleeps before each key group, and the
/// strategy's thread waits for the helper to take its first key group before it encodes
/// its own first (else it could write every key group before the helper starts).
fn held_sections(
    range: KeyGroupRange,
    entries: &Entries,
    stream: &mut dyn Write,
    limits: SectionLimits,
    slow_helper: bool,
) -> usize {
    let header = header(3);
    let context = SnapshotContext::new(CheckpointId::new(1));
    let mut writer = uncompressed_writer(stream, &header, range).unwrap();
    let strategy_thread = std::thread::current().id();
    let helper_started = std::sync::atomic::AtomicBool::new(false);
    let allocated = write_key_groups_in_two(
        &context,
        &mut writer,
        |group| {
            if slow_helper && std::thread::current().id() != strategy_thread {
                helper_started.store(true, std::sync::atomic::Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            let waiting = std::time::Instant::now();
            while slow_helper
                && !helper_started.load(std::sync::atomic::Ordering::SeqCst)
                && waiting.elapsed() < std::time::Duration::from_secs(10)
            {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            for (state, key, value) in entries.get(&group.key_group()).into_iter().flatten() {
                group.write_entry(*state, key, value)?;
            }
            Ok(())
        },
        limits,
    )
    .unwrap();
    writer.finish().unwrap();
    allocated
}

#[test]
fn a_slow_stream_holds_the_two_thread_writer_to_a_few_sections() {
    let (range, entries) = many_key_groups();
    let mut stream = SlowStream(Vec::new());
    let limits = SectionLimits {
        section: usize::MAX,
        ahead: usize::MAX,
    };
    let allocated = held_sections(range, &entries, &mut stream, limits, false);
    // Six encoded ahead by the writing thread, two in the channel, one the helper holds.
    assert!(
        allocated <= 9,
        "{allocated} sections were held at once for {} key groups",
        range.len()
    );
    assert_eq!(stream.0, bytes_of(&write(range, 3, &entries)));
}

#[test]
fn a_slow_helper_lets_the_strategy_thread_encode_ahead_up_to_its_byte_limit() {
    let (range, entries) = many_key_groups();
    let expected = bytes_of(&write(range, 3, &entries));
    // Without a byte limit the strategy's thread runs up to six key groups ahead of the
    // helper; with a limit of one byte, one.
    for (ahead, fewest, most) in [(usize::MAX, 7, 9), (1, 2, 4)] {
        let mut stream = Vec::new();
        let limits = SectionLimits {
            section: usize::MAX,
            ahead,
        };
        let allocated = held_sections(range, &entries, &mut stream, limits, true);
        assert!(
            (fewest..=most).contains(&allocated),
            "{allocated} sections were held at once, encoding ahead up to {ahead} bytes"
        );
        assert_eq!(stream, expected, "ahead {ahead}");
    }
}

/// The composite key of (`key_group`, `key`, `namespace`, `user_key`).
fn composite(key_group: u32, key: &[u8], namespace: &[u8], user_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    CompositeKey::new(MAX_PARALLELISM)
        .build_into(kg(key_group), key, namespace, user_key, &mut out)
        .expect("test keys are small");
    out
}

/// A value, a list and a map state, in this order.
fn header_of_every_kind() -> KeyedBackendSerializationProxy {
    KeyedBackendSerializationProxy::new(
        "bytes",
        vec![
            StateMetaInfo::value("value", "bytes", "bytes"),
            StateMetaInfo::list("list", "bytes", "bytes"),
            StateMetaInfo::map("map", "bytes", "bytes", "bytes"),
        ],
        "none",
        MAX_PARALLELISM,
    )
}

/// Writes `entries` over `range` with `header`, uncompressed.
fn write_with(
    header: &KeyedBackendSerializationProxy,
    range: KeyGroupRange,
    entries: &Entries,
) -> KeyGroupsStateHandle {
    let mut bytes = Vec::new();
    let mut writer = uncompressed_writer(&mut bytes, header, range).unwrap();
    for key_group in range.iter() {
        writer
            .write_key_group(key_group, |group| {
                for (state, key, value) in entries.get(&key_group).into_iter().flatten() {
                    group.write_entry(*state, key, value)?;
                }
                Ok(())
            })
            .unwrap();
    }
    let (offsets, checksums) = writer.finish().unwrap();
    let end = bytes.len() as u64;
    let stream = Arc::new(ByteStreamStateHandle::new("test", bytes));
    KeyGroupsStateHandle::new(offsets, stream)
        .with_end(end)
        .with_checksums(checksums)
        .unwrap()
}

/// `entries` as version 2 wrote them.
fn write_version_2(
    header: &KeyedBackendSerializationProxy,
    range: KeyGroupRange,
    entries: &Entries,
) -> KeyGroupsStateHandle {
    fixed_lengths::write_version_2(header, range, |key_group| {
        entries.get(&key_group).cloned().unwrap_or_default()
    })
}

/// The section bytes of `key_group`, id included.
fn section_of(handle: &KeyGroupsStateHandle, key_group: KeyGroup) -> Vec<u8> {
    let bytes = bytes_of(handle);
    let start = handle.offsets().offset(key_group).unwrap() as usize;
    let end = handle
        .section_end(key_group)
        .map_or(bytes.len(), |end| end as usize);
    bytes[start..end].to_vec()
}

#[test]
fn the_entry_of_the_benchmark_takes_112_bytes() {
    let range = KeyGroupRange::new(0, 0).unwrap();
    let mut entries = Entries::new();
    entries.insert(
        kg(0),
        vec![(0, key(0, &7u64.to_be_bytes()), vec![0xAB; 100])],
    );
    let section = section_of(&write_with(&header(1), range, &entries), kg(0));
    // The id, the first state id and the end mark around the entry.
    assert_eq!(section.len(), 4 + 2 + 112 + 2);
    let version_2 = section_of(&write_version_2(&header(1), range, &entries), kg(0));
    assert_eq!(version_2.len(), 4 + 2 + 125 + 2);
}

#[test]
fn only_map_entries_carry_a_user_key() {
    let range = KeyGroupRange::new(5, 5).unwrap();
    let mut entries = Entries::new();
    entries.insert(
        kg(5),
        vec![
            (1, composite(5, b"k", b"ns", b""), b"list".to_vec()),
            (2, composite(5, b"k", b"ns", b"uk"), b"m".to_vec()),
        ],
    );
    let handle = write_with(&header_of_every_kind(), range, &entries);
    let mut expected = Vec::new();
    expected.extend_from_slice(&5u32.to_be_bytes());
    expected.extend_from_slice(&1u16.to_be_bytes());
    expected.push(5 | META_DATA_FOLLOWS);
    expected.extend_from_slice(&[1, b'k', 2, b'n', b's']);
    expected.extend_from_slice(&[4, b'l', b'i', b's', b't']);
    expected.extend_from_slice(&2u16.to_be_bytes());
    expected.push(5 | META_DATA_FOLLOWS);
    expected.extend_from_slice(&[1, b'k', 2, b'n', b's', 2, b'u', b'k']);
    expected.extend_from_slice(&[1, b'm']);
    expected.extend_from_slice(&END_OF_KEY_GROUP_MARK.to_be_bytes());
    assert_eq!(section_of(&handle, kg(5)), expected);
    assert_eq!(
        handle.checksum(kg(5)),
        Some(crc32c::crc32c(&expected)),
        "the checksum covers the id and the data as written, flags included"
    );
    assert_eq!(read_all(&handle).unwrap(), entries);
}

#[test]
fn lengths_of_128_bytes_and_more_take_several_varint_bytes() {
    let range = KeyGroupRange::new(0, 0).unwrap();
    let mut entries = Entries::new();
    entries.insert(
        kg(0),
        vec![
            (0, composite(0, &[1; 128], &[2; 300], b""), vec![3; 16_384]),
            (2, composite(0, b"", b"", &[4; 200_000]), vec![]),
        ],
    );
    let handle = write_with(&header_of_every_kind(), range, &entries);
    let section = section_of(&handle, kg(0));
    assert_eq!(section[7..9], [0x80, 0x01], "a key of 128 bytes");
    assert_eq!(read_all(&handle).unwrap(), entries);
}

#[test]
fn version_2_streams_still_read() {
    let (range, entries) = sample();
    let handle = write_version_2(&header(3), range, &entries);
    assert_eq!(read_all(&handle).unwrap(), entries);
}

#[test]
fn every_changed_byte_of_a_version_2_stream_is_reported_with_its_key_group() {
    let (range, entries) = sample();
    check_every_changed_byte_is_reported(&write_version_2(&header(3), range, &entries));
}

/// Cuts the stream of `handle` at every byte of its key-group data: the key group the cut
/// falls in, or one after it, reports a truncation or a corruption.
fn check_every_cut_is_reported(handle: &KeyGroupsStateHandle) {
    let bytes = bytes_of(handle);
    let first_section = handle
        .offsets()
        .offset(handle.offsets().range().start())
        .unwrap();
    for cut in first_section as usize..bytes.len() {
        let err = read_all(&with_bytes(handle, bytes[..cut].to_vec()))
            .expect_err(&format!("cut at {cut} without an error"));
        assert!(matches!(err, Error::KeyGroup { .. }), "cut at {cut}: {err}");
        assert!(
            matches!(
                err.root(),
                Error::Corrupted { .. } | Error::Truncated { .. }
            ),
            "cut at {cut}: {err}"
        );
    }
}

#[test]
fn a_stream_cut_at_any_byte_is_reported() {
    let (range, entries) = sample();
    check_every_cut_is_reported(&write_with(&header(3), range, &entries));
    check_every_cut_is_reported(&write_version_2(&header(3), range, &entries));
}

/// A version-3 stream of [`header_of_every_kind`] holding one key group, 0, whose data is
/// `data` (state ids, entries, end mark), with the checksum of those bytes.
fn crafted(data: &[u8]) -> KeyGroupsStateHandle {
    let mut bytes = Vec::new();
    header_of_every_kind().write_to(&mut bytes).unwrap();
    let offset = bytes.len() as u64;
    bytes.extend_from_slice(&0u32.to_be_bytes());
    bytes.extend_from_slice(data);
    let checksum = crc32c::crc32c(&bytes[offset as usize..]);
    let end = bytes.len() as u64;
    let range = KeyGroupRange::new(0, 0).unwrap();
    let offsets = KeyGroupRangeOffsets::with_offsets(range, vec![offset]).unwrap();
    KeyGroupsStateHandle::new(
        offsets,
        Arc::new(ByteStreamStateHandle::new("crafted", bytes)),
    )
    .with_end(end)
    .with_checksums(vec![checksum])
    .unwrap()
}

/// Reads `data` (see [`crafted`]), which must fail in key group 0; returns the error.
fn crafted_error(data: &[u8]) -> Error {
    let err = read_all(&crafted(data)).expect_err("crafted data must not read");
    assert!(
        matches!(err, Error::KeyGroup { key_group, .. } if key_group == kg(0)),
        "{err}"
    );
    err
}

/// Asserts that reading `data` (see [`crafted`]) is [`Error::Corrupted`] naming `what`,
/// with a reason that contains `reason`.
fn check_corrupted(data: &[u8], what: &str, reason: &str) {
    let err = crafted_error(data);
    let Error::Corrupted {
        what: found,
        reason: why,
    } = err.root()
    else {
        panic!("expected a corruption of {what}: {err}");
    };
    assert_eq!(found, what, "{err}");
    assert!(why.contains(reason), "{err}");
}

/// Asserts that reading `data` (see [`crafted`]) is [`Error::Truncated`] naming `what`.
fn check_truncated(data: &[u8], what: &str) {
    let err = crafted_error(data);
    let Error::Truncated { what: found, .. } = err.root() else {
        panic!("expected a truncation of {what}: {err}");
    };
    assert_eq!(found, what, "{err}");
}

/// State 0 (a value state), then the flagged key-group prefix of key group 0.
const VALUE_ENTRY: [u8; 3] = [0, 0, META_DATA_FOLLOWS];

/// State 2 (a map state), then the flagged key-group prefix of key group 0.
const MAP_ENTRY: [u8; 3] = [0, 2, META_DATA_FOLLOWS];

const END: [u8; 2] = END_OF_KEY_GROUP_MARK.to_be_bytes();

#[test]
fn a_crafted_entry_reads() {
    let data = [&VALUE_ENTRY[..], &[1, b'k', 0, 1, b'v'], &END].concat();
    let mut expected = Entries::new();
    expected.insert(kg(0), vec![(0, key(0, b"k"), b"v".to_vec())]);
    assert_eq!(read_all(&crafted(&data)).unwrap(), expected);
}

#[test]
fn a_varint_running_past_5_bytes_is_corrupted() {
    let data = [&VALUE_ENTRY[..], &[0x80; 10], &END].concat();
    check_corrupted(&data, "entry key length", "runs past 5 bytes");
}

#[test]
fn a_varint_above_u32_max_is_corrupted() {
    let data = [
        &VALUE_ENTRY[..],
        &[1, b'k'],
        &[0xFF, 0xFF, 0xFF, 0xFF, 0x1F],
        &END,
    ]
    .concat();
    check_corrupted(&data, "entry namespace length", "exceeds 4294967295");
}

#[test]
fn an_overlong_varint_is_corrupted() {
    let data = [&VALUE_ENTRY[..], &[1, b'k', 0, 0x81, 0x00, b'v'], &END].concat();
    check_corrupted(&data, "entry value length", "shortest form");
}

#[test]
fn a_malformed_user_key_length_is_corrupted() {
    let data = [
        &MAP_ENTRY[..],
        &[1, b'k', 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
        &END,
    ]
    .concat();
    check_corrupted(&data, "entry user-key length", "runs past 5 bytes");
}

#[test]
fn a_varint_cut_by_the_end_of_the_stream_is_truncated() {
    check_truncated(
        &[&VALUE_ENTRY[..], &[1, b'k', 0, 0x80]].concat(),
        "entry value length",
    );
}

#[test]
fn a_key_longer_than_the_stream_is_truncated() {
    // 16383 bytes declared, a few present.
    let data = [&VALUE_ENTRY[..], &[0xFF, 0x7F, b'k'], &END].concat();
    check_truncated(&data, "entry key");
}

#[test]
fn a_value_of_4_gib_in_a_short_stream_is_truncated_without_allocating_it() {
    let data = [
        &VALUE_ENTRY[..],
        &[1, b'k', 0],
        &[0xFF, 0xFF, 0xFF, 0xFF, 0x0F],
        b"v",
        &END,
    ]
    .concat();
    check_truncated(&data, "entry value");
}

#[test]
fn a_key_group_prefix_cut_by_the_end_of_the_stream_is_truncated() {
    check_truncated(&[0, 0], "entry key-group prefix");
}

#[test]
fn varints_read_across_buffer_refills() {
    let values = [
        0,
        1,
        127,
        128,
        300,
        16_383,
        16_384,
        2_097_151,
        2_097_152,
        u32::MAX,
    ];
    let mut bytes = Vec::new();
    for value in values {
        varint::put(&mut bytes, value);
    }
    for capacity in [1, 2, 3, 7, 64] {
        let mut reader = CrcReader {
            inner: BufReader::with_capacity(capacity, bytes.as_slice()),
            crc: 0,
        };
        for value in values {
            assert_eq!(
                reader.read_varint("value").unwrap(),
                value,
                "capacity {capacity}"
            );
        }
        assert_eq!(reader.crc, crc32c::crc32c(&bytes), "capacity {capacity}");
        let err = reader.read_varint("the end").unwrap_err();
        assert!(matches!(err, Error::Truncated { .. }), "{err}");
    }
}

/// Entries of every kind of state: keys, namespaces and (map states only) user keys of
/// any bytes, in any key group of 0..8.
fn arbitrary_entries_of_every_kind() -> impl Strategy<Value = Entries> {
    let bytes = |max| prop::collection::vec(any::<u8>(), 0..max);
    let entry = (0u16..3, bytes(12), bytes(12), bytes(12), bytes(300));
    prop::collection::btree_map(0u32..8, prop::collection::vec(entry, 1..12), 0..8).prop_map(
        |groups| {
            groups
                .into_iter()
                .map(|(group, mut raw)| {
                    raw.sort_by_key(|(state, ..)| (*state as u32 * 5 + group) % 3);
                    let entries = raw
                        .into_iter()
                        .map(|(state, key, namespace, user_key, value)| {
                            let user_key = if state == 2 { user_key } else { Vec::new() };
                            (state, composite(group, &key, &namespace, &user_key), value)
                        })
                        .collect();
                    (kg(group), entries)
                })
                .collect()
        },
    )
}

#[test]
fn entries_that_cross_refills_of_the_read_buffer_read_the_same() {
    let mut entries = Entries::new();
    entries.insert(
        kg(1),
        vec![
            (0, composite(1, b"key", b"", b""), b"value".to_vec()),
            (0, composite(1, &[7; 130], b"ns", b""), vec![8; 20_000]),
            (1, composite(1, b"", &[9; 200], b""), vec![]),
            (2, composite(1, b"k", b"ns", b"user key"), b"v".to_vec()),
            (2, composite(1, b"k", b"", &[3; 129]), vec![1; 128]),
        ],
    );
    let range = KeyGroupRange::new(0, 2).unwrap();
    let header = header_of_every_kind();
    for handle in [
        write_with(&header, range, &entries),
        write_version_2(&header, range, &entries),
    ] {
        for read_buffer in [1, 2, 3, 4, 5, 6, 7, 8, 13, 100, 1000, 4096] {
            assert_eq!(
                read_all_with(&handle, read_buffer).unwrap(),
                entries,
                "{read_buffer} bytes read ahead"
            );
        }
    }
}

proptest! {
    #[test]
    fn entries_of_every_kind_round_trip_in_versions_2_and_3(
        entries in arbitrary_entries_of_every_kind(),
        read_buffer in prop_oneof![Just(READ_BUFFER), 1usize..300],
    ) {
        let range = KeyGroupRange::new(0, 7).unwrap();
        let header = header_of_every_kind();
        let current = write_with(&header, range, &entries);
        prop_assert_eq!(read_all_with(&current, read_buffer).unwrap(), entries.clone());
        let version_2 = write_version_2(&header, range, &entries);
        prop_assert_eq!(read_all_with(&version_2, read_buffer).unwrap(), entries);
    }

    #[test]
    fn any_data_in_a_key_group_reads_or_fails_with_a_typed_error(
        data in prop::collection::vec(any::<u8>(), 0..64),
        start in prop::sample::select(vec![VALUE_ENTRY.to_vec(), MAP_ENTRY.to_vec(), vec![]]),
        read_buffer in prop_oneof![Just(READ_BUFFER), 1usize..16],
    ) {
        let data = [start, data].concat();
        if let Err(err) = read_all_with(&crafted(&data), read_buffer) {
            prop_assert!(
                matches!(err.root(), Error::Corrupted { .. } | Error::Truncated { .. }),
                "{}", err
            );
        }
    }
}

/// A value state and a priority queue.
fn header_with_timers() -> KeyedBackendSerializationProxy {
    KeyedBackendSerializationProxy::new(
        "bytes",
        vec![
            StateMetaInfo::value("value", "bytes", "bytes"),
            StateMetaInfo::priority_queue("timers", "bytes"),
        ],
        "none",
        MAX_PARALLELISM,
    )
}

#[test]
fn timers_round_trip_as_timer_keys_with_their_timestamp_written_whole() {
    let timers = crate::timer::TimerKey::new(MAX_PARALLELISM);
    let timer = |timestamp: i64, key: &[u8]| state_api::Timer {
        timestamp,
        key: key.to_vec(),
        namespace: b"window".to_vec(),
    };
    let range = KeyGroupRange::new(3, 4).unwrap();
    let mut entries = Entries::new();
    let mut of_group_3 = vec![(0, key(3, b"v"), b"value".to_vec())];
    for (timestamp, name) in [
        (i64::MIN, &b"a"[..]),
        (-1, b"b"),
        (0, b"c"),
        (i64::MAX, b"d"),
    ] {
        of_group_3.push((
            1,
            timers.build(kg(3), &timer(timestamp, name)).unwrap(),
            vec![],
        ));
    }
    entries.insert(kg(3), of_group_3);
    let long_key = vec![9; 5000];
    let long = timers.build(kg(4), &timer(42, &long_key)).unwrap();
    entries.insert(kg(4), vec![(1, long, vec![])]);
    let handle = write_with(&header_with_timers(), range, &entries);
    // Read ahead in big and in tiny pieces: decoded in the buffer, and field by field.
    for read_buffer in [READ_BUFFER, 3] {
        assert_eq!(read_all_with(&handle, read_buffer).unwrap(), entries);
    }
    // A timer: prefix, 8 timestamp bytes, key length, key, namespace length, namespace,
    // value length: 1 + 8 + 1 + 1 + 1 + 6 + 1 = 19 bytes, flag and state ids aside.
    let section = section_of(&handle, kg(3));
    let sizes = 4 + 2 + (1 + 1 + 1 + 1 + 1 + 5) + 2 + 4 * 19 + 2;
    assert_eq!(section.len(), sizes);
}

#[test]
fn a_timer_key_that_does_not_split_is_refused_by_the_writer() {
    let range = KeyGroupRange::new(3, 3).unwrap();
    let mut bytes = Vec::new();
    let header = header_with_timers();
    let mut writer = uncompressed_writer(&mut bytes, &header, range).unwrap();
    let err = writer
        .write_key_group(kg(3), |group| group.write_entry(1, &[3, 0, 0], &[]))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
}
