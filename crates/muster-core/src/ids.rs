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

/// A user token's id (not the token: it names the token in lists and revocations): a UUIDv7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserTokenId(pub Uuid);

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
uuid_id!(UserTokenId);

/// An artifact's id: the SHA-256 digest of its bytes, written `sha256:` and 64 lowercase hex
/// digits. Ids name content, so equal bytes have one id and an id can be checked against the
/// bytes it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArtifactId([u8; 32]);

/// Text that is not an artifact id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an artifact id (sha256: followed by 64 lowercase hex digits)")]
pub struct ArtifactIdError(pub String);

impl ArtifactId {
    /// What every id starts with: the digest algorithm.
    pub const PREFIX: &'static str = "sha256:";

    pub fn from_digest(digest: [u8; 32]) -> ArtifactId {
        ArtifactId(digest)
    }

    pub fn digest(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest as 64 lowercase hex digits, without the prefix.
    pub fn hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = String::with_capacity(64);
        for byte in self.0 {
            text.push(char::from(DIGITS[usize::from(byte >> 4)]));
            text.push(char::from(DIGITS[usize::from(byte & 0xF)]));
        }
        text
    }
}

impl fmt::Display for ArtifactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::PREFIX)?;
        f.write_str(&self.hex())
    }
}

impl FromStr for ArtifactId {
    type Err = ArtifactIdError;

    /// Only the canonical spelling is accepted (lowercase hex), so one artifact has exactly one
    /// id text: ids are compared and used as keys as text by clients.
    fn from_str(text: &str) -> Result<ArtifactId, ArtifactIdError> {
        let invalid = || ArtifactIdError(text.chars().take(100).collect());
        let hex = text.strip_prefix(Self::PREFIX).ok_or_else(invalid)?;
        if hex.len() != 64 {
            return Err(invalid());
        }
        let nibble = |digit: u8| match digit {
            b'0'..=b'9' => Some(digit - b'0'),
            b'a'..=b'f' => Some(digit - b'a' + 10),
            _ => None,
        };
        let mut digest = [0u8; 32];
        for (byte, pair) in digest.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            *byte = (nibble(pair[0]).ok_or_else(invalid)? << 4)
                | nibble(pair[1]).ok_or_else(invalid)?;
        }
        Ok(ArtifactId(digest))
    }
}

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

    #[test]
    fn artifact_ids_round_trip_and_only_the_canonical_spelling_parses() {
        let mut digest = [0u8; 32];
        digest[0] = 0xAB;
        digest[31] = 0x09;
        let id = ArtifactId::from_digest(digest);
        let text = id.to_string();
        assert_eq!(text.len(), 7 + 64);
        assert!(text.starts_with("sha256:ab"));
        assert!(text.ends_with("09"));
        assert_eq!(text.parse::<ArtifactId>(), Ok(id));
        for bad in [
            "",
            "sha256:",
            "ab00",
            &text[7..],
            &text.to_uppercase(),
            &format!("sha256:{}", "A".repeat(64)),
            &format!("sha256:{}", "0".repeat(63)),
            &format!("sha256:{}", "0".repeat(65)),
            &format!("sha512:{}", "0".repeat(64)),
            &format!("sha256:{}g", "0".repeat(63)),
        ] {
            assert!(bad.parse::<ArtifactId>().is_err(), "{bad:?} must not parse");
        }
    }
}
