//! Wallets (balances, the devnet faucet, history) and the public ledger (head and journal).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use herd_core::money::parse_usd;
use herd_core::Asset;
use herd_ledger::{AccountKey, Transfer, TransferKind};
use herd_proto::api::{
    ConfirmPayout, CreditsMinted, Deposit, ErrorBody, JournalEntry, LedgerHead, MintCredits, Payout, RewardBlock,
    WalletBalance, Withdraw,
};
use serde::Deserialize;

use crate::app::{now, App};
use crate::auth::{random_token, Caller};
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult};
use crate::rate_limit::Origin;
use crate::settlement::{parse_solana_address, solana_pay_url, ManualConfirmation, Settlement};
use crate::store::NewAudit;
use crate::store::SignedEntry;

/// The most one faucet deposit may mint (minor units: 100,000.000000).
const FAUCET_MAX: u64 = 100_000_000_000;
const PAGE_MAX: u32 = 1000;

fn entry_view(signed: SignedEntry) -> JournalEntry {
    let SignedEntry { entry, signature } = signed;
    JournalEntry {
        seq: entry.seq,
        at_ms: entry.at_ms,
        transfer: serde_json::to_value(&entry.transfer).expect("transfers serialise"),
        prev_hash: entry.prev_hash,
        hash: entry.hash,
        signature,
    }
}

fn clamp_i64(value: i128) -> i64 {
    value.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// The caller's balances per asset.
#[utoipa::path(get, path = "/v1/wallet", security(("api_key" = [])),
    responses((status = 200, body = Vec<WalletBalance>), (status = 401, body = ErrorBody)))]
pub async fn balance(State(app): State<App>, Caller(owner): Caller) -> ApiResult<Json<Vec<WalletBalance>>> {
    Ok(Json(balances(&app, &owner).await))
}

/// An account's balances per asset, from the books.
pub async fn balances(app: &App, owner: &herd_core::Address) -> Vec<WalletBalance> {
    let key = AccountKey::User(owner.to_string());
    app.books
        .read(|books| {
            Asset::ALL
                .into_iter()
                .map(|asset| {
                    let account = books.ledger.account(&key, asset);
                    WalletBalance {
                        asset,
                        balance: clamp_i64(account.balance()),
                        held: account.debits_pending.min(i64::MAX as u64) as i64,
                        available: clamp_i64(account.available()),
                    }
                })
                .collect()
        })
        .await
}

