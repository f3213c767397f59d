//! Seeding: one RNG per toxic, connection and stream.
//!
//! With `--seed`, every random decision of a toxic depends only on the seed,
//! the proxy's name, the connection's ordinal, the stream and the toxic's
//! name (DESIGN "Randomness"), so a run can be replayed.

use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::vocab::StreamDir;

/// Mixes numbers into a 64-bit seed (splitmix64), stable across builds.
pub fn mix_seed(parts: &[u64]) -> u64 {
    let mut state: u64 = 0x243F_6A88_85A3_08D3;
    for part in parts {
        state ^= *part;
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        state = z ^ (z >> 31);
    }
    state
}

/// Hashes a string for [`mix_seed`] (FNV-1a).
pub fn hash_str(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The RNG of one toxic on one connection and stream.
pub fn toxic_rng(
    seed: Option<u64>,
    proxy: &str,
    ordinal: u64,
    stream: StreamDir,
    toxic: &str,
) -> SmallRng {
    match seed {
        Some(seed) => SmallRng::seed_from_u64(mix_seed(&[
            seed,
            hash_str(proxy),
            ordinal,
            stream.index() as u64,
            hash_str(toxic),
        ])),
        None => SmallRng::from_rng(&mut rand::rng()),
    }
}
