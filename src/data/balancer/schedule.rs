//! Smooth weighted round robin (nginx's algorithm) without a lock: the whole cycle of picks is
//! computed once, when a pool or weighted service is built, and every worker thread walks it
//! through one atomic cursor. A pick is one `fetch_add` and a read, with no allocation; the
//! slot of a candidate that is down (or excluded) is skipped and the next slot taken, so the
//! others keep their proportions.

use std::sync::atomic::{AtomicUsize, Ordering};

/// How many slots a pick takes before it scans the cycle for any candidate up.
const SKIPS: usize = 64;
/// The longest cycle kept; larger weight totals are scaled down to it (each weight kept at
/// least 1), which moves no share by more than 0.1% of the total.
const MAX_CYCLE: u64 = 1 << 16;

pub struct Schedule {
    /// Candidate indexes in pick order; its length is the (scaled) total weight.
    cycle: Box<[u32]>,
    cursor: AtomicUsize,
}

impl Schedule {
    /// The cycle for candidates of `weights` (0: never picked).
    pub fn new(weights: &[u32]) -> Schedule {
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        let scaled: Vec<i64> = weights
            .iter()
            .map(|w| match (*w, total > MAX_CYCLE) {
                (0, _) => 0,
                (w, true) => ((u64::from(w) * MAX_CYCLE / total).max(1)) as i64,
                (w, false) => i64::from(w),
            })
            .collect();
        let length: i64 = scaled.iter().sum();
        let mut current = vec![0i64; scaled.len()];
        let mut cycle = Vec::with_capacity(length as usize);
        for _ in 0..length {
            let mut best = None::<usize>;
            for (i, weight) in scaled.iter().enumerate().filter(|(_, w)| **w > 0) {
                current[i] += weight;
                if best.is_none_or(|b| current[i] > current[b]) {
                    best = Some(i);
                }
            }
            let Some(best) = best else { break };
            current[best] -= length;
            cycle.push(best as u32);
        }
        Schedule { cycle: cycle.into_boxed_slice(), cursor: AtomicUsize::new(0) }
    }

    /// The next candidate for which `up` holds, in cycle order; `None` when none does.
    pub fn next(&self, up: impl Fn(usize) -> bool) -> Option<usize> {
        let length = self.cycle.len();
        if length == 0 {
            return None;
        }
        for _ in 0..length.min(SKIPS) {
            let slot = self.cursor.fetch_add(1, Ordering::Relaxed);
            let candidate = self.cycle[slot % length] as usize;
            if up(candidate) {
                return Some(candidate);
            }
        }
        // Most candidates are down: one pass over the cycle finds any that is up.
        let start = self.cursor.load(Ordering::Relaxed);
        (0..length).map(|k| self.cycle[start.wrapping_add(k) % length] as usize).find(|i| up(*i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cycle_interleaves_by_weight() {
        let schedule = Schedule::new(&[5, 1, 1]);
        let picks: Vec<usize> = (0..14).map(|_| schedule.next(|_| true).unwrap()).collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn weights_hold_within_one_percent_over_ten_thousand_picks_from_several_threads() {
        for weights in [vec![3u32, 1], vec![7, 2, 1], vec![1_000_000, 3_000_000, 1]] {
            let schedule = Schedule::new(&weights);
            let counts: Vec<AtomicUsize> = weights.iter().map(|_| AtomicUsize::new(0)).collect();
            std::thread::scope(|scope| {
                for _ in 0..4 {
                    scope.spawn(|| {
                        for _ in 0..2_500 {
                            counts[schedule.next(|_| true).unwrap()].fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
            });
            let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
            for (weight, count) in weights.iter().zip(&counts) {
                let expected = 10_000.0 * *weight as f64 / total as f64;
                let got = count.load(Ordering::Relaxed) as f64;
                assert!((got - expected).abs() <= 100.0, "weights {weights:?}: {got} picks where {expected} were due");
            }
        }
    }

    #[test]
    fn a_candidate_that_is_down_gives_its_turns_to_the_others() {
        let schedule = Schedule::new(&[2, 1, 1]);
        let mut counts = [0i32; 3];
        for _ in 0..4_000 {
            counts[schedule.next(|i| i != 0).unwrap()] += 1;
        }
        assert_eq!(counts[0], 0);
        assert!((counts[1] - counts[2]).abs() <= 40, "the others keep their proportions: {counts:?}");
        assert_eq!(schedule.next(|_| false), None);
        assert_eq!(Schedule::new(&[0, 0]).next(|_| true), None);
        assert_eq!(Schedule::new(&[]).next(|_| true), None);
    }
}