/// Mints test funds to the caller — only on a development network (`--faucet`).
#[utoipa::path(post, path = "/v1/wallet/deposit", request_body = Deposit, security(("api_key" = [])),
    responses((status = 201, body = JournalEntry), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn deposit(
    State(app): State<App>,
    Caller(owner): Caller,
    Origin(origin): Origin,
    ApiJson(request): ApiJson<Deposit>,
) -> ApiResult<(StatusCode, Json<JournalEntry>)> {
    if !app.config.faucet {
        return Err(ApiError::forbidden(
            "this network has no faucet: deposits arrive from the chain (devnets run the coordinator with --faucet)",
        ));
    }
    let amount = parse_usd(&request.amount).map_err(ApiError::bad_request)? as u64;
    if amount > FAUCET_MAX {
        return Err(ApiError::bad_request("a faucet deposit is at most 100000"));
    }
    let id = match request.id {
        Some(id) if id.is_empty() || id.len() > 64 => return Err(ApiError::bad_request("id must be 1..=64 bytes")),
        Some(id) => format!("faucet:{owner}:{id}"),
        None => format!("faucet:{}", random_token()),
    };
    let transfer = Transfer {
        id,
        debit: AccountKey::Issuance,
        credit: AccountKey::User(owner.to_string()),
        asset: request.asset,
        amount,
        kind: TransferKind::Single,
        code: "faucet".into(),
    };
    let audit = NewAudit::new(owner.as_str(), "wallet.deposit", Some(owner.to_string()))
        .detail(serde_json::json!({ "transfer": transfer.id, "asset": request.asset, "amount": request.amount }))
        .origin(origin);
    let entries = app.post_audited(std::slice::from_ref(&transfer), audit).await?;
    let entry = match entries.into_iter().next() {
        Some(entry) => entry,
        // A retry: the original entry is the answer.
        None => app
            .store
            .journal_of(&transfer.credit, PAGE_MAX)
            .await?
            .into_iter()
            .find(|e| e.entry.transfer.id == transfer.id)
            .ok_or_else(|| ApiError::not_found("the original deposit is not in the journal"))?,
    };
    Ok((StatusCode::CREATED, Json(entry_view(entry))))
}

const PAYOUT_TTL_MS: i64 = 7 * 24 * 3_600_000;

/// Withdraws to a Solana address: the amount is held until the operator confirms the Solana
/// transfer (answered with the Solana Pay request to make), and released if unconfirmed in 7 days.
#[utoipa::path(post, path = "/v1/wallet/withdraw", request_body = Withdraw, security(("api_key" = [])),
    responses((status = 201, body = Payout), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn withdraw(
    State(app): State<App>,
    Caller(owner): Caller,
    Origin(origin): Origin,
    ApiJson(request): ApiJson<Withdraw>,
) -> ApiResult<(StatusCode, Json<Payout>)> {
    let mint = match request.asset {
        Asset::Usdc => app.config.usdc_mint.clone(),
        Asset::Io => app.config.io_mint.clone(),
        Asset::Credits => {
            return Err(ApiError::unprocessable("credits stay on herd and cannot be withdrawn; withdraw usdc or io"))
        }
    };
    let recipient = parse_solana_address(&request.to).map_err(ApiError::bad_request)?;
    let amount = parse_usd(&request.amount).map_err(ApiError::bad_request)? as u64;
    let id = format!("po-{}", &random_token()[..12]);
    let reference = random_token();
    let at = now();
    let transfer = Transfer {
        id: format!("payout:{id}"),
        debit: AccountKey::User(owner.to_string()),
        credit: AccountKey::External,
        asset: request.asset,
        amount,
        kind: TransferKind::Pending { expires_at_ms: at.0 + PAYOUT_TTL_MS },
        code: "payout".into(),
    };
    let audit = NewAudit::new(owner.as_str(), "payout.request", Some(id.clone()))
        .detail(serde_json::json!({ "asset": request.asset, "amount": request.amount, "to": recipient.as_str() }))
        .origin(origin);
    app.post_audited(&[transfer], audit).await?;
    let payout = Payout {
        url: solana_pay_url(recipient.as_str(), amount, &mint, &reference, &id),
        id,
        owner,
        asset: request.asset,
        amount: amount as i64,
        recipient: recipient.to_string(),
        state: "pending".into(),
        tx_signature: None,
        created_at: at,
        settled_at: None,
    };
    app.store.insert_payout(&payout, &reference).await?;
    Ok((StatusCode::CREATED, Json(payout)))
}

/// Burns IO from the caller's wallet and mints credits (USD-pegged) at the oracle price.
#[utoipa::path(post, path = "/v1/wallet/credits", request_body = MintCredits, security(("api_key" = [])),
    responses((status = 201, body = CreditsMinted), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn mint_credits(
    State(app): State<App>,
    Caller(owner): Caller,
    Origin(origin): Origin,
    ApiJson(request): ApiJson<MintCredits>,
) -> ApiResult<(StatusCode, Json<CreditsMinted>)> {
    let io = parse_usd(&request.io).map_err(ApiError::bad_request)? as u64;
    let price = app.oracle.io_price_micros();
    let credits = (u128::from(io) * price.max(0) as u128 / 1_000_000).min(u128::from(u64::MAX)) as u64;
    if credits == 0 {
        return Err(ApiError::bad_request("too little IO to mint a credit unit"));
    }
    let tag = random_token();
    let user = AccountKey::User(owner.to_string());
    let batch = [
        Transfer {
            id: format!("credits-burn:{tag}"),
            debit: user.clone(),
            credit: AccountKey::Burn,
            asset: Asset::Io,
            amount: io,
            kind: TransferKind::Single,
            code: "burn-for-credits".into(),
        },
        Transfer {
            id: format!("credits-mint:{tag}"),
            debit: AccountKey::Issuance,
            credit: user,
            asset: Asset::Credits,
            amount: credits,
            kind: TransferKind::Single,
            code: "credits-minted".into(),
        },
    ];
    let audit = NewAudit::new(owner.as_str(), "wallet.mint_credits", Some(owner.to_string()))
        .detail(serde_json::json!({ "io": request.io, "credits_minor": credits, "io_price_micros": price }))
        .origin(origin);
    app.post_audited(&batch, audit).await?;
    let minted = CreditsMinted { io_burned: io as i64, credits_minted: credits as i64, io_price_micros: price };
    Ok((StatusCode::CREATED, Json(minted)))
}

/// The caller's payouts, newest first.
#[utoipa::path(get, path = "/v1/wallet/payouts", security(("api_key" = [])),
    responses((status = 200, body = Vec<Payout>), (status = 401, body = ErrorBody)))]
pub async fn payouts(State(app): State<App>, Caller(owner): Caller) -> ApiResult<Json<Vec<Payout>>> {
    Ok(Json(app.store.payouts_of(&owner, 200).await?))
}

/// The operator confirms a payout was sent (manual settlement): the held amount leaves.
#[utoipa::path(post, path = "/v1/payouts/{id}/confirm", request_body = ConfirmPayout, params(("id" = String, Path)),
    responses((status = 200, body = Payout), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn confirm(
    State(app): State<App>,
    Path(id): Path<String>,
    Origin(origin): Origin,
    ApiJson(request): ApiJson<ConfirmPayout>,
) -> ApiResult<Json<Payout>> {
    let payout = app.store.payout(&id).await?.ok_or_else(|| ApiError::not_found(format!("no payout {id}")))?;
    if payout.state != "pending" {
        return Err(ApiError::conflict(format!("payout {id} is already {}", payout.state)));
    }
    let settlement = ManualConfirmation { operator: app.books.public_key.clone() };
    settlement.accept(&payout, &request.tx_signature, &request.operator_signature).map_err(ApiError::forbidden)?;
    let post = Transfer {
        id: format!("payout-sent:{id}"),
        debit: AccountKey::User(payout.owner.to_string()),
        credit: AccountKey::External,
        asset: payout.asset,
        amount: payout.amount as u64,
        kind: TransferKind::Post { pending_id: format!("payout:{id}") },
        code: "payout-sent".into(),
    };
    let audit = NewAudit::new(crate::store::audit::OPERATOR, "payout.confirm", Some(id.clone()))
        .detail(
            serde_json::json!({ "tx_signature": request.tx_signature, "amount": payout.amount, "asset": payout.asset }),
        )
        .origin(origin)
        .signed(&request.operator_signature, Some(format!("payout-confirm:{id}")));
    app.post_once(&[post], &[crate::store::Alongside::Audit(audit)]).await?;
    app.store.settle_payout(&id, &request.tx_signature, now()).await?;
    Ok(Json(app.store.payout(&id).await?.ok_or_else(|| ApiError::not_found("payout vanished"))?))
}

/// Journal entries that moved the caller's money, newest first (at most 200).
#[utoipa::path(get, path = "/v1/wallet/history", security(("api_key" = [])),
    responses((status = 200, body = Vec<JournalEntry>), (status = 401, body = ErrorBody)))]
