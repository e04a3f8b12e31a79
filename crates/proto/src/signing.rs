//! The exact bytes each signature covers. Every message is domain-separated, so a signature
//! made for one purpose can never be replayed for another.

/// Signed by an account key to prove ownership when registering or asking for an API key.
pub fn account_challenge_message(purpose: &str, address: &str, nonce: &str) -> Vec<u8> {
    format!("herd-account-v1\npurpose={purpose}\naddress={address}\nnonce={nonce}").into_bytes()
}

/// Signed by a device key over its hello payload (JSON text, which carries the nonce).
pub fn worker_hello_message(payload: &str) -> Vec<u8> {
    let mut message = b"herd-worker-hello-v1\n".to_vec();
    message.extend_from_slice(payload.as_bytes());
    message
}

/// Signed by an owner's account key to consent to a device joining their account.
pub fn device_endorsement_message(owner: &str, device_key: &str) -> Vec<u8> {
    format!("herd-device-endorsement-v1\nowner={owner}\ndevice={device_key}").into_bytes()
}

/// Purposes for `account_challenge_message`.
pub const PURPOSE_REGISTER: &str = "register";
pub const PURPOSE_LOGIN: &str = "login";
/// A one-time link that signs a browser in to the consoles.
pub const PURPOSE_BROWSER: &str = "browser";

/// Signed by the coordinator's ledger key (the operator) to confirm a payout was sent.
pub fn payout_confirmation_message(payout_id: &str, tx_signature: &str) -> Vec<u8> {
    format!("herd-payout-confirm-v1\n{payout_id}\n{tx_signature}").into_bytes()
}

/// Signed by the ledger key (the operator) to slash a device's stake.
pub fn slash_message(device: &str, reason: &str, amount: &str) -> Vec<u8> {
    format!("herd-slash-v1\n{device}\n{reason}\n{amount}").into_bytes()
}
