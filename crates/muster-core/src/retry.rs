/// No retry waits longer than an hour, however many attempts came before.
pub const MAX_BACKOFF_MS: i64 = 3_600_000;

/// The fraction of the delay that jitter may add or remove.
const JITTER_FRACTION: f64 = 0.2;

/// The wait before the attempt after `failed_attempt` (counted from 1):
/// `base_s × 2^(failed_attempt−1)` seconds, moved by up to ±20 % by `jitter_unit` (in −1..=1), at
/// most one hour.
///
/// Jitter spreads the retries of jobs that failed together so they do not stampede back at once.
pub fn backoff_delay_ms(base_s: u32, failed_attempt: u32, jitter_unit: f64) -> i64 {
    let exponent = failed_attempt.saturating_sub(1).min(40);
    let nominal_ms = f64::from(base_s) * 1000.0 * 2f64.powi(exponent as i32);
    let jitter = jitter_unit.clamp(-1.0, 1.0) * JITTER_FRACTION;
    let delay = (nominal_ms * (1.0 + jitter)).min(MAX_BACKOFF_MS as f64);
    delay.max(0.0) as i64
}

/// Map any 64-bit seed to a jitter unit in −1..=1, spreading nearby seeds apart (splitmix64).
pub fn jitter_unit_from_seed(seed: u64) -> f64 {
    let mut mixed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    mixed ^= mixed >> 31;
    (mixed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_attempt_without_jitter() {
        assert_eq!(backoff_delay_ms(1, 1, 0.0), 1000);
        assert_eq!(backoff_delay_ms(1, 2, 0.0), 2000);
        assert_eq!(backoff_delay_ms(1, 3, 0.0), 4000);
        assert_eq!(backoff_delay_ms(5, 4, 0.0), 40_000);
        assert_eq!(backoff_delay_ms(0, 4, 1.0), 0);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        assert_eq!(backoff_delay_ms(10, 1, 1.0), 12_000);
        assert_eq!(backoff_delay_ms(10, 1, -1.0), 8_000);
        assert_eq!(backoff_delay_ms(10, 1, 7.0), 12_000);
        for seed in 0..10_000u64 {
            let unit = jitter_unit_from_seed(seed);
            assert!((-1.0..=1.0).contains(&unit));
            let delay = backoff_delay_ms(2, 2, unit);
            assert!((3200..=4800).contains(&delay), "{delay}");
        }
    }

    #[test]
    fn jitter_is_spread() {
        let units: Vec<f64> = (0..1000u64).map(jitter_unit_from_seed).collect();
        let below = units.iter().filter(|unit| **unit < 0.0).count();
        assert!((400..600).contains(&below), "{below}");
    }

    #[test]
    fn backoff_is_capped_at_one_hour() {
        assert_eq!(backoff_delay_ms(3600, 30, 1.0), MAX_BACKOFF_MS);
        assert_eq!(backoff_delay_ms(1, u32::MAX, 0.0), MAX_BACKOFF_MS);
    }
}
