//! The RocksDB keyed state backend of snapstate (not yet implemented in this release).
//!
//! This crate will hold the backend for state larger than memory: one column family per
//! state with key-group-prefixed keys, a [`state_api::ResourceGuard`] around the database,
//! the `rocksdb-full` strategy writing the canonical key-group format (and used for every
//! savepoint), the `rocksdb-incremental` strategy uploading only new sst files, and
//! restore with and without rescaling.
//!
//! Today it only depends on the contract crate (RocksDB itself is not built yet), so the
//! workspace layout and its dependency rules are in place.
