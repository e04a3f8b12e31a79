//! Properties of the market over random pools and request streams. A failure prints the
//! minimal case (proptest shrinks it) and replays with the printed seed.

use herd_core::catalog::GPU_MODELS;
use herd_core::{ConnectivityTier, SecurityTier};
use herd_market::index::{DeviceOffer, MarketIndex, CPU_ONLY};
use herd_market::matching::{place_by_scan, Colocation, Hardware, Location, Request};
use herd_market::pricing::{target_multiplier_permille, ModelLoad, PriceBook, QuoteTerms};
use proptest::prelude::*;

const COUNTRIES: [&[u8; 2]; 4] = [b"US", b"DE", b"JP", b"BR"];

fn offer_strategy() -> impl Strategy<Value = DeviceOffer> {
    (
        any::<[u8; 8]>(),
        0u8..4,
        prop_oneof![Just(CPU_ONLY), 0u8..4],
        prop_oneof![Just(1u8), Just(2), Just(4), Just(8)],
        0usize..4,
        0usize..5,
        0usize..3,
        0u16..=1000,
        1u32..5_000_000,
    )
        .prop_map(|(key, supplier, model, gpus, country, tier, security, reputation, floor)| {
            let mut device = [0u8; 32];
            device[..8].copy_from_slice(&key);
            DeviceOffer {
                key: device,
                supplier: [supplier; 32],
                model,
                gpu_count: if model == CPU_ONLY { 0 } else { gpus },
                country: *COUNTRIES[country],
                connectivity: ConnectivityTier::ALL[tier],
                security: SecurityTier::ALL[security],
                reputation,
                cpu_cores: 16,
                ram_gib: 64,
                floor_micros: floor,
                multi_node: true,
            }
        })
}

fn request_strategy() -> impl Strategy<Value = Request> {
    (
        prop_oneof![Just(None), (0u8..4).prop_map(Some)],
        prop_oneof![Just(1u8), Just(2), Just(4), Just(8)],
        1u32..6,
        prop::option::of(0usize..4),
        0usize..5,
        0usize..3,
        0u16..800,
        prop::option::of(500_000i64..6_000_000),
        any::<bool>(),
    )
        .prop_map(|(model, per_node, nodes, country, tier, security, reputation, ceiling, start_now)| Request {
            hardware: match model {
                Some(m) => Hardware::Gpu { models: vec![m], per_node },
                None => Hardware::Cpu,
            },
            nodes,
            cpu_cores_min: 0,
            ram_gib_min: 0,
            location: Location { allow: country.map(|c| vec![*COUNTRIES[c]]), deny: vec![], label: String::new() },
            connectivity_min: ConnectivityTier::ALL[tier],
            security_min: SecurityTier::ALL[security],
            reputation_min: reputation,
            colocation: Colocation::Anywhere,
            price_ceiling_micros: ceiling,
            terms: QuoteTerms { hours: 1, start_now },
            supplier: None,
            multi_node: nodes > 1,
        })
}

fn index_of(offers: &[DeviceOffer], free: &[bool]) -> MarketIndex {
    let mut index = MarketIndex::new();
    for (offer, free) in offers.iter().zip(free.iter().cycle()) {
        index.upsert(offer, *free);
    }
    index
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// A request that fits (by scanning every device) is never refused, and the index picks
    /// exactly what the full scan picks.
    #[test]
    fn a_request_that_fits_is_never_refused(
        offers in prop::collection::vec(offer_strategy(), 0..120),
        free in prop::collection::vec(any::<bool>(), 1..8),
        request in request_strategy(),
    ) {
        let index = index_of(&offers, &free);
        let prices = PriceBook::new();
        let placed = index.place(&request, &prices);
        match place_by_scan(&index, &request, &prices) {
            Some(expected) => prop_assert_eq!(placed.expect("fits, so it must be placed"), expected),
            None => prop_assert!(placed.is_err()),
        }
    }

    /// Plans computed from the same snapshot by concurrent requests never double-book: the
    /// second to commit is told its plan is stale, and no device is ever held twice.
    #[test]
    fn reservation_never_double_books(
        offers in prop::collection::vec(offer_strategy(), 1..80),
        requests in prop::collection::vec(request_strategy(), 1..30),
        releases in prop::collection::vec(any::<bool>(), 1..30),
    ) {
        let mut index = index_of(&offers, &[true]);
        let prices = PriceBook::new();
        let mut held: std::collections::HashSet<[u8; 32]> = std::collections::HashSet::new();
        let mut leases: Vec<Vec<[u8; 32]>> = Vec::new();
        for (pair, release) in requests.chunks(2).zip(releases.iter().cycle()) {
            // Both plans come from one snapshot, as two concurrent requests would see it.
            let plans: Vec<_> = pair.iter().filter_map(|r| index.place(r, &prices).ok()).collect();
            for plan in plans {
                let devices = plan.devices();
                match index.reserve(&devices) {
                    Ok(()) => {
                        for d in &devices {
                            prop_assert!(held.insert(*d), "device leased twice");
                        }
                        leases.push(devices);
                    }
                    Err(stale) => prop_assert!(held.contains(&stale.0), "refused a free device"),
                }
            }
            if *release && !leases.is_empty() {
                for d in leases.remove(0) {
                    held.remove(&d);
                    index.set_free(&d, true);
                }
            }
        }
        prop_assert_eq!(index.free_count() + held.len(), index.len());
    }

    /// No device is ever offered below its floor, whatever the market does.
    #[test]
    fn price_never_below_floor(
        model in 0usize..GPU_MODELS.len(),
        floor in 0i64..20_000_000,
        online in 0u64..10_000,
        hired_share in 0u64..=1000,
        minutes in 0i64..3000,
        hours in 1u32..1000,
        start_now in any::<bool>(),
    ) {
        let mut book = PriceBook::new();
        let mut loads = vec![ModelLoad::default(); GPU_MODELS.len()];
        loads[model] = ModelLoad { online_gpus: online, hired_gpus: online * hired_share / 1000 };
        book.update(0, &loads);
        book.update(minutes * 60_000, &loads);
        let terms = QuoteTerms { hours, start_now };
        prop_assert!(book.device_price(Some(model), floor, terms) >= floor);
        prop_assert!(book.market_price(model) > 0);
    }

    /// Higher utilisation never lowers the target price, nor does more demand.
    #[test]
    fn price_is_monotone_in_utilisation(u1 in 0u64..=1000, u2 in 0u64..=1000, d in 0u64..=1000) {
        let (low, high) = (u1.min(u2), u1.max(u2));
        prop_assert!(target_multiplier_permille(low, d) <= target_multiplier_permille(high, d));
        prop_assert!(target_multiplier_permille(high, d / 2) <= target_multiplier_permille(high, d));
    }
}
