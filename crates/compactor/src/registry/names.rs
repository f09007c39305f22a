//! The registry's hash of task names: keyed per instance, a folded multiply
//! per eight bytes. Kept because it is worth a fifth of `register` (417
//! against 523 ns/task with the default SipHash, in `docs/benchmarks.md`);
//! a random key per instance keeps the table's layout unpredictable to
//! whoever chooses the names.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

/// Builds [`NameHasher`]s with this instance's key.
#[derive(Clone)]
pub(crate) struct NameHash {
    seed: u64,
    key: u64,
}

impl NameHash {
    /// A fresh random key, from the standard library's per-process entropy.
    pub(crate) fn random() -> NameHash {
        let entropy = std::collections::hash_map::RandomState::new();
        NameHash {
            seed: entropy.hash_one(0x5eed_u64),
            // Odd, so no bit of the input is lost in the low half.
            key: entropy.hash_one(0x006b_6579_u64) | 1,
        }
    }

    /// The name with its hash under this key, computed once.
    pub(crate) fn name(&self, name: Arc<str>) -> HashedName {
        HashedName {
            hash: self.hash_one(&*name),
            name,
        }
    }
}

/// A registry key: a task name and its hash under the instance's
/// [`NameHash`]. The table is rehashed as it grows, and reading every
/// name's bytes again for that was a cache miss per task; the shard a name
/// goes to comes from the same hash. Looked up by `&str`, which hashes to
/// the same value ([`NameHasher::write_u64`] takes the stored hash as is).
#[derive(Clone)]
pub(crate) struct HashedName {
    hash: u64,
    name: Arc<str>,
}

impl HashedName {
    pub(crate) fn name(&self) -> &Arc<str> {
        &self.name
    }

    pub(crate) fn into_name(self) -> Arc<str> {
        self.name
    }
}

impl Hash for HashedName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialEq for HashedName {
    /// The hashes first: they sit in the table beside each other, where
    /// the names are behind a pointer.
    fn eq(&self, other: &HashedName) -> bool {
        self.hash == other.hash && self.name == other.name
    }
}

impl Eq for HashedName {}

impl Borrow<str> for HashedName {
    fn borrow(&self) -> &str {
        &self.name
    }
}

impl BuildHasher for NameHash {
    type Hasher = NameHasher;

    fn build_hasher(&self) -> NameHasher {
        NameHasher {
            state: self.seed,
            key: self.key,
            hashed: None,
        }
    }
}

pub(crate) struct NameHasher {
    state: u64,
    key: u64,
    /// A hash written whole by [`HashedName`].
    hashed: Option<u64>,
}

/// The 128-bit product of `a` and `b`, its halves folded together.
fn fold(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

impl NameHasher {
    fn mix(&mut self, word: u64) {
        self.state = fold(self.state ^ word, self.key);
    }
}

impl Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.mix(u64::from_le_bytes(word.try_into().expect("eight bytes")));
        }
        let rest = words.remainder();
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        // The length tells "ab" from "ab\0".
        self.mix(u64::from_le_bytes(last) ^ ((bytes.len() as u64) << 56));
    }

    fn write_u8(&mut self, byte: u8) {
        self.mix(u64::from(byte));
    }

    /// Takes `word` as the finished hash: only [`HashedName`] writes a
    /// `u64`, and what it writes was hashed by this key already (names
    /// themselves are written as bytes).
    fn write_u64(&mut self, word: u64) {
        self.hashed = Some(word);
    }

    fn finish(&self) -> u64 {
        // One more round, so the last word reaches every bit.
        self.hashed
            .unwrap_or_else(|| fold(self.state, self.key.rotate_left(32) | 1))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn equal_names_hash_equal_and_near_names_apart() {
        let h = NameHash::random();
        assert_eq!(h.hash_one("db-pool"), h.hash_one("db-pool"));
        let names: Vec<String> = (0..100_000).map(|i| format!("task-{i}")).collect();
        let hashes: HashSet<u64> = names.iter().map(|n| h.hash_one(n.as_str())).collect();
        assert_eq!(hashes.len(), names.len(), "no collisions among 100k names");
        assert_ne!(h.hash_one("ab"), h.hash_one("ab\0"));
        assert_ne!(h.hash_one(""), h.hash_one("\0"));
    }

    #[test]
    fn every_bit_of_the_hash_varies() {
        // Tables pick buckets from the low bits and shards from the high
        // ones: each bit should be set for about half of the names.
        let h = NameHash::random();
        let mut ones = [0u32; 64];
        let n = 20_000;
        for i in 0..n {
            let hash = h.hash_one(format!("conn-{i}").as_str());
            for (bit, count) in ones.iter_mut().enumerate() {
                *count += ((hash >> bit) & 1) as u32;
            }
        }
        for (bit, &count) in ones.iter().enumerate() {
            let share = f64::from(count) / f64::from(n);
            assert!(
                (0.45..0.55).contains(&share),
                "bit {bit} set for {share:.3} of names"
            );
        }
    }

    #[test]
    fn a_hashed_name_hashes_as_its_name_does() {
        let h = NameHash::random();
        for name in [
            "",
            "db-pool",
            "conn-10.0.0.7:5432",
            "a name longer than sixteen bytes",
        ] {
            let hashed = h.name(Arc::from(name));
            assert_eq!(h.hash_one(&hashed), h.hash_one(name), "{name:?}");
        }
    }

    #[test]
    fn instances_have_their_own_keys() {
        let (a, b) = (NameHash::random(), NameHash::random());
        assert_ne!(a.hash_one("db-pool"), b.hash_one("db-pool"));
    }
}
