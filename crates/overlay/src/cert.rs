//! Nebula's v1 certificate (what Nebula 1.6 reads): a protobuf `RawNebulaCertificate`
//! holding the details and an Ed25519 signature by the CA over the protobuf encoding of the
//! details. Nebula re-encodes the details it parsed to check the signature, so the encoding
//! here must be the canonical proto3 one Go writes: fields in number order, zero values left
//! out, repeated integers packed. The fingerprint (what a blocklist names) is the SHA-256 of
//! the whole encoded certificate.

use std::net::Ipv4Addr;

use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

pub const CERT_BANNER: &str = "NEBULA CERTIFICATE";
pub const X25519_PRIVATE_BANNER: &str = "NEBULA X25519 PRIVATE KEY";
pub const X25519_PUBLIC_BANNER: &str = "NEBULA X25519 PUBLIC KEY";
pub const ED25519_PRIVATE_BANNER: &str = "NEBULA ED25519 PRIVATE KEY";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertificateError {
    #[error("not a PEM block of type {0}")]
    NotPem(&'static str),
    #[error("malformed certificate: {0}")]
    Malformed(&'static str),
    #[error("the certificate's signature does not match its issuer")]
    BadSignature,
}

/// What a certificate says. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Details {
    pub name: String,
    /// The host's overlay address and the network's prefix length (the TUN's route).
    pub ips: Vec<(Ipv4Addr, u8)>,
    pub groups: Vec<String>,
    pub not_before: i64,
    pub not_after: i64,
    /// Ed25519 for a CA, X25519 for a host.
    pub public_key: [u8; 32],
    pub is_ca: bool,
    /// The issuing CA's fingerprint; None for a self-signed CA.
    pub issuer: Option<[u8; 32]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    pub details: Details,
    pub signature: [u8; 64],
}

impl Details {
    /// The protobuf encoding of `RawNebulaCertificateDetails`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        if !self.name.is_empty() {
            put_bytes(&mut out, 1, self.name.as_bytes());
        }
        if !self.ips.is_empty() {
            let mut packed = Vec::new();
            for (ip, prefix) in &self.ips {
                put_varint(&mut packed, u64::from(u32::from(*ip)));
                put_varint(&mut packed, u64::from(mask(*prefix)));
            }
            put_bytes(&mut out, 2, &packed);
        }
        for group in &self.groups {
            put_bytes(&mut out, 4, group.as_bytes());
        }
        if self.not_before != 0 {
            put_key(&mut out, 5, 0);
            put_varint(&mut out, self.not_before as u64);
        }
        if self.not_after != 0 {
            put_key(&mut out, 6, 0);
            put_varint(&mut out, self.not_after as u64);
        }
        put_bytes(&mut out, 7, &self.public_key);
        if self.is_ca {
            put_key(&mut out, 8, 0);
            put_varint(&mut out, 1);
        }
        if let Some(issuer) = &self.issuer {
            put_bytes(&mut out, 9, issuer);
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<Details, CertificateError> {
        let mut details = Details {
            name: String::new(),
            ips: Vec::new(),
            groups: Vec::new(),
            not_before: 0,
            not_after: 0,
            public_key: [0; 32],
            is_ca: false,
            issuer: None,
        };
        let mut reader = Reader(bytes);
        while let Some((field, value)) = reader.field()? {
            match (field, value) {
                (1, Value::Bytes(b)) => {
                    details.name = String::from_utf8(b.to_vec()).map_err(|_| CertificateError::Malformed("name"))?
                }
                (2, Value::Bytes(b)) => {
                    let mut packed = Reader(b);
                    let mut words = Vec::new();
                    while !packed.0.is_empty() {
                        words.push(packed.varint()? as u32);
                    }
                    if words.len() % 2 != 0 {
                        return Err(CertificateError::Malformed("odd number of ip words"));
                    }
                    for pair in words.chunks(2) {
                        details.ips.push((Ipv4Addr::from(pair[0]), pair[1].leading_ones() as u8));
                    }
                }
                (4, Value::Bytes(b)) => details
                    .groups
                    .push(String::from_utf8(b.to_vec()).map_err(|_| CertificateError::Malformed("group"))?),
                (5, Value::Varint(v)) => details.not_before = v as i64,
                (6, Value::Varint(v)) => details.not_after = v as i64,
                (7, Value::Bytes(b)) => {
                    details.public_key = b.try_into().map_err(|_| CertificateError::Malformed("public key"))?
                }
                (8, Value::Varint(v)) => details.is_ca = v != 0,
                (9, Value::Bytes(b)) if !b.is_empty() => {
                    details.issuer = Some(b.try_into().map_err(|_| CertificateError::Malformed("issuer"))?)
                }
                _ => {} // subnets (3) and later fields: not used by herd
            }
        }
        Ok(details)
    }
}

impl Certificate {
    /// Signs `details` with the CA's key.
    pub fn sign(details: Details, ca_key: &SigningKey) -> Certificate {
        let signature = ca_key.sign(&details.encode()).to_bytes();
        Certificate { details, signature }
    }

    /// The protobuf encoding of `RawNebulaCertificate`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(200);
        put_bytes(&mut out, 1, &self.details.encode());
        put_bytes(&mut out, 2, &self.signature);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Certificate, CertificateError> {
        let mut reader = Reader(bytes);
        let (mut details, mut signature) = (None, None);
        while let Some((field, value)) = reader.field()? {
            match (field, value) {
                (1, Value::Bytes(b)) => details = Some(Details::decode(b)?),
                (2, Value::Bytes(b)) => {
                    signature = Some(b.try_into().map_err(|_| CertificateError::Malformed("signature"))?)
                }
                _ => {}
            }
        }
        match (details, signature) {
            (Some(details), Some(signature)) => Ok(Certificate { details, signature }),
            _ => Err(CertificateError::Malformed("details or signature missing")),
        }
    }

    pub fn to_pem(&self) -> String {
        pem_encode(CERT_BANNER, &self.encode())
    }

    pub fn from_pem(text: &str) -> Result<Certificate, CertificateError> {
        Certificate::decode(&pem_decode(CERT_BANNER, text)?)
    }

    /// SHA-256 of the encoded certificate, hex: what `pki.blocklist` lists.
    pub fn fingerprint(&self) -> String {
        herd_core::hex::encode(&Sha256::digest(self.encode()))
    }

    pub fn fingerprint_bytes(&self) -> [u8; 32] {
        Sha256::digest(self.encode()).into()
    }

    /// Checks the signature against the issuer's Ed25519 public key.
    pub fn verify(&self, issuer: &[u8; 32]) -> Result<(), CertificateError> {
        let key = VerifyingKey::from_bytes(issuer).map_err(|_| CertificateError::BadSignature)?;
        key.verify(&self.details.encode(), &Signature::from_bytes(&self.signature))
            .map_err(|_| CertificateError::BadSignature)
    }
}

/// A host's X25519 key pair: the secret never leaves the machine that made it.
pub struct HostKey {
    secret: [u8; 32],
}

impl HostKey {
    pub fn generate() -> HostKey {
        let mut secret = [0u8; 32];
        rand::Rng::fill(&mut rand::rngs::OsRng, &mut secret);
        HostKey { secret }
    }

    pub fn public(&self) -> [u8; 32] {
        curve25519_dalek::MontgomeryPoint::mul_base_clamped(self.secret).to_bytes()
    }

    /// The PEM `pki.key` holds (write it only to files of mode 0600).
    pub fn private_pem(&self) -> String {
        pem_encode(X25519_PRIVATE_BANNER, &self.secret)
    }
}

impl std::fmt::Debug for HostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostKey({})", herd_core::hex::encode(&self.public()))
    }
}