pub async fn history(State(app): State<App>, Caller(owner): Caller) -> ApiResult<Json<Vec<JournalEntry>>> {
    let entries = app.store.journal_of(&AccountKey::User(owner.to_string()), 200).await?;
    Ok(Json(entries.into_iter().map(entry_view).collect()))
}

/// The chain head and the key that signs every entry (public).
#[utoipa::path(get, path = "/v1/ledger/head", responses((status = 200, body = LedgerHead)))]
pub async fn head(State(app): State<App>) -> Json<LedgerHead> {
    let chain = app.books.head().await;
    Json(LedgerHead { entries: chain.seq, head: chain.head, public_key: app.books.public_key.clone() })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JournalQuery {
    /// Entries after this sequence number.
    after: Option<u64>,
    /// Page size, 1..=1000 (default 1000).
    limit: Option<u32>,
}

/// The journal, oldest first (public): replay it to recompute every balance.
#[utoipa::path(get, path = "/v1/ledger/journal", params(JournalQuery),
    responses((status = 200, body = Vec<JournalEntry>), (status = 400, body = ErrorBody)))]
pub async fn journal(
    State(app): State<App>,
    ApiQuery(query): ApiQuery<JournalQuery>,
) -> ApiResult<Json<Vec<JournalEntry>>> {
    let limit = query.limit.unwrap_or(PAGE_MAX);
    if limit == 0 || limit > PAGE_MAX {
        return Err(ApiError::bad_request(format!("limit must be 1..={PAGE_MAX}")));
    }
    let entries = app.store.journal(query.after.unwrap_or(0), limit).await?;
    Ok(Json(entries.into_iter().map(entry_view).collect()))
}

/// Hourly block rewards, newest first (public; at most 168).
#[utoipa::path(get, path = "/v1/rewards/blocks", responses((status = 200, body = Vec<RewardBlock>)))]
pub async fn blocks(State(app): State<App>) -> ApiResult<Json<Vec<RewardBlock>>> {
    let rows = app.store.reward_blocks(168).await?;
    let blocks = rows
        .into_iter()
        .map(|(hour, at, emission, paid, failed, to_treasury)| {
            Ok(RewardBlock {
                hour,
                at: herd_core::Timestamp(at),
                emission,
                paid: serde_json::from_str(&paid).map_err(|e| crate::store::StoreError::Corrupt {
                    what: "reward_blocks.paid",
                    detail: e.to_string(),
                })?,
                failed: serde_json::from_str(&failed).map_err(|e| crate::store::StoreError::Corrupt {
                    what: "reward_blocks.failed",
                    detail: e.to_string(),
                })?,
                to_treasury,
            })
        })
        .collect::<Result<Vec<_>, crate::store::StoreError>>()?;
    Ok(Json(blocks))
}
