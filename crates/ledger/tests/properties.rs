//! Properties over random operation sequences (proptest shrinks a failure to a minimal case
//! and prints its seed for replay).

use herd_core::{Asset, ConnectivityTier};
use herd_ledger::journal::{verify, Chain};
use herd_ledger::rewards::{block, Candidate};
use herd_ledger::{AccountKey, Ledger, Transfer, TransferKind};
use proptest::prelude::*;

const USERS: [&str; 4] = ["alice", "bob", "carol", "dave"];

fn key(n: usize) -> AccountKey {
    match n % 8 {
        0..=3 => AccountKey::User(USERS[n % 4].into()),
        4 => AccountKey::Escrow("cl".into()),
        5 => AccountKey::FeePool,
        6 => AccountKey::Burn,
        _ => AccountKey::Issuance,
    }
}

#[derive(Debug, Clone)]
enum Op {
    Move { id: u8, from: usize, to: usize, asset: usize, amount: u64 },
    Hold { id: u8, from: usize, to: usize, amount: u64, expires: i64 },
    Post { id: u8, pending: u8, amount: u64 },
    Void { id: u8, pending: u8 },
    Retry { of: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (any::<u8>(), 0usize..8, 0usize..8, 0usize..3, 1u64..2_000)
            .prop_map(|(id, from, to, asset, amount)| Op::Move { id, from, to, asset, amount }),
        (any::<u8>(), 0usize..4, 4usize..6, 1u64..2_000, 0i64..50)
            .prop_map(|(id, from, to, amount, expires)| Op::Hold { id, from, to, amount, expires }),
        (any::<u8>(), any::<u8>(), 0u64..2_000).prop_map(|(id, pending, amount)| Op::Post { id, pending, amount }),
        (any::<u8>(), any::<u8>()).prop_map(|(id, pending)| Op::Void { id, pending }),
        (0usize..64).prop_map(|of| Op::Retry { of }),
    ]
}

