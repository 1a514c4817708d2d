//! The workloads' random plans: splitmix64 (64-bit wrapping, seed 42), `below` and
//! `distinct`, and the per-transaction save plans of W2 and W3.

use std::collections::HashSet;

/// The seed every plan starts from.
pub(crate) const SEED: u64 = 42;

/// splitmix64, as the reference implementation draws it.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `next() % n`.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        let n = u64::try_from(n).expect("n fits in u64");
        usize::try_from(self.next_u64() % n).expect("a value below n fits in usize")
    }

    /// Draws `below(n)` until `k` distinct values are kept, in draw order.
    pub(crate) fn distinct(&mut self, n: usize, k: usize) -> Vec<usize> {
        assert!(k <= n, "cannot draw {k} distinct values below {n}");
        let mut seen = HashSet::with_capacity(k);
        let mut kept = Vec::with_capacity(k);
        while kept.len() < k {
            let value = self.below(n);
            if seen.insert(value) {
                kept.push(value);
            }
        }
        kept
    }
}

/// Checks the generator against the first outputs of the reference splitmix64 for seed 0, so
/// that the plans are the ones every implementation of the workloads draws.
pub(crate) fn check_generator() -> Result<(), String> {
    const SEED_0: [u64; 2] = [0xE220_A839_7B1D_CDAF, 0x6E78_9E6A_A1B9_65F4];
    let mut rng = SplitMix64::new(0);
    let drawn = [rng.next_u64(), rng.next_u64()];
    if drawn == SEED_0 {
        Ok(())
    } else {
        Err(format!(
            "splitmix64 drew {drawn:x?} for seed 0, not {SEED_0:x?}"
        ))
    }
}

/// The W2/W3 plans: for each transaction `picks = distinct(products, 5)`, then 5 more saves
/// `picks[below(5)]`: 10 product indices in save order. One generator makes every plan.
pub(crate) fn transaction_plans(products: usize, transactions: usize) -> Vec<Vec<usize>> {
    let mut rng = SplitMix64::new(SEED);
    (0..transactions)
        .map(|_| {
            let picks = rng.distinct(products, 5);
            let mut saves = picks.clone();
            for _ in 0..5 {
                saves.push(picks[rng.below(5)]);
            }
            saves
        })
        .collect()
}

/// W3: every 3rd transaction (the 3rd, 6th, 9th, … counting from 1) fails and rolls back.
pub(crate) fn fails(transaction: usize) -> bool {
    (transaction + 1) % 3 == 0
}
