//! The `deflate` decorator against the conformance kit: the decorator contract on its own,
//! the whole keyed-backend contract on the heap backend with `deflate` sections, and the
//! decorator picked by name from configuration, as an application would.

use snapstate::api::CheckpointId;
use snapstate::api::SnapshotRequest;
use snapstate_example_deflate::{DEFLATE, DeflateStreamCompressionDecorator};
use snapstate_tests::compression::{self, DecoratorCapabilities};
use snapstate_tests::keyed::{KeyedBackendCapabilities, KeyedTarget};
use state_api::{KeyGroupRange, PluginKind, Registry, StateMetaInfo};

fn registry() -> &'static Registry {
    snapstate_example_deflate::link();
    state_heap::link();
    Registry::global()
}

#[test]
fn deflate_passes_the_decorator_contract() {
    compression::run_all(
        &DeflateStreamCompressionDecorator,
        DecoratorCapabilities {
            // Adler-32 misses some changes; the snapshot's CRC-32C per key group catches them.
            detects_corruption: false,
            detects_truncation: true,
        },
    );
}

// The whole keyed-backend contract on the heap backend with `deflate` sections, one test
// per contract.
snapstate_tests::keyed_contracts!(
    heap_with_deflate,
    KeyedTarget::new(registry(), "heap")
        .compression(DEFLATE)
        .capabilities(KeyedBackendCapabilities {
            rescaling: true,
            local_recovery: true,
        })
);

#[test]
fn deflate_is_registered_at_link_time_and_picked_by_configuration() {
    let registry = registry();
    assert!(
        registry
            .names(PluginKind::Compression)
            .contains(&DEFLATE.to_owned()),
        "linked: {:?}",
        registry.names(PluginKind::Compression)
    );
    let dir = tempfile::tempdir().unwrap();
    let config = snapstate::config::StateConfig::from_pairs([
        ("state.backend.type", "heap"),
        ("execution.checkpointing.snapshot-compression", DEFLATE),
        ("execution.checkpointing.dir", dir.path().to_str().unwrap()),
    ])
    .unwrap();
    let range = KeyGroupRange::new(0, 127).unwrap();
    let params = config.keyed_params(range, registry).unwrap();
    let factory = config.keyed_backend(registry).unwrap();
    let mut backend = factory.create(params.clone(), registry).unwrap();
    backend
        .register_state(&StateMetaInfo::value("count", "void", "bytes"))
        .unwrap();
    for key in 0..1000u32 {
        backend.set_current_key(&key.to_be_bytes()).unwrap();
        backend
            .put_value("count", b"", &b"counted ".repeat(8))
            .unwrap();
    }
    let storage = config.storage().unwrap();
    let task = backend
        .snapshot(
            &SnapshotRequest::savepoint(CheckpointId::new(1), 0),
            std::sync::Arc::new(storage.stream_factory(CheckpointId::new(1)).unwrap()),
        )
        .unwrap();
    let handle = task.run().unwrap().job_manager_owned().unwrap().clone();
    assert!(
        handle.state_size() < 1000 * 64 / 4,
        "deflate compressed {} bytes of repetitive values to {} bytes",
        1000 * 64,
        handle.state_size()
    );
    let mut restored = factory.restore(params, registry, &[handle]).unwrap();
    restored.set_current_key(&7u32.to_be_bytes()).unwrap();
    assert_eq!(
        restored.value("count", b"").unwrap(),
        Some(b"counted ".repeat(8))
    );
}
