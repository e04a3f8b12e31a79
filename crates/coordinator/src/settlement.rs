//! Settling withdrawals on Solana. A payout is a pending ledger transfer to the outside world
//! plus a Solana Pay transfer request; it settles when a `Settlement` accepts evidence that
//! the transfer happened. The only implementation today is manual: the operator (the holder of
//! the ledger key) confirms with the transaction's signature. An on-chain watcher that finds
//! the transfer by its reference can replace it without touching anything else.

use ed25519_dalek::VerifyingKey;
use herd_core::Address;
use herd_proto::api::Payout;

use crate::auth::verify_signature;

pub trait Settlement: Send + Sync {
    /// Checks that `tx_signature` settles `payout`; `operator_signature` is whatever
    /// authorisation the implementation requires.
    fn accept(&self, payout: &Payout, tx_signature: &str, operator_signature: &str) -> Result<(), String>;
}

/// The operator confirms by signing (with the ledger key) the payout id and the Solana
/// transaction signature it paid with.
pub struct ManualConfirmation {
    pub operator: Address,
}

impl Settlement for ManualConfirmation {
    fn accept(&self, payout: &Payout, tx_signature: &str, operator_signature: &str) -> Result<(), String> {
        let mut bytes = [0u8; 64];
        if !matches!(bs58::decode(tx_signature).onto(&mut bytes), Ok(64)) {
            return Err("tx_signature must be a base58 Solana transaction signature (64 bytes)".into());
        }
        let message = herd_proto::signing::payout_confirmation_message(&payout.id, tx_signature);
        verify_signature(&self.operator, &message, operator_signature)
            .map_err(|e| format!("operator signature refused (sign with the ledger key): {e}"))
    }
}

/// A Solana address: base58 of a valid Ed25519 public key.
pub fn parse_solana_address(text: &str) -> Result<Address, String> {
    let address = Address::parse(text).map_err(|e| e.to_string())?;
    VerifyingKey::from_bytes(&address.public_key_bytes())
        .map_err(|_| format!("{text:?} is not a valid Ed25519 public key (a Solana address)"))?;
    Ok(address)
}

fn decimal(minor: u64) -> String {
    let text = format!("{}.{:06}", minor / 1_000_000, minor % 1_000_000);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// `solana:<recipient>?amount=…&spl-token=<mint>&reference=<ref>&label=herd&message=…`
pub fn solana_pay_url(recipient: &str, amount_minor: u64, mint: &str, reference: &str, payout_id: &str) -> String {
    format!(
        "solana:{recipient}?amount={}&spl-token={mint}&reference={reference}&label=herd&message=herd%20payout%20{payout_id}",
        decimal(amount_minor)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solana_pay_urls_carry_exact_decimal_amounts() {
        let url = solana_pay_url("Rcpt", 12_500_000, "Mint", "Ref", "po-1");
        assert_eq!(url, "solana:Rcpt?amount=12.5&spl-token=Mint&reference=Ref&label=herd&message=herd%20payout%20po-1");
        assert!(solana_pay_url("R", 1, "M", "X", "p").contains("amount=0.000001&"));
        assert!(solana_pay_url("R", 3_000_000, "M", "X", "p").contains("amount=3&"));
    }

    #[test]
    fn solana_addresses_are_validated() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let address = bs58::encode(key.verifying_key().as_bytes()).into_string();
        assert!(parse_solana_address(&address).is_ok());
        assert!(parse_solana_address("not-an-address").is_err());
        assert!(parse_solana_address("11111111111111111111111111111112").is_err(), "too short");
    }
}
