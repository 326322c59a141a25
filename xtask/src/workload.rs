//! The one snapshot workload (`../shared/BENCHMARK.md`): keys, states and values, exactly as
//! specified, shared by the benchmark and the demo.
//!
//! Keys are `0..n` as 8-byte big-endian `u64`; value state `s<i>` of key `k` holds `v` bytes
//! of an xorshift64* stream seeded with `k * 1_000_003 + i + 1` (plus 7 once modified); the
//! `random` kind keeps each output's low byte, `text` maps it onto `a..=h`.

use clap::ValueEnum;
use state_api::MaxParallelism;
use state_api::{KeyedStateBackend, Result, StateMetaInfo, StateTtlConfig};

/// Max parallelism of every workload backend: key groups 0..=127, all owned by one
/// instance unless a run rescales.
pub(crate) const MAX_PARALLELISM: MaxParallelism = MaxParallelism::of(128);

/// What the value bytes look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ValueKind {
    /// Every byte from the generator: incompressible.
    Random,
    /// Bytes `a..=h`: compressible, like text.
    Text,
}

impl ValueKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ValueKind::Random => "random",
            ValueKind::Text => "text",
        }
    }
}

/// The workload's size and shape.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Workload {
    /// Number of keys.
    pub(crate) n: u64,
    /// Value size in bytes.
    pub(crate) v: usize,
    /// Number of value states.
    pub(crate) s: u32,
    /// Value bytes.
    pub(crate) kind: ValueKind,
    /// The states' time to live (the spec's have none).
    pub(crate) ttl: Option<StateTtlConfig>,
}

impl Workload {
    /// The name of value state `state`.
    pub(crate) fn state_name(state: u32) -> String {
        format!("s{state}")
    }

    /// Registers the value states `s0..s<s-1>` (void namespace, byte values), with the
    /// workload's time to live.
    pub(crate) fn register(&self, backend: &mut dyn KeyedStateBackend) -> Result<Vec<String>> {
        (0..self.s)
            .map(|state| {
                let name = Self::state_name(state);
                let mut meta = StateMetaInfo::value(&name, "void", "bytes");
                meta.ttl = self.ttl;
                backend.register_state(&meta)?;
                Ok(name)
            })
            .collect()
    }

    /// Whether step 3 (modify 1% of the keys) changes key `key`.
    pub(crate) fn is_modified(key: u64) -> bool {
        key.is_multiple_of(100)
    }

    /// The value of `key` in state `state` into `out`, as first written or, with
    /// `modified`, as step 3 rewrites it.
    pub(crate) fn value_into(&self, key: u64, state: u32, modified: bool, out: &mut Vec<u8>) {
        let mut x = key
            .wrapping_mul(1_000_003)
            .wrapping_add(u64::from(state))
            .wrapping_add(1)
            .wrapping_add(if modified { 7 } else { 0 });
        out.clear();
        for _ in 0..self.v {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let word = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
            out.push(match self.kind {
                ValueKind::Random => (word & 0xFF) as u8,
                ValueKind::Text => b'a' + (word & 7) as u8,
            });
        }
    }

    /// The value `key` holds in `state` after step 3 when `modified_too`, else as filled.
    #[cfg(test)]
    pub(crate) fn expected(&self, key: u64, state: u32, modified_too: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.v);
        self.value_into(key, state, modified_too && Self::is_modified(key), &mut out);
        out
    }

    /// Writes every key of `keys` (all states) into `backend`; `modified` writes step 3's
    /// values. `progress` is called with the number of keys written so far, now and then.
    pub(crate) fn write(
        &self,
        backend: &mut dyn KeyedStateBackend,
        states: &[String],
        keys: impl Iterator<Item = u64>,
        modified: bool,
        mut progress: impl FnMut(u64),
    ) -> Result<u64> {
        let mut value = Vec::with_capacity(self.v);
        let mut written: u64 = 0;
        for key in keys {
            backend.set_current_key(&key.to_be_bytes())?;
            for (state, name) in (0u32..).zip(states) {
                self.value_into(key, state, modified, &mut value);
                backend.put_value(name, b"", &value)?;
            }
            written += 1;
            if written.is_multiple_of(65_536) {
                progress(written);
            }
        }
        progress(written);
        Ok(written)
    }

    /// Checks `keys` in `backend` against the expected values (after step 3 when
    /// `modified_too`); returns how many keys were checked, or the first mismatch.
    pub(crate) fn verify(
        &self,
        backend: &mut dyn KeyedStateBackend,
        states: &[String],
        keys: impl Iterator<Item = u64>,
        modified_too: bool,
    ) -> std::result::Result<u64, String> {
        let mut checked = 0;
        let mut expected = Vec::with_capacity(self.v);
        for key in keys {
            backend
                .set_current_key(&key.to_be_bytes())
                .map_err(|err| format!("key {key}: {err}"))?;
            for (state, name) in (0u32..).zip(states) {
                self.value_into(
                    key,
                    state,
                    modified_too && Self::is_modified(key),
                    &mut expected,
                );
                match backend.value(name, b"") {
                    Ok(Some(found)) if found == expected => {}
                    Ok(Some(_)) => return Err(format!("key {key} of `{name}` has a wrong value")),
                    Ok(None) => return Err(format!("key {key} of `{name}` is missing")),
                    Err(err) => return Err(format!("key {key} of `{name}`: {err}")),
                }
            }
            checked += 1;
        }
        Ok(checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_follow_the_specified_generator() {
        let workload = Workload {
            n: 10,
            v: 4,
            s: 1,
            kind: ValueKind::Random,
            ttl: None,
        };
        // Key 0, state 0: seed 1. One xorshift64* step by hand.
        let mut x: u64 = 1;
        let mut expected = Vec::new();
        for _ in 0..4 {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            expected.push((x.wrapping_mul(0x2545_F491_4F6C_DD1D) & 0xFF) as u8);
        }
        assert_eq!(workload.expected(0, 0, false), expected);
        assert_ne!(workload.expected(0, 0, true), expected, "key 0 is modified");
        assert_eq!(
            workload.expected(1, 0, true),
            workload.expected(1, 0, false),
            "key 1 is not modified"
        );
        let text = Workload {
            kind: ValueKind::Text,
            ttl: None,
            ..workload
        };
        assert!(
            text.expected(5, 0, false)
                .iter()
                .all(|b| (b'a'..=b'h').contains(b))
        );
        assert_ne!(
            workload.expected(5, 0, false),
            workload.expected(5, 1, false)
        );
    }
}
