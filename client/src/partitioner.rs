//! Which partition a record goes to: Kafka's murmur2 for keyed records, round robin otherwise.

/// Kafka's `Utils.murmur2`: 32-bit MurmurHash2 with Kafka's seed, as the Java client computes it.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    // Java's `int` arithmetic wraps; so does this on u32, with identical bits.
    let mut h: u32 = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's `Utils.toPositive`: clears the sign bit (not `abs`, which overflows on `i32::MIN`).
pub fn to_positive(n: i32) -> i32 {
    n & 0x7fff_ffff
}

/// The partition the Java client's default partitioner picks for a keyed record.
pub fn partition_for_key(key: &[u8], partitions: usize) -> i32 {
    debug_assert!(partitions > 0);
    let partitions = partitions.clamp(1, i32::MAX as usize) as i32;
    to_positive(murmur2(key)) % partitions
}

/// Spreads keyless records over partitions in turn.
#[derive(Debug, Default, Clone)]
pub struct RoundRobin {
    next: usize,
}

impl RoundRobin {
    pub fn next_partition(&mut self, partitions: usize) -> i32 {
        let partitions = partitions.max(1);
        let partition = self.next % partitions;
        self.next = self.next.wrapping_add(1);
        partition as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from Kafka's own `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_kafka_utils_test() {
        assert_eq!(murmur2(b"21"), -973_932_308);
        assert_eq!(murmur2(b"foobar"), -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985_981_536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1_486_304_829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58_897_971
        );
        assert_eq!(murmur2(b"abc"), 479_470_107);
    }

    /// Computed independently (Python transcription of the Java code), covering every tail length.
    #[test]
    fn murmur2_short_inputs_and_tails() {
        assert_eq!(murmur2(b""), 275_646_681);
        assert_eq!(murmur2(b"a"), -1_563_381_124);
        assert_eq!(murmur2(b"hello"), 2_132_663_229);
        assert_eq!(murmur2(b"kafka"), -798_503_068);
    }

    #[test]
    fn to_positive_clears_the_sign_bit() {
        assert_eq!(to_positive(-973_932_308), 1_173_551_340);
        assert_eq!(to_positive(i32::MIN), 0);
        assert_eq!(to_positive(-1), i32::MAX);
        assert_eq!(to_positive(5), 5);
    }

    #[test]
    fn keys_land_where_the_java_client_puts_them() {
        // toPositive(-973932308) = 1173551340, which is 0 mod 6 and 3 mod 7.
        assert_eq!(partition_for_key(b"21", 6), 0);
        assert_eq!(partition_for_key(b"21", 7), 3);
        assert_eq!(partition_for_key(b"abc", 3), 0);
        assert_eq!(partition_for_key(b"abc", 4), 3);
        assert_eq!(partition_for_key(b"anything", 1), 0);
    }

    #[test]
    fn round_robin_cycles() {
        let mut rr = RoundRobin::default();
        let picks: Vec<i32> = (0..7).map(|_| rr.next_partition(3)).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2, 0]);
    }
}