/// The netmask of a prefix length.
pub fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

pub fn pem_encode(banner: &str, bytes: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = format!("-----BEGIN {banner}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {banner}-----\n"));
    out
}

pub fn pem_decode(banner: &'static str, text: &str) -> Result<Vec<u8>, CertificateError> {
    let begin = format!("-----BEGIN {banner}-----");
    let end = format!("-----END {banner}-----");
    let start = text.find(&begin).ok_or(CertificateError::NotPem(banner))? + begin.len();
    let stop = text[start..].find(&end).ok_or(CertificateError::NotPem(banner))? + start;
    let body: String = text[start..stop].chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(body).map_err(|_| CertificateError::NotPem(banner))
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_key(out: &mut Vec<u8>, field: u32, wire_type: u32) {
    put_varint(out, u64::from(field << 3 | wire_type));
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(out, field, 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, CertificateError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.0.split_first().ok_or(CertificateError::Malformed("truncated varint"))?;
            self.0 = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(CertificateError::Malformed("varint too long"))
    }

    fn field(&mut self) -> Result<Option<(u64, Value<'a>)>, CertificateError> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            2 => {
                let len = self.varint()? as usize;
                if len > self.0.len() {
                    return Err(CertificateError::Malformed("truncated field"));
                }
                let (bytes, rest) = self.0.split_at(len);
                self.0 = rest;
                Value::Bytes(bytes)
            }
            _ => return Err(CertificateError::Malformed("unexpected wire type")),
        };
        Ok(Some((key >> 3, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(ca: &SigningKey) -> Certificate {
        let details = Details {
            name: "device".into(),
            ips: vec![(Ipv4Addr::new(100, 64, 3, 2), 10)],
            groups: vec!["lease-abc".into()],
            not_before: 1_700_000_000,
            not_after: 1_700_003_600,
            public_key: HostKey::generate().public(),
            is_ca: false,
            issuer: Some([7; 32]),
        };
        Certificate::sign(details, ca)
    }

    #[test]
    fn a_certificate_survives_pem_and_its_signature_checks() {
        let ca = SigningKey::from_bytes(&[9; 32]);
        let cert = host(&ca);
        let back = Certificate::from_pem(&cert.to_pem()).unwrap();
        assert_eq!(back, cert);
        back.verify(ca.verifying_key().as_bytes()).unwrap();
        let mut forged = back.clone();
        forged.details.groups = vec!["lease-other".into()];
        assert_eq!(forged.verify(ca.verifying_key().as_bytes()), Err(CertificateError::BadSignature));
        assert_ne!(forged.fingerprint(), cert.fingerprint());
    }

    #[test]
    fn garbage_is_refused_not_a_panic() {
        for bytes in [&b""[..], &[0x0a, 0xff], &[0x0a, 0x02, 0x3a], &[0xff; 12]] {
            assert!(Certificate::decode(bytes).is_err());
        }
        assert_eq!(Certificate::from_pem("nope"), Err(CertificateError::NotPem(CERT_BANNER)));
    }

    #[test]
    fn masks() {
        assert_eq!(mask(10), 0xffc0_0000);
        assert_eq!(mask(32), u32::MAX);
        assert_eq!(mask(0), 0);
    }
}
