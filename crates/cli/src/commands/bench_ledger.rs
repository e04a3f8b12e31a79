//! `herd bench ledger`: the real write path — apply in memory, chain, sign once per batch,
//! append to the journal in one durable database transaction (SQLite, or PostgreSQL with --db) — batched and one by one.

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use herd_coordinator::books::sign_batch;
use herd_coordinator::store::Store;
use herd_core::Asset;
use herd_ledger::journal::Chain;
use herd_ledger::{AccountKey, Ledger, Transfer, TransferKind};
use serde::Serialize;

use super::LedgerArgs;
use crate::commands::Context;
use crate::output::{print_json, table};

const USERS: usize = 1000;

#[derive(Serialize)]
struct Report {
    batch: u64,
    batched_transfers: u64,
    batched_per_sec: f64,
    single_transfers: u64,
    single_per_sec: f64,
    speedup: f64,
    /// Share of the batched run spent in memory (apply, chain, sign) rather than in the database.
    batched_in_memory_share: f64,
}

struct Writer {
    store: Store,
    ledger: Ledger,
    chain: Chain,
    key: SigningKey,
    next: u64,
    /// Time spent applying, chaining and signing (the rest is the database).
    in_memory: Duration,
}

impl Writer {
    fn transfers(&mut self, count: u64) -> Vec<Transfer> {
        (0..count)
            .map(|_| {
                self.next += 1;
                let n = self.next as usize;
                Transfer {
                    id: format!("bench-{n}"),
                    debit: AccountKey::User(format!("user-{}", n % USERS)),
                    credit: AccountKey::User(format!("user-{}", (n * 7 + 1) % USERS)),
                    asset: Asset::Usdc,
                    amount: 1 + (n % 100) as u64,
                    kind: TransferKind::Single,
                    code: "bench".into(),
                }
            })
            .collect()
    }

    async fn write(&mut self, batch: &[Transfer]) -> anyhow::Result<()> {
        let started = Instant::now();
        let applied = self.ledger.apply(batch, 0)?;
        let entries = applied.into_iter().map(|t| self.chain.append(0, t)).collect();
        let signed = sign_batch(&self.key, entries);
        self.in_memory += started.elapsed();
        self.store.append_journal(&signed, &[]).await?;
        Ok(())
    }
}

async fn measure(writer: &mut Writer, total: u64, batch: u64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut done = 0;
    while done < total {
        let size = batch.min(total - done);
        let transfers = writer.transfers(size);
        writer.write(&transfers).await?;
        done += size;
    }
    Ok(started.elapsed())
}

pub async fn run(context: &Context, args: &LedgerArgs) -> anyhow::Result<i32> {
    let dir = std::env::temp_dir().join(format!("herd-bench-ledger-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let url = args.db.clone().unwrap_or_else(|| format!("sqlite://{}", dir.join("bench.db").display()));
    let store = Store::open(&url).await?;
    if store.journal_len().await?.0 > 0 {
        anyhow::bail!(
            "{} already holds a journal: the benchmark needs an empty database",
            herd_coordinator::store::redact_url(&url)
        );
    }
    let backend = store.backend().name();
    let mut writer = Writer {
        store,
        ledger: Ledger::new(),
        chain: Chain::default(),
        key: SigningKey::from_bytes(&[7; 32]),
        next: 0,
        in_memory: Duration::ZERO,
    };
    let funding: Vec<Transfer> = (0..USERS)
        .map(|i| Transfer {
            id: format!("fund-{i}"),
            debit: AccountKey::Issuance,
            credit: AccountKey::User(format!("user-{i}")),
            asset: Asset::Usdc,
            amount: 1_000_000_000_000,
            kind: TransferKind::Single,
            code: "bench".into(),
        })
        .collect();
    writer.write(&funding).await?;
    let batched = measure(&mut writer, args.transfers, args.batch).await?;
    let batched_in_memory = std::mem::take(&mut writer.in_memory);
    let single = measure(&mut writer, args.single, 1).await?;
    writer.store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    let per_sec = |n: u64, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
    let report = Report {
        batch: args.batch,
        batched_transfers: args.transfers,
        batched_per_sec: per_sec(args.transfers, batched),
        single_transfers: args.single,
        single_per_sec: per_sec(args.single, single),
        speedup: per_sec(args.transfers, batched) / per_sec(args.single, single),
        batched_in_memory_share: batched_in_memory.as_secs_f64() / batched.as_secs_f64().max(1e-9),
    };
    if context.json {
        print_json(&report);
        return Ok(0);
    }
    let rows = vec![
        vec![
            format!("batched ({} per transaction)", report.batch),
            format!("{:.0} transfers/s ({} transfers)", report.batched_per_sec, report.batched_transfers),
        ],
        vec![
            "one per transaction".into(),
            format!("{:.0} transfers/s ({} transfers)", report.single_per_sec, report.single_transfers),
        ],
        vec!["batching gains".into(), format!("{:.0}×", report.speedup)],
        vec![
            "batched time in memory / in the database".into(),
            format!(
                "{:.0} % / {:.0} %",
                report.batched_in_memory_share * 100.0,
                (1.0 - report.batched_in_memory_share) * 100.0
            ),
        ],
    ];
    crate::outln!("{}", table(&[&format!("LEDGER BENCH (durable {backend}, one core)"), ""], &rows));
    Ok(0)
}
