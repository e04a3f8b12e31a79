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

/// Signed by the ledger key (the operator) to slash a device's stake. `id` is the operator's
/// own unique name for this slash: each is carried out once, a second use of the same id is
/// refused, so a captured request cannot burn more stake.
pub fn slash_message(id: &str, device: &str, reason: &str, amount: &str) -> Vec<u8> {
    format!("herd-slash-v2\nid={id}\ndevice={device}\nreason={reason}\namount={amount}").into_bytes()
}

/// The header an operator request carries: `X-Herd-Operator: <at_ms>.<id>.<signature>`.
pub const OPERATOR_HEADER: &str = "x-herd-operator";

/// Signed by the ledger key (the operator) over one HTTP request to an operator endpoint: the
/// method, the path with its query, the body's SHA-256, when it was signed and a one-time id.
/// The coordinator accepts each id once and only for a few minutes after `at_ms`.
pub fn operator_request_message(
    method: &str,
    path_and_query: &str,
    body_sha256: &str,
    at_ms: i64,
    id: &str,
) -> Vec<u8> {
    format!("herd-operator-request-v1\nmethod={method}\npath={path_and_query}\nbody-sha256={body_sha256}\nat={at_ms}\nid={id}")
        .into_bytes()
}
