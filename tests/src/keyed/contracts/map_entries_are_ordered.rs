//! Map entries come back ordered by user key bytes.

use state_api::CheckpointId;

use crate::compression::random_bytes;
use crate::keyed::KeyedTarget;
use crate::keyed::bed::{ATTRIBUTES, TestBed, full_range, show};

/// [`KeyedStateBackend::map_entries`] lists a map's entries ordered by user key bytes, in
/// the live backend and after a restore.
///
/// [`KeyedStateBackend::map_entries`]: state_api::KeyedStateBackend::map_entries
pub fn map_entries_are_ordered(target: &KeyedTarget<'_>) {
    let bed = TestBed::new(target, "map entry order");
    let mut model = bed.model();
    let mut live = bed.create_with_states(&mut model);
    // Inserted out of order; user keys of several lengths, the empty one included.
    let mut user_keys: Vec<Vec<u8>> = (0..300u32)
        .map(|i| random_bytes((i % 7) as usize, u64::from(i) + 1000))
        .collect();
    user_keys.push(Vec::new());
    user_keys.push(vec![0xFF; 3]);
    for user_key in &user_keys {
        model.put_map(&mut *live, ATTRIBUTES, b"", b"ordered", user_key, user_key);
    }
    let storage = bed.storage("checkpoints", None);
    let result = bed.snapshot(&mut *live, &storage, CheckpointId::new(1));
    let restored = bed.restore(full_range(), &[bed.handle(&result)]);
    for (what, mut backend) in [("the live backend", live), ("restored", restored)] {
        bed.ok(
            backend.set_current_key(b"ordered"),
            "setting the current key",
        );
        let entries = bed.ok(backend.map_entries(ATTRIBUTES, b""), "map_entries");
        let out_of_order = entries.windows(2).position(|pair| pair[0].0 >= pair[1].0);
        if let Some(index) = out_of_order {
            panic!(
                "{}: {what}: map_entries of {} entries is not ordered by user key: entry {index} is {}, entry {} is {}",
                bed.label,
                entries.len(),
                show(&entries[index].0),
                index + 1,
                show(&entries[index + 1].0)
            );
        }
        model.check(&mut *backend, what);
    }
}
