//! A small deterministic PRNG (SplitMix64) so that loss patterns repeat exactly for a given seed.
//!
//! SplitMix64 passes BigCrush, needs one `u64` of state and a handful of instructions per draw,
//! which is all a per-packet Bernoulli trial needs. It is not cryptographic and is not meant to be.

/// SplitMix64 generator (Steele, Lea and Flood, 2014; constants from Vigna's reference code).
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose whole output sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 uniformly distributed bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A stream seed for sub-generator `index`, derived from `seed`, so that each direction of the
    /// emulator draws from its own independent sequence (thread interleaving cannot change it).
    pub fn derive(seed: u64, index: u64) -> u64 {
        let mut g = SplitMix64::new(seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
        g.next_u64()
    }
}

/// A Bernoulli trial with probability `p`, as an integer threshold on 64 random bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bernoulli {
    /// Draws strictly below this value are "hits". `u64::MAX` with `always` covers p = 1.
    threshold: u64,
    always: bool,
}

impl Bernoulli {
    /// `p` is clamped to [0, 1]; NaN counts as 0.
    pub fn new(p: f64) -> Self {
        if p.is_nan() || p <= 0.0 {
            return Self {
                threshold: 0,
                always: false,
            };
        }
        if p >= 1.0 {
            return Self {
                threshold: u64::MAX,
                always: true,
            };
        }
        // p * 2^64, computed in f64: exact enough (53-bit mantissa) for any loss rate we emulate.
        let threshold = (p * 18_446_744_073_709_551_616.0) as u64;
        Self {
            threshold,
            always: false,
        }
    }

    /// True when the trial never fires; lets callers skip drawing random numbers entirely.
    pub fn is_never(&self) -> bool {
        self.threshold == 0 && !self.always
    }

    /// One trial.
    pub fn sample(&self, rng: &mut SplitMix64) -> bool {
        if self.always {
            return true;
        }
        if self.threshold == 0 {
            return false;
        }
        rng.next_u64() < self.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_reference_vector() {
        // Reference outputs of SplitMix64 for seed 1234567 (Vigna's splitmix64.c).
        let mut g = SplitMix64::new(1_234_567);
        assert_eq!(g.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(g.next_u64(), 3_203_168_211_198_807_973);
        assert_eq!(g.next_u64(), 9_817_491_932_198_370_423);
    }

    #[test]
    fn derived_streams_differ_and_repeat() {
        assert_ne!(SplitMix64::derive(7, 0), SplitMix64::derive(7, 1));
        assert_eq!(SplitMix64::derive(7, 1), SplitMix64::derive(7, 1));
    }

    #[test]
    fn bernoulli_edges() {
        let mut g = SplitMix64::new(1);
        assert!(Bernoulli::new(0.0).is_never());
        assert!(Bernoulli::new(f64::NAN).is_never());
        assert!((0..1000).all(|_| !Bernoulli::new(0.0).sample(&mut g)));
        assert!((0..1000).all(|_| Bernoulli::new(1.0).sample(&mut g)));
        assert!((0..1000).all(|_| Bernoulli::new(2.0).sample(&mut g)));
    }
}