const ASSETS: [Asset; 3] = [Asset::Usdc, Asset::Io, Asset::Credits];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn money_is_conserved_never_negative_and_retries_are_free(ops in prop::collection::vec(op(), 1..80)) {
        let mut ledger = Ledger::new();
        let mut chain = Chain::default();
        let mut journal = Vec::new();
        // Start everyone with some of every asset, minted from the issuer.
        let mut seed = Vec::new();
        for (i, user) in USERS.iter().enumerate() {
            for asset in ASSETS {
                seed.push(Transfer {
                    id: format!("mint-{i}-{asset}"),
                    debit: AccountKey::Issuance,
                    credit: AccountKey::User((*user).into()),
                    asset,
                    amount: 5_000,
                    kind: TransferKind::Single,
                    code: "mint".into(),
                });
            }
        }
        for t in ledger.apply(&seed, 0).unwrap() {
            journal.push(chain.append(0, t));
        }
        let mut sent: Vec<Transfer> = Vec::new();
        let mut holds: Vec<Transfer> = Vec::new();
        for (step, op) in ops.into_iter().enumerate() {
            let now = step as i64;
            let transfer = match op {
                Op::Move { id, from, to, asset, amount } => Transfer {
                    id: format!("m{id}"), debit: key(from), credit: key(to), asset: ASSETS[asset], amount,
                    kind: TransferKind::Single, code: "move".into(),
                },
                Op::Hold { id, from, to, amount, expires } => Transfer {
                    id: format!("h{id}"), debit: key(from), credit: key(to), asset: Asset::Usdc, amount,
                    kind: TransferKind::Pending { expires_at_ms: now + expires }, code: "hold".into(),
                },
                Op::Post { .. } | Op::Void { .. } if holds.is_empty() => continue,
                Op::Post { id, pending, amount } => {
                    let hold = &holds[pending as usize % holds.len()];
                    Transfer { id: format!("p{id}"), amount, kind: TransferKind::Post { pending_id: hold.id.clone() }, ..hold.clone() }
                }
                Op::Void { id, pending } => {
                    let hold = &holds[pending as usize % holds.len()];
                    Transfer { id: format!("v{id}"), amount: 0, kind: TransferKind::Void { pending_id: hold.id.clone() }, ..hold.clone() }
                }
                Op::Retry { .. } if sent.is_empty() => continue,
                Op::Retry { of } => sent[of % sent.len()].clone(),
            };
            let snapshot = |ledger: &Ledger| {
                let mut accounts: Vec<_> = ledger.accounts().map(|(k, v)| (k.clone(), *v)).collect();
                accounts.sort_by(|a, b| (&a.0 .0, a.0 .1.as_str()).cmp(&(&b.0 .0, b.0 .1.as_str())));
                accounts
            };
            let before = snapshot(&ledger);
            match ledger.apply(std::slice::from_ref(&transfer), now) {
                Ok(applied) => {
                    if sent.contains(&transfer) {
                        prop_assert!(applied.is_empty(), "a retry of an applied transfer changes nothing");
                    }
                    for t in applied {
                        if matches!(t.kind, TransferKind::Pending { .. }) {
                            holds.push(t.clone());
                        }
                        sent.push(t.clone());
                        journal.push(chain.append(now, t));
                    }
                }
                Err(error) => {
                    prop_assert_eq!(before, snapshot(&ledger), "a refused transfer changes nothing: {}", error);
                }
            }
            for ((account, asset), state) in ledger.accounts() {
                if !account.may_go_negative() {
                    prop_assert!(state.available() >= 0, "{:?} {} went negative", account, asset);
                }
            }
            for asset in ASSETS {
                let total: i128 = ledger.accounts().filter(|((_, a), _)| *a == asset).map(|(_, s)| s.balance()).sum();
                prop_assert_eq!(total, 0, "double entry: balances + burned = minted in {}", asset);
            }
        }
        // Every hold resolves: void what is still open, and nothing stays reserved.
        let open: Vec<Transfer> = ledger.open_pending().cloned().collect();
        for hold in open {
            let void = Transfer { id: format!("end:{}", hold.id), amount: 0, kind: TransferKind::Void { pending_id: hold.id.clone() }, ..hold };
            for t in ledger.apply(&[void], 1_000_000).unwrap() {
                journal.push(chain.append(1_000_000, t));
            }
        }
        for (_, state) in ledger.accounts() {
            prop_assert_eq!((state.debits_pending, state.credits_pending), (0, 0));
        }
        // The journal replays to exactly the same balances.
        let (replayed, replayed_chain) = verify(&journal).unwrap();
        prop_assert_eq!(replayed_chain, chain);
        for ((account, asset), state) in ledger.accounts() {
            prop_assert_eq!(replayed.account(account, *asset), *state);
        }
    }

    #[test]
    fn a_blocks_rewards_sum_to_its_emission(
        emission in 0u64..10_000_000_000,
        devices in prop::collection::vec((any::<bool>(), 1u32..3000, 1u32..16, 0usize..5, any::<bool>(), 0i64..40_000_000, any::<bool>()), 0..60),
    ) {
        let candidates: Vec<Candidate> = devices.iter().enumerate().map(|(i, (gpu, m, q, tier, hired, uptime, verified))| Candidate {
            device: format!("d{i}"),
            gpu: *gpu,
            multiplier_centi: *m,
            quantity: *q,
            connectivity: ConnectivityTier::ALL[*tier],
            hired: *hired,
            continuous_uptime_ms: *uptime,
            staked: 10,
            min_stake: if i % 5 == 0 { 20 } else { 10 },
            verified_this_hour: *verified,
        }).collect();
        let block = block(emission, &candidates);
        let paid: u64 = block.paid.iter().map(|p| p.1).sum();
        prop_assert_eq!(paid + block.to_treasury, emission);
        prop_assert_eq!(block.paid.len() + block.failed.len(), candidates.len());
    }
}
