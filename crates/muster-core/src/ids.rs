use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use crate::Timestamp;

/// A job's id: a UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub Uuid);

/// A runner's id: a UUIDv7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunnerId(pub Uuid);

macro_rules! uuid_id {
    ($name:ident) => {
        impl $name {
            /// A new id whose time part is `now`; `random_bits` fills the rest, so the caller
            /// decides where randomness comes from.
            pub fn new(now: Timestamp, random_bits: u128) -> $name {
                let millis = now.as_millis().max(0) as u128;
                // UUIDv7 layout: 48 bits of Unix milliseconds, version 7, 12 random bits,
                // variant 10, 62 random bits.
                let mut value = (millis & 0xFFFF_FFFF_FFFF) << 80;
                value |= 0x7 << 76;
                value |= (random_bits & 0xFFF) << 64;
                value |= 0b10 << 62;
                value |= (random_bits >> 12) & 0x3FFF_FFFF_FFFF_FFFF;
                $name(Uuid::from_u128(value))
            }

            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }

            pub fn from_slice(bytes: &[u8]) -> Option<$name> {
                Uuid::from_slice(bytes).ok().map($name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(text: &str) -> Result<$name, uuid::Error> {
                Uuid::parse_str(text).map($name)
            }
        }
    };
}

uuid_id!(JobId);
uuid_id!(RunnerId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_version_seven_and_sort_by_time() {
        let earlier = JobId::new(Timestamp(1_700_000_000_000), u128::MAX);
        let later = JobId::new(Timestamp(1_700_000_000_001), 0);
        assert_eq!(earlier.0.get_version_num(), 7);
        assert_eq!(later.0.get_version_num(), 7);
        assert!(earlier < later);
        let parsed: JobId = earlier.to_string().parse().expect("parse own id");
        assert_eq!(parsed, earlier);
    }
}
