//! Quantiles from histogram buckets, as Prometheus' `histogram_quantile` computes them:
//! find the bucket the rank falls in and interpolate linearly inside it.

/// Cumulative bucket counts with their upper bounds (ascending; the last may be +Inf).
pub type Buckets = Vec<(f64, u64)>;

/// The `q` quantile (0..1) of the observations between two snapshots of the same
/// histogram; `None` if nothing was observed in between.
pub fn quantile_between(before: &Buckets, after: &Buckets, q: f64) -> Option<f64> {
    let delta: Vec<(f64, u64)> = after
        .iter()
        .enumerate()
        .map(|(i, &(bound, count))| {
            let earlier = before.get(i).map_or(0, |&(_, c)| c);
            (bound, count.saturating_sub(earlier))
        })
        .collect();
    let total = delta.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut lower_bound = 0.0;
    let mut lower_count = 0u64;
    for &(bound, count) in &delta {
        if count as f64 >= rank {
            if bound.is_infinite() {
                // Above the largest finite bucket: the best answer is that bucket's bound.
                return Some(lower_bound);
            }
            let in_bucket = (count - lower_count) as f64;
            if in_bucket == 0.0 {
                return Some(bound);
            }
            let fraction = (rank - lower_count as f64) / in_bucket;
            return Some(lower_bound + (bound - lower_bound) * fraction);
        }
        lower_bound = bound;
        lower_count = count;
    }
    Some(lower_bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_the_bucket_of_their_rank() {
        let before = vec![(0.1, 10), (0.5, 10), (1.0, 10), (f64::INFINITY, 10)];
        // Then 100 more: 50 under 0.1 s, 40 in (0.1, 0.5], 10 in (0.5, 1].
        let after = vec![(0.1, 60), (0.5, 100), (1.0, 110), (f64::INFINITY, 110)];
        let p50 = quantile_between(&before, &after, 0.5).unwrap();
        assert!((p50 - 0.1).abs() < 1e-9, "{p50}");
        let p90 = quantile_between(&before, &after, 0.9).unwrap();
        assert!((p90 - 0.5).abs() < 1e-9, "{p90}");
        let p99 = quantile_between(&before, &after, 0.99).unwrap();
        assert!((p99 - 0.95).abs() < 1e-9, "{p99}");
        assert_eq!(quantile_between(&after, &after, 0.5), None, "nothing new");
        let slow = vec![(0.1, 0), (0.5, 0), (1.0, 0), (f64::INFINITY, 4)];
        assert_eq!(quantile_between(&Vec::new(), &slow, 0.5), Some(1.0));
    }
}
