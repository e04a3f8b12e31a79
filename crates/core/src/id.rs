//! Identifiers. Accounts and devices are named by their Ed25519 public key in base58 (as on
//! Solana); clusters and jobs get short random ids that people can type.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("invalid address {0:?}: expected a base58 Ed25519 public key (32 bytes)")]
    Address(String),
    #[error("invalid {kind} id {value:?}: expected {prefix}- followed by {len} characters of [a-z0-9]")]
    Short { kind: &'static str, prefix: &'static str, len: usize, value: String },
}

/// A base58-encoded Ed25519 public key: an account address or a device id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String))]
pub struct Address(String);

impl Address {
    pub fn from_public_key(key: &[u8; 32]) -> Address {
        Address(bs58::encode(key).into_string())
    }

    pub fn parse(text: &str) -> Result<Address, IdError> {
        let mut bytes = [0u8; 32];
        match bs58::decode(text).onto(&mut bytes) {
            Ok(32) => Ok(Address(text.to_owned())),
            _ => Err(IdError::Address(text.to_owned())),
        }
    }

    pub fn public_key_bytes(&self) -> [u8; 32] {
        let mut bytes = [0u8; 32];
        // Validated at construction, so decoding cannot fail.
        bs58::decode(&self.0).onto(&mut bytes).expect("address validated at construction");
        bytes
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first characters, for tables; never used as a key.
    pub fn short(&self) -> &str {
        &self.0[..self.0.len().min(8)]
    }
}

impl std::str::FromStr for Address {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Address::parse(s)
    }
}

impl TryFrom<String> for Address {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Address::parse(&value)
    }
}

impl From<Address> for String {
    fn from(value: Address) -> String {
        value.0
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const SHORT_ID_LEN: usize = 10;
const SHORT_ID_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

fn encode_short(entropy: [u8; 8]) -> String {
    let mut value = u64::from_le_bytes(entropy);
    (0..SHORT_ID_LEN)
        .map(|_| {
            let c = SHORT_ID_ALPHABET[(value % 32) as usize] as char;
            value /= 32;
            c
        })
        .collect()
}

fn parse_short(kind: &'static str, prefix: &'static str, text: &str) -> Result<String, IdError> {
    let valid = text
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|rest| rest.len() == SHORT_ID_LEN && rest.bytes().all(|b| SHORT_ID_ALPHABET.contains(&b)));
    if valid {
        Ok(text.to_owned())
    } else {
        Err(IdError::Short { kind, prefix, len: SHORT_ID_LEN, value: text.to_owned() })
    }
}

macro_rules! short_id {
    ($name:ident, $kind:literal, $prefix:literal) => {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String))]
        pub struct $name(String);

        impl $name {
            /// A new id from 8 bytes of entropy supplied by the caller (this crate has no RNG).
            pub fn from_entropy(entropy: [u8; 8]) -> $name {
                $name(format!("{}-{}", $prefix, encode_short(entropy)))
            }

            pub fn parse(text: &str) -> Result<$name, IdError> {
                parse_short($kind, $prefix, text).map($name)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                $name::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

short_id!(ClusterId, "cluster", "cl");
short_id!(JobId, "job", "job");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_round_trips_and_rejects_garbage() {
        let address = Address::from_public_key(&[7u8; 32]);
        assert_eq!(Address::parse(address.as_str()).unwrap(), address);
        assert_eq!(address.public_key_bytes(), [7u8; 32]);
        assert!(Address::parse("not base58 0OIl").is_err());
        assert!(Address::parse("3mJr7AoUXx2Wqd").is_err(), "too short for 32 bytes");
        assert!(Address::parse("").is_err());
    }

    #[test]
    fn short_ids_are_typed_and_validated() {
        let id = ClusterId::from_entropy([1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(id.as_str().starts_with("cl-"));
        assert_eq!(ClusterId::parse(id.as_str()).unwrap(), id);
        assert!(JobId::parse(id.as_str()).is_err(), "a cluster id is not a job id");
        assert!(ClusterId::parse("cl-UPPERCASE1").is_err());
        assert!(ClusterId::parse("cl-short").is_err());
        let job = JobId::from_entropy([9; 8]);
        assert_eq!(serde_json_like(&job), job.to_string());
    }

    fn serde_json_like(id: &JobId) -> String {
        String::from(id.clone())
    }
}
