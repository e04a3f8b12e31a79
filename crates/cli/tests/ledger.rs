//! The ledger through the API: the devnet faucet, idempotent deposits, balances and history,
//! an independent verification of the public journal, and tamper evidence across restarts.

mod common;

use common::*;
use herd_cli::audit::verify_ledger;
use herd_cli::client::Client;
use herd_core::Asset;
use herd_proto::api::Deposit;

fn deposit(asset: Asset, amount: &str, id: Option<&str>) -> Deposit {
    Deposit { asset, amount: amount.into(), id: id.map(str::to_owned) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposits_are_idempotent_and_the_journal_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = start_coordinator(&dir.path().join("herd.db"), loopback()).await;
    let url = coordinator.url();
    let (_, alice) = new_account(&url).await;
    let (_, bob) = new_account(&url).await;

    let first = alice.deposit(&deposit(Asset::Usdc, "250", Some("once"))).await.unwrap();
    let retry = alice.deposit(&deposit(Asset::Usdc, "250", Some("once"))).await.unwrap();
    assert_eq!(first, retry, "a retry returns the original entry");
    alice.deposit(&deposit(Asset::Io, "12.5", None)).await.unwrap();
    bob.deposit(&deposit(Asset::Credits, "0.000001", None)).await.unwrap();
    let conflict = alice.deposit(&deposit(Asset::Usdc, "251", Some("once"))).await.unwrap_err();
    assert_eq!(conflict.status().unwrap().as_u16(), 409, "same id, different body: {conflict}");

    let balances = alice.wallet().await.unwrap();
    let of = |asset| balances.iter().find(|b| b.asset == asset).unwrap().available;
    // new_account funded each account with 10,000 USDC first.
    assert_eq!((of(Asset::Usdc), of(Asset::Io), of(Asset::Credits)), (10_250_000_000, 12_500_000, 0));
    let history = alice.wallet_history().await.unwrap();
    assert_eq!(history.len(), 3, "only alice's entries");
    assert!(bob.wallet_history().await.unwrap().iter().all(|e| e.transfer["credit"]["id"] != alice_id(&history)));

    let bad = alice.deposit(&deposit(Asset::Usdc, "-5", None)).await.unwrap_err();
    assert_eq!(bad.status().unwrap().as_u16(), 400);

    let report = verify_ledger(&Client::new(&url, None)).await.unwrap();
    assert_eq!(report.entries, 7, "2 genesis entries, 2 account fundings, 3 deposits");
    coordinator.shutdown().await;

    // The books are rebuilt from the journal on restart.
    let coordinator = start_coordinator(&dir.path().join("herd.db"), loopback()).await;
    let url = coordinator.url();
    let again = verify_ledger(&Client::new(&url, None)).await.unwrap();
    assert_eq!(
        (again.entries, again.head.clone(), again.signer.clone()),
        (7, report.head, report.signer),
        "same key too"
    );
    coordinator.shutdown().await;
}

fn alice_id(history: &[herd_proto::api::JournalEntry]) -> serde_json::Value {
    history[0].transfer["credit"]["id"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_journal_is_refused_at_start_naming_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("herd.db");
    let coordinator = start_coordinator(&db, loopback()).await;
    let (_, alice) = new_account(&coordinator.url()).await;
    for amount in ["1", "2", "3"] {
        alice.deposit(&deposit(Asset::Usdc, amount, None)).await.unwrap();
    }
    coordinator.shutdown().await;

    // Someone with database access quietly raises the second deposit.
    run_sql_behind_its_back(
        &db,
        "UPDATE journal SET body = replace(body, '\"amount\":2000000', '\"amount\":2000000000') WHERE seq = 5",
    )
    .await;

    let refused =
        herd_coordinator::start(test_config(&db, loopback())).await.err().expect("a tampered journal is refused");
    // The error and its causes, as `herd coordinator` prints them.
    let mut message = refused.to_string();
    let mut cause = std::error::Error::source(&refused);
    while let Some(error) = cause {
        message = format!("{message}: {error}");
        cause = error.source();
    }
    assert!(message.starts_with("cannot open the ledger of "), "{message}");
    assert!(message.contains("diverges at entry 5"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_networks_have_no_faucet() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir.path().join("herd.db"), loopback());
    config.faucet = false;
    let coordinator = herd_coordinator::start(config).await.unwrap();
    let (_, alice) = new_account(&coordinator.url()).await;
    let refused = alice.deposit(&deposit(Asset::Usdc, "1", None)).await.unwrap_err();
    assert_eq!(refused.status().unwrap().as_u16(), 403);
    assert!(refused.to_string().contains("no faucet"));
    coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawals_are_held_until_the_operator_confirms_them() {
    use ed25519_dalek::Signer;
    use herd_proto::api::{ConfirmPayout, Withdraw};

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("herd.db");
    let coordinator = start_coordinator(&db, loopback()).await;
    let url = coordinator.url();
    let (_, alice) = new_account(&url).await;
    let recipient =
        bs58::encode(ed25519_dalek::SigningKey::from_bytes(&[5; 32]).verifying_key().as_bytes()).into_string();
    let withdraw = |asset, amount: &str, to: &str| Withdraw { asset, amount: amount.into(), to: to.into() };

    let payout = alice.withdraw(&withdraw(Asset::Usdc, "100", &recipient)).await.unwrap();
    assert_eq!((payout.state.as_str(), payout.amount), ("pending", 100_000_000));
    assert!(payout.url.starts_with(&format!("solana:{recipient}?amount=100&spl-token=")), "{}", payout.url);
    assert!(payout.url.contains("&reference="));
    let usdc = alice.wallet().await.unwrap().into_iter().find(|b| b.asset == Asset::Usdc).unwrap();
    assert_eq!((usdc.held, usdc.available), (100_000_000, 9_900_000_000));

    let status = |e: herd_cli::client::ClientError| e.status().unwrap().as_u16();
    assert_eq!(status(alice.withdraw(&withdraw(Asset::Usdc, "1", "nope")).await.unwrap_err()), 400);
    assert_eq!(status(alice.withdraw(&withdraw(Asset::Credits, "1", &recipient)).await.unwrap_err()), 422);
    assert_eq!(status(alice.withdraw(&withdraw(Asset::Usdc, "1000000", &recipient)).await.unwrap_err()), 409);

    let tx = bs58::encode([7u8; 64]).into_string();
    let operator = herd_keys::load(&ledger_key_path(&dir.path().join("herd.db"))).unwrap();
    let sign = |key: &ed25519_dalek::SigningKey| {
        let message = herd_proto::signing::payout_confirmation_message(&payout.id, &tx);
        ConfirmPayout {
            tx_signature: tx.clone(),
            operator_signature: bs58::encode(key.sign(&message).to_bytes()).into_string(),
        }
    };
    let anyone = Client::new(&url, None);
    let impostor = ed25519_dalek::SigningKey::from_bytes(&[6; 32]);
    assert_eq!(status(anyone.confirm_payout(&payout.id, &sign(&impostor)).await.unwrap_err()), 403);
    let settled = anyone.confirm_payout(&payout.id, &sign(&operator)).await.unwrap();
    assert_eq!((settled.state.as_str(), settled.tx_signature.as_deref()), ("settled", Some(tx.as_str())));
    assert_eq!(status(anyone.confirm_payout(&payout.id, &sign(&operator)).await.unwrap_err()), 409);
    let usdc = alice.wallet().await.unwrap().into_iter().find(|b| b.asset == Asset::Usdc).unwrap();
    assert_eq!((usdc.balance, usdc.held), (9_900_000_000, 0));
    assert_eq!(alice.payouts().await.unwrap()[0].state, "settled");
    verify_ledger(&anyone).await.unwrap();
    coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suppliers_stake_on_their_own_devices_and_unstaking_cools_down() {
    let network = TestNetwork::start(1).await;
    let supplier = &network.supplier_client;
    supplier.deposit(&deposit(Asset::Io, "1000", None)).await.unwrap();
    let device = Client::new(&network.url, None).devices("").await.unwrap().remove(0);
    let id = device.id.to_string();

    let before = supplier.stake(&id).await.unwrap();
    assert_eq!((before.staked, before.min_stake, before.meets_minimum), (0, 200_000_000, false), "CPU: 200 IO");
    let after = supplier.add_stake(&id, "250").await.unwrap();
    assert_eq!((after.staked, after.meets_minimum), (250_000_000, true));
    let io = supplier.wallet().await.unwrap().into_iter().find(|b| b.asset == Asset::Io).unwrap();
    assert_eq!(io.available, 750_000_000);

    let (_, stranger) = new_account(&network.url).await;
    assert_eq!(stranger.add_stake(&id, "1").await.unwrap_err().status().unwrap().as_u16(), 403);
    assert_eq!(
        supplier.add_stake(&id, "5000").await.unwrap_err().status().unwrap().as_u16(),
        409,
        "more IO than the wallet has"
    );

    let requested = supplier.remove_stake(&id).await.unwrap();
    assert!(requested.unstake_requested_at.is_some());
    assert_eq!(requested.withdrawable_at.unwrap().0 - requested.unstake_requested_at.unwrap().0, 14 * 24 * 3_600_000);
    let early = supplier.remove_stake(&id).await.unwrap_err();
    assert_eq!(early.status().unwrap().as_u16(), 409);
    assert!(early.to_string().contains("cooldown"), "{early}");
    assert_eq!(supplier.stake(&id).await.unwrap().staked, 250_000_000, "still staked during the cooldown");

    // The operator (holder of the ledger key) slashes: the IO is burned.
    let operator = herd_keys::load(&ledger_key_path(&network.dir.path().join("herd.db"))).unwrap();
    let slash = |key: &ed25519_dalek::SigningKey, slash_id: &str, reason: &str| {
        use ed25519_dalek::Signer;
        let message = herd_proto::signing::slash_message(slash_id, &id, reason, "100");
        serde_json::json!({ "id": slash_id, "reason": reason, "amount": "100",
            "operator_signature": bs58::encode(key.sign(&message).to_bytes()).into_string() })
    };
    let http = reqwest::Client::new();
    let post = |body: serde_json::Value| http.post(format!("{}/v1/stake/{id}/slash", network.url)).json(&body).send();
    let forged = post(slash(&ed25519_dalek::SigningKey::from_bytes(&[1; 32]), "slash-0001", "spoofing")).await.unwrap();
    assert_eq!(forged.status().as_u16(), 403);
    assert_eq!(post(slash(&operator, "slash-0001", "bad-vibes")).await.unwrap().status().as_u16(), 400);
    let first = slash(&operator, "slash-0001", "abandoned-lease");
    let slashed = post(first.clone()).await.unwrap();
    assert_eq!(slashed.status().as_u16(), 200);
    assert_eq!(supplier.stake(&id).await.unwrap().staked, 150_000_000);

    // Anyone who saw that request sends it again: refused, nothing more burned.
    for _ in 0..3 {
        let replayed = post(first.clone()).await.unwrap();
        assert_eq!(replayed.status().as_u16(), 409);
        let body: serde_json::Value = replayed.json().await.unwrap();
        assert_eq!(body["error"]["code"], "replayed", "{body}");
    }
    assert_eq!(supplier.stake(&id).await.unwrap().staked, 150_000_000, "a replay burns nothing");
    // The signature is bound to its id: another id under the old signature is a forgery.
    let mut renamed = first.clone();
    renamed["id"] = "slash-0002".into();
    assert_eq!(post(renamed).await.unwrap().status().as_u16(), 403);
    // A new slash needs a new signature over a new id.
    assert_eq!(post(slash(&operator, "slash-0002", "spoofing")).await.unwrap().status().as_u16(), 200);
    assert_eq!(supplier.stake(&id).await.unwrap().staked, 50_000_000);

    // Both are in the audit log, with the signature that authorised each.
    let audit = Client::new(&network.url, None).audit(&operator, 0, 1000, Some(&id)).await.unwrap();
    let slashes: Vec<_> = audit.iter().filter(|e| e.action == "stake.slash").collect();
    assert_eq!(slashes.len(), 2, "{audit:#?}");
    assert_eq!(slashes[0].actor, "operator");
    assert_eq!(slashes[0].signature.as_deref(), first["operator_signature"].as_str());
    assert!(audit.iter().any(|e| e.action == "stake.add"), "{audit:#?}");
    let report = verify_ledger(&Client::new(&network.url, None)).await.unwrap();
    assert!(report.entries > 0);
    network.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burning_io_mints_credits_at_the_oracle_price() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = start_coordinator(&dir.path().join("herd.db"), loopback()).await;
    let url = coordinator.url();
    let (_, alice) = new_account(&url).await;
    alice.deposit(&deposit(Asset::Io, "10", None)).await.unwrap();
    let minted = alice.mint_credits("5").await.unwrap();
    assert_eq!((minted.io_burned, minted.credits_minted, minted.io_price_micros), (5_000_000, 10_000_000, 2_000_000));
    let wallet = alice.wallet().await.unwrap();
    let of = |asset| wallet.iter().find(|b| b.asset == asset).unwrap().balance;
    assert_eq!((of(Asset::Io), of(Asset::Credits)), (5_000_000, 10_000_000));
    assert_eq!(alice.mint_credits("6").await.unwrap_err().status().unwrap().as_u16(), 409, "only 5 IO left");
    verify_ledger(&Client::new(&url, None)).await.unwrap();
    coordinator.shutdown().await;
}
