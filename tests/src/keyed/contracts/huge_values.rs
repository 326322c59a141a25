//! Huge values, keys, namespaces, lists and maps round trip.

use state_api::CheckpointId;

use crate::compression::{random_bytes, text_bytes};
use crate::keyed::KeyedTarget;
use crate::keyed::bed::{ATTRIBUTES, COUNT, EVENTS, TestBed, full_range};

/// A 5 MiB value, a 64 KiB key and namespace, a list of 10,000 elements and a map of
/// 10,000 user keys round trip.
pub fn huge_values(target: &KeyedTarget<'_>) {
    let bed = TestBed::new(target, "huge values");
    let mut model = bed.model();
    let mut live = bed.create_with_states(&mut model);
    model.put_value(&mut *live, COUNT, b"", b"random", &random_bytes(5 << 20, 5));
    model.put_value(&mut *live, COUNT, b"", b"text", &text_bytes(5 << 20));
    let long_key = text_bytes(64 << 10);
    let long_ns = random_bytes(64 << 10, 6);
    model.put_value(
        &mut *live,
        COUNT,
        &long_ns,
        &long_key,
        b"long key and namespace",
    );
    let elements: Vec<Vec<u8>> = (0..10_000u32)
        .map(|i| format!("element {i}").into_bytes())
        .collect();
    model.update_list(&mut *live, EVENTS, b"", b"list", &elements);
    for element in elements.iter().take(100) {
        model.append(&mut *live, EVENTS, b"", b"list", element);
    }
    for i in 0..10_000u32 {
        model.put_map(
            &mut *live,
            ATTRIBUTES,
            b"",
            b"map",
            &i.to_be_bytes(),
            &random_bytes(16, u64::from(i)),
        );
    }
    model.check(&mut *live, "the live backend");
    let storage = bed.storage("checkpoints", None);
    let result = bed.snapshot(&mut *live, &storage, CheckpointId::new(1));
    let mut restored = bed.restore(full_range(), &[bed.handle(&result)]);
    model.check(&mut *restored, "restored");
}
