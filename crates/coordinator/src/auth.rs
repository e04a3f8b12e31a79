//! Authentication: account and device signatures (Ed25519), API keys (random, stored hashed),
//! and the `Caller` extractor every customer endpoint takes.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use ed25519_dalek::{Signature, VerifyingKey};
use herd_core::Address;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::app::App;
use crate::error::ApiError;

pub const API_KEY_PREFIX: &str = "herd_";

/// 32 random bytes in base58: nonces, API keys.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    bs58::encode(bytes).into_string()
}

pub fn random_entropy() -> [u8; 8] {
    let mut bytes = [0u8; 8];
    #[cfg(test)]
    {
        use rand::Rng;
        let simulated = crate::app::simulation::ENTROPY
            .with(|entropy| entropy.borrow_mut().as_mut().map(|rng| rng.gen::<[u8; 8]>()));
        if let Some(simulated) = simulated {
            return simulated;
        }
    }
    OsRng.fill_bytes(&mut bytes);
    bytes
}

/// A new API key and the hash that is stored. A 256-bit random key needs no slow hash:
/// SHA-256 already makes a leaked table useless.
pub fn new_api_key() -> (String, String) {
    let key = format!("{API_KEY_PREFIX}{}", random_token());
    let hash = hash_api_key(&key);
    (key, hash)
}

pub fn hash_api_key(key: &str) -> String {
    sha256_hex(key)
}

fn sha256_hex(text: &str) -> String {
    herd_core::hex::encode(&Sha256::digest(text.as_bytes()))
}

/// The stored form of a one-time browser sign-in code or a session token: 256 random bits
/// need no slow hash.
pub fn hash_login_code(code: &str) -> String {
    sha256_hex(code)
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

/// The secret in a Ray cluster's access path (`/ray/{cluster}/{secret}`): 128 bits of HMAC
/// over the cluster id, under a key derived from the coordinator's ledger key. Only the
/// owner is shown it; it is checked in constant time.
pub fn ray_access_secret(app: &App, cluster: &herd_core::ClusterId) -> String {
    let key = app.books.derive_secret("ray-access");
    herd_core::hex::encode(&hmac_sha256(&key, cluster.as_str().as_bytes())[..16])
}

/// Compares two secrets without leaking where they differ.
pub fn same_secret(given: &str, expected: &str) -> bool {
    given.len() == expected.len() && given.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

const PAIRING_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// A pairing code people can type: 10 characters (50 bits) as `xxxxx-xxxxx`. Single use and
/// short-lived, so guessing one is hopeless.
pub fn new_pairing_code() -> String {
    let mut bytes = [0u8; 10];
    OsRng.fill_bytes(&mut bytes);
    let chars: String = bytes.iter().map(|b| PAIRING_ALPHABET[(b % 32) as usize] as char).collect();
    format!("{}-{}", &chars[..5], &chars[5..])
}

/// The stored form of a pairing code, whatever case or dashes it was typed with.
pub fn hash_pairing_code(code: &str) -> String {
    let normalised: String =
        code.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect();
    sha256_hex(&normalised)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature is not a base58 Ed25519 signature (64 bytes)")]
    Malformed,
    #[error("the address is not a valid Ed25519 public key")]
    BadKey,
    #[error("signature does not verify against the address")]
    Mismatch,
}

/// Strict Ed25519 verification (rejects malleable and small-order forms).
pub fn verify_signature(signer: &Address, message: &[u8], signature_b58: &str) -> Result<(), SignatureError> {
    let mut bytes = [0u8; 64];
    match bs58::decode(signature_b58).onto(&mut bytes) {
        Ok(64) => {}
        _ => return Err(SignatureError::Malformed),
    }
    let key = VerifyingKey::from_bytes(&signer.public_key_bytes()).map_err(|_| SignatureError::BadKey)?;
    key.verify_strict(message, &Signature::from_bytes(&bytes)).map_err(|_| SignatureError::Mismatch)
}

/// The authenticated account behind a request (`Authorization: Bearer herd_…`).
#[derive(Debug, Clone)]
pub struct Caller(pub Address);

impl FromRequestParts<App> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized(
                "missing API key: send Authorization: Bearer <key> (get one with `herd account create`)",
            )
        })?;
        let key = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .filter(|k| k.starts_with(API_KEY_PREFIX) && k.len() <= 128)
            .ok_or_else(|| ApiError::unauthorized("malformed Authorization header: expected `Bearer herd_…`"))?;
        match app.store.address_for_api_key(&hash_api_key(key)).await? {
            Some(address) => Ok(Caller(address)),
            None => Err(ApiError::unauthorized("unknown API key")),
        }
    }
}

/// The caller on public endpoints: anonymous without an Authorization header; a header that
/// is present must still be valid (a bad key is reported, not silently ignored).
#[derive(Debug, Clone)]
pub struct MaybeCaller(pub Option<Address>);

impl FromRequestParts<App> for MaybeCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        if !parts.headers.contains_key(AUTHORIZATION) {
            return Ok(MaybeCaller(None));
        }
        Caller::from_request_parts(parts, app).await.map(|Caller(address)| MaybeCaller(Some(address)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2: key "Jefe".
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(herd_core::hex::encode(&mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("abc", "ab"));
    }

    #[test]
    fn signatures_verify_only_for_their_key_and_message() {
        let key = SigningKey::generate(&mut OsRng);
        let address = Address::from_public_key(key.verifying_key().as_bytes());
        let signature = bs58::encode(key.sign(b"hello").to_bytes()).into_string();
        assert_eq!(verify_signature(&address, b"hello", &signature), Ok(()));
        assert_eq!(verify_signature(&address, b"hellO", &signature), Err(SignatureError::Mismatch));
        let other = SigningKey::generate(&mut OsRng);
        let other = Address::from_public_key(other.verifying_key().as_bytes());
        assert_eq!(verify_signature(&other, b"hello", &signature), Err(SignatureError::Mismatch));
        assert_eq!(verify_signature(&address, b"hello", "abc"), Err(SignatureError::Malformed));
    }

    #[test]
    fn pairing_codes_are_typable_and_hash_the_same_however_typed() {
        let code = new_pairing_code();
        assert_eq!(code.len(), 11);
        assert_eq!(hash_pairing_code(&code), hash_pairing_code(&code.to_uppercase().replace('-', " ")));
        assert_ne!(new_pairing_code(), code);
    }

    #[test]
    fn api_keys_are_unique_and_hashed() {
        let (a, hash_a) = new_api_key();
        let (b, _) = new_api_key();
        assert_ne!(a, b);
        assert!(a.starts_with(API_KEY_PREFIX));
        assert_eq!(hash_a, hash_api_key(&a));
        assert_eq!(hash_a.len(), 64);
        assert!(!hash_a.contains(&a));
    }
}
