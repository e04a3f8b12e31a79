//! The slashing hook: a share of a device's stake is burned for a reason (a failed proof of
//! compute, a hired lease abandoned). One transfer with an idempotent id per offence.

use herd_core::Address;
use herd_ledger::{AccountKey, Transfer, TransferKind};

use crate::app::App;

/// Burns `bps` of whatever `device` has staked; `id` names the offence (posting it twice
/// burns once), `code` says why in the ledger.
pub async fn slash(app: &App, device: &Address, id: &str, bps: u32, code: &str) {
    let vault = AccountKey::StakeVault(device.to_string());
    let staked = app.books.read(|b| b.ledger.balance(&vault, herd_core::Asset::Io)).await;
    let amount = (staked.max(0) as u128 * u128::from(bps) / 10_000) as u64;
    if amount == 0 {
        return;
    }
    let transfer = Transfer {
        id: id.to_owned(),
        debit: vault,
        credit: AccountKey::Burn,
        asset: herd_core::Asset::Io,
        amount,
        kind: TransferKind::Single,
        code: code.to_owned(),
    };
    let audit = crate::store::NewAudit::new(crate::store::audit::COORDINATOR, "stake.slash", Some(device.to_string()))
        .detail(serde_json::json!({ "offence": id, "code": code, "amount_minor": amount, "bps": bps }));
    // The id is idempotent: a second post of one offence is skipped, and so is its audit row.
    let posted = app.post(&[transfer]).await;
    let posted = match posted {
        Ok(entries) if !entries.is_empty() => app.store.audit(&audit, crate::app::now()).await.map_err(Into::into),
        other => other.map(drop),
    };
    match posted {
        Ok(()) => tracing::warn!(%device, amount, code, "stake slashed"),
        Err(error) => tracing::error!(%device, %error, code, "could not slash a stake"),
    }
}
