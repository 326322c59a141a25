//! Max parallelism above 128: two-byte key-group prefixes.

use state_api::{CheckpointId, KeyGroupRange, KeyedBackendParams, MaxParallelism, StateMetaInfo};

use crate::keyed::KeyedTarget;
use crate::keyed::bed::{COUNT, TestBed, show, show_option};

/// Max parallelism above 128 puts two-byte key-group prefixes in front of keys: a
/// backend with 1024 key groups round trips every key and splits into two instances, each
/// holding exactly the keys of its key groups.
pub fn large_max_parallelism(target: &KeyedTarget<'_>) {
    const LARGE: MaxParallelism = MaxParallelism::of(1024);
    let bed = TestBed::new(target, "max parallelism 1024");
    let params = |range: KeyGroupRange| KeyedBackendParams {
        max_parallelism: LARGE,
        ..bed.params(range)
    };
    let range = |start: u32, end: u32| bed.ok(KeyGroupRange::new(start, end), "a key-group range");
    let all = range(0, LARGE.get() - 1);
    let mut live = bed.ok(bed.try_create(params(all)), "creating a backend");
    let meta = StateMetaInfo::value(COUNT, "bytes", "bytes");
    bed.ok(live.register_state(&meta), "registering a state");
    let keys: Vec<Vec<u8>> = (0..3000).map(|i| format!("key-{i}").into_bytes()).collect();
    for key in &keys {
        bed.ok(live.set_current_key(key), "setting a key");
        bed.ok(
            live.put_value(COUNT, b"", &[key.as_slice(), b"!"].concat()),
            "writing",
        );
    }
    let storage = bed.storage("checkpoints", None);
    let handles = [bed.handle(&bed.snapshot(&mut *live, &storage, CheckpointId::new(1)))];
    let halves = [
        range(0, LARGE.get() / 2 - 1),
        range(LARGE.get() / 2, LARGE.get() - 1),
    ];
    let mut restored_keys = 0;
    for part in std::iter::once(all).chain(halves) {
        let mut restored = bed.ok(
            bed.try_restore(params(part), &handles, "a valid snapshot"),
            format_args!("restoring {part}"),
        );
        let owned: Vec<&Vec<u8>> = keys
            .iter()
            .filter(|key| part.contains(LARGE.key_group_of(key)))
            .collect();
        let mut listed = bed.ok(restored.keys(COUNT, b""), "listing keys");
        listed.sort();
        let mut expected: Vec<Vec<u8>> = owned.iter().map(|key| key.to_vec()).collect();
        expected.sort();
        assert!(
            listed == expected,
            "{}: {part} holds {} keys, expected the {} of its key groups",
            bed.label,
            listed.len(),
            expected.len()
        );
        for key in owned {
            bed.ok(restored.set_current_key(key), "setting a key");
            let value = bed.ok(restored.value(COUNT, b""), "reading");
            assert!(
                value.as_deref() == Some([key.as_slice(), b"!"].concat().as_slice()),
                "{}: {part}: key {} restored as {}",
                bed.label,
                show(key),
                show_option(value.as_deref())
            );
        }
        if part != all {
            restored_keys += listed.len();
        }
    }
    assert_eq!(
        restored_keys,
        keys.len(),
        "{}: the halves lost or doubled keys",
        bed.label
    );
}
