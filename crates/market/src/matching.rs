//! Placing a request: visit only the buckets that can match, merge them cheapest node first,
//! check what buckets cannot (tiers, reputation, CPU, RAM, price ceiling), and honour
//! co-location. All nodes or none. When nothing fits, say which constraint ran out and what
//! is there.
//!
//! Ranking: cheapest node first (what the customer pays: max(floor, market) per GPU × GPUs);
//! at equal price the supplier asking less (lower floor) first, then higher reputation. The
//! floor tie-break rewards competitive asks and is what lets each bucket stay sorted once,
//! whatever the market price does.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::ops::Bound;

use herd_core::catalog::GPU_MODELS;
use herd_core::{ConnectivityTier, Micros, SecurityTier};

use crate::index::{entry, BucketKey, DeviceKey, Entry, MarketIndex, ModelId, SupplierKey, CPU_ONLY};
use crate::pricing::{PriceBook, QuoteTerms};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hardware {
    /// `per_node` GPUs of any of `models` (catalog indexes) on each node.
    Gpu { models: Vec<ModelId>, per_node: u8 },
    /// CPU-only machines.
    Cpu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Colocation {
    #[default]
    Anywhere,
    SameCountry,
    SameSupplier,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    /// Countries allowed (None: anywhere).
    pub allow: Option<Vec<[u8; 2]>>,
    pub deny: Vec<[u8; 2]>,
    /// How to name the location in messages ("europe, JP"); empty: list the countries.
    pub label: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub hardware: Hardware,
    pub nodes: u32,
    pub cpu_cores_min: u16,
    pub ram_gib_min: u16,
    pub location: Location,
    pub connectivity_min: ConnectivityTier,
    pub security_min: SecurityTier,
    pub reputation_min: u16,
    pub colocation: Colocation,
    /// Per GPU-hour (per node-hour for CPU clusters).
    pub price_ceiling_micros: Option<Micros>,
    pub terms: QuoteTerms,
    /// Only this supplier's devices (a replacement node of a same-supplier cluster).
    pub supplier: Option<SupplierKey>,
    /// The lease has (or will have) several nodes: only devices that can reach the others.
    /// True for `nodes > 1` and for a replacement into a multi-node lease.
    pub multi_node: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedNode {
    pub device: DeviceKey,
    pub supplier: SupplierKey,
    pub country: [u8; 2],
    pub model: ModelId,
    /// Nodes are whole machines: this is every GPU of the device.
    pub gpus: u8,
    pub connectivity: ConnectivityTier,
    pub security: SecurityTier,
    pub reputation: u16,
    /// Per GPU-hour (per node-hour for CPU-only machines).
    pub unit_price_micros: Micros,
    pub node_hour_micros: Micros,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Rank order: cheapest first; rank 0 becomes the head.
    pub nodes: Vec<PlacedNode>,
}

impl Placement {
    pub fn per_hour_micros(&self) -> Micros {
        self.nodes.iter().map(|n| n.node_hour_micros).sum()
    }

    pub fn devices(&self) -> Vec<DeviceKey> {
        self.nodes.iter().map(|n| n.device).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The request can never be met by this network (e.g. more GPUs per node than any
    /// device has): a 422, with what is allowed.
    Impossible(String),
    /// Not now: a 409, with the constraint that ran out and the nearest alternatives.
    NoCapacity { reason: String, alternatives: Vec<String> },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Impossible(reason) => f.write_str(reason),
            Refusal::NoCapacity { reason, alternatives } if alternatives.is_empty() => f.write_str(reason),
            Refusal::NoCapacity { reason, alternatives } => {
                write!(f, "{reason}; available: {}", alternatives.join("; "))
            }
        }
    }
}

/// How many candidates one request may examine beyond its node count, so a request whose
/// per-device constraints exclude almost everything cannot scan the whole pool.
const SCAN_BASE: usize = 50_000;
const SCAN_PER_NODE: usize = 16;
/// Devices read to explain a refusal.
const EXPLAIN_SCAN_MAX: usize = 200_000;

impl Request {
    fn models(&self) -> Vec<ModelId> {
        match &self.hardware {
            Hardware::Gpu { models, .. } => models.clone(),
            Hardware::Cpu => vec![CPU_ONLY],
        }
    }

    fn per_node(&self) -> u8 {
        match &self.hardware {
            Hardware::Gpu { per_node, .. } => *per_node,
            Hardware::Cpu => 0,
        }
    }

    /// `8×H100`, `2×(A100-80GB|H100)`, `CPU`.
    pub fn hardware_label(&self) -> String {
        match &self.hardware {
            Hardware::Cpu => "CPU".into(),
            Hardware::Gpu { models, per_node } => {
                let names: Vec<&str> = models.iter().map(|m| GPU_MODELS[*m as usize].name).collect();
                if names.len() == 1 {
                    format!("{per_node}×{}", names[0])
                } else {
                    format!("{per_node}×({})", names.join("|"))
                }
            }
        }
    }

    fn location_label(&self) -> String {
        if !self.location.label.is_empty() {
            return format!(" in {}", self.location.label);
        }
        match &self.location.allow {
            Some(countries) => {
                let names: Vec<String> = countries.iter().map(|c| String::from_utf8_lossy(c).into_owned()).collect();
                format!(" in {}", names.join(", "))
            }
            None if !self.location.deny.is_empty() => " outside the denied countries".into(),
            None => String::new(),
        }
    }
}

fn country_text(country: &[u8; 2]) -> String {
    String::from_utf8_lossy(country).into_owned()
}

/// The price of each eligible model for this request, before floors.
fn adjusted_prices(prices: &PriceBook, request: &Request) -> HashMap<ModelId, Micros> {
    request
        .models()
        .into_iter()
        .map(|m| (m, if m == CPU_ONLY { 0 } else { prices.device_price(Some(m as usize), 0, request.terms) }))
        .collect()
}

struct Candidate {
    node_price: Micros,
    unit_price: Micros,
    entry: Entry,
}

/// One bucket, read cheapest first.
struct Cursor<'a> {
    bucket: &'a std::collections::BTreeSet<Entry>,
    after: Option<Entry>,
    adjusted: Micros,
    gpus: u8,
    cpu: bool,
}

impl Cursor<'_> {
    fn next(&mut self) -> Option<Candidate> {
        let next = match self.after {
            None => self.bucket.iter().next(),
            Some(after) => self.bucket.range((Bound::Excluded(after), Bound::Unbounded)).next(),
        }?;
        self.after = Some(*next);
        let unit_price = Micros::from(next.0).max(self.adjusted);
        let node_price = if self.cpu { unit_price } else { unit_price * Micros::from(self.gpus) };
        Some(Candidate { node_price, unit_price, entry: *next })
    }
}

impl MarketIndex {
    fn allowed_countries(&self, location: &Location) -> Vec<bool> {
        self.countries
            .iter()
            .map(|c| location.allow.as_ref().is_none_or(|allow| allow.contains(c)) && !location.deny.contains(c))
            .collect()
    }

    /// Buckets that can match, by the stage at which the others drop out (for explanations).
    fn candidate_buckets(&self, request: &Request) -> Vec<BucketKey> {
        let allowed = self.allowed_countries(&request.location);
        let per_node = request.per_node();
        request
            .models()
            .iter()
            .flat_map(|m| self.buckets_by_model[*m as usize].iter())
            .filter(|k| k.gpu_count >= per_node && allowed[k.country as usize])
            .copied()
            .collect()
    }

    fn passes_device_checks(&self, slot_id: u32, request: &Request, unit_price: Micros) -> bool {
        let slot = &self.slots[slot_id as usize];
        slot.connectivity >= request.connectivity_min
            && slot.security >= request.security_min
            && slot.reputation >= request.reputation_min
            && slot.cpu_cores >= request.cpu_cores_min
            && slot.ram_gib >= request.ram_gib_min
            && request.price_ceiling_micros.is_none_or(|ceiling| unit_price <= ceiling)
            && request.supplier.is_none_or(|supplier| *self.supplier_key(slot.supplier) == supplier)
            && (slot.multi_node || !request.multi_node)
    }

    /// Merges buckets cheapest node first and feeds acceptable candidates to `take` until it
    /// returns true (done) or the scan budget runs out.
    fn merge(
        &self,
        keys: &[BucketKey],
        request: &Request,
        adjusted: &HashMap<ModelId, Micros>,
        mut take: impl FnMut(u32, &Candidate) -> bool,
    ) {
        let mut cursors: Vec<Cursor> = keys
            .iter()
            .filter_map(|k| {
                let bucket = self.buckets.get(k)?;
                Some(Cursor {
                    bucket,
                    after: None,
                    adjusted: adjusted.get(&k.model).copied().unwrap_or(0),
                    gpus: k.gpu_count,
                    cpu: k.model == CPU_ONLY,
                })
            })
            .collect();
        let mut heap = BinaryHeap::new();
        for (i, cursor) in cursors.iter_mut().enumerate() {
            if let Some(c) = cursor.next() {
                heap.push(Reverse((c.node_price, c.entry, c.unit_price, i)));
            }
        }
        let mut budget = SCAN_BASE + request.nodes as usize * SCAN_PER_NODE;
        while let Some(Reverse((node_price, entry, unit_price, i))) = heap.pop() {
            let slot_id = entry.2;
            let candidate = Candidate { node_price, unit_price, entry };
            // Past the ceiling, this bucket has nothing cheaper left: drop it.
            let under_ceiling = request.price_ceiling_micros.is_none_or(|c| unit_price <= c);
            if under_ceiling {
                if self.passes_device_checks(slot_id, request, unit_price) && take(slot_id, &candidate) {
                    return;
                }
                if let Some(next) = cursors[i].next() {
                    heap.push(Reverse((next.node_price, next.entry, next.unit_price, i)));
                }
            }
            budget -= 1;
            if budget == 0 {
                return;
            }
        }
    }

    fn placed(&self, slot_id: u32, candidate: &Candidate) -> PlacedNode {
        let slot = &self.slots[slot_id as usize];
        PlacedNode {
            device: *self.key(slot_id),
            supplier: *self.supplier_key(slot.supplier),
            country: self.countries[slot.country as usize],
            model: slot.model,
            gpus: slot.gpu_count,
            connectivity: slot.connectivity,
            security: slot.security,
            reputation: slot.reputation,
            unit_price_micros: candidate.unit_price,
            node_hour_micros: candidate.node_price,
        }
    }

    /// Finds the cheapest set of devices for the request, or says why there is none. Reads
    /// only; the caller reserves the plan (and re-plans if it went stale).
    pub fn place(&self, request: &Request, prices: &PriceBook) -> Result<Placement, Refusal> {
        self.check_possible(request)?;
        let nodes = request.nodes as usize;
        let keys = self.candidate_buckets(request);
        let adjusted = adjusted_prices(prices, request);
        let chosen: Option<Vec<PlacedNode>> = match request.colocation {
            Colocation::Anywhere => {
                let mut chosen = Vec::with_capacity(nodes);
                self.merge(&keys, request, &adjusted, |slot, c| {
                    chosen.push(self.placed(slot, c));
                    chosen.len() == nodes
                });
                (chosen.len() == nodes).then_some(chosen)
            }
            Colocation::SameCountry => {
                let mut by_country: BTreeMap<u16, Vec<BucketKey>> = BTreeMap::new();
                for key in &keys {
                    by_country.entry(key.country).or_default().push(*key);
                }
                let mut best: Option<Vec<PlacedNode>> = None;
                for group in by_country.values() {
                    let mut chosen = Vec::with_capacity(nodes);
                    self.merge(group, request, &adjusted, |slot, c| {
                        chosen.push(self.placed(slot, c));
                        chosen.len() == nodes
                    });
                    let cost = |nodes: &[PlacedNode]| nodes.iter().map(|n| n.node_hour_micros).sum::<Micros>();
                    if chosen.len() == nodes && best.as_ref().is_none_or(|b| cost(&chosen) < cost(b)) {
                        best = Some(chosen);
                    }
                }
                best
            }
            Colocation::SameSupplier => {
                // The first supplier to offer enough nodes, reading cheapest first.
                let mut per_supplier: HashMap<u32, Vec<PlacedNode>> = HashMap::new();
                let mut done = None;
                self.merge(&keys, request, &adjusted, |slot, c| {
                    let supplier = self.slots[slot as usize].supplier;
                    let group = per_supplier.entry(supplier).or_default();
                    group.push(self.placed(slot, c));
                    if group.len() == nodes {
                        done = Some(supplier);
                        return true;
                    }
                    false
                });
                done.and_then(|s| per_supplier.remove(&s))
            }
        };
        match chosen {
            Some(nodes) => Ok(Placement { nodes }),
            None => Err(self.explain(request, &keys)),
        }
    }

    fn check_possible(&self, request: &Request) -> Result<(), Refusal> {
        if let Hardware::Gpu { models, per_node } = &request.hardware {
            let most = models.iter().map(|m| self.max_gpus_by_model[*m as usize]).max().unwrap_or(0);
            if most > 0 && *per_node > most {
                return Err(Refusal::Impossible(format!(
                    "{} GPUs per node is more than any {} device on the network has; at most {most}",
                    per_node,
                    request.hardware_label().split('×').nth(1).unwrap_or("such")
                )));
            }
        }
        Ok(())
    }

    fn explain(&self, request: &Request, matching: &[BucketKey]) -> Refusal {
        let nodes = request.nodes as usize;
        let per_node = request.per_node();
        let allowed = self.allowed_countries(&request.location);
        let of_models: Vec<BucketKey> =
            request.models().iter().flat_map(|m| self.buckets_by_model[*m as usize].iter()).copied().collect();
        let wanted = format!("{} × {}{}", request.nodes, request.hardware_label(), request.location_label());
        let free_in = |keys: &mut dyn Iterator<Item = &BucketKey>| -> usize {
            keys.filter_map(|k| self.buckets.get(k)).map(|b| b.len()).sum()
        };
        let total = free_in(&mut of_models.iter());
        let with_gpus = free_in(&mut of_models.iter().filter(|k| k.gpu_count >= per_node));
        let located = free_in(&mut matching.iter());
        // Per-device filters, counted over the buckets that passed (bounded).
        let (mut connected, mut secure, mut joinable) = (0, 0, 0);
        for slot_id in matching.iter().filter_map(|k| self.buckets.get(k)).flatten().map(|e| e.2).take(EXPLAIN_SCAN_MAX)
        {
            let slot = &self.slots[slot_id as usize];
            if slot.connectivity >= request.connectivity_min {
                connected += 1;
                if slot.security >= request.security_min {
                    secure += 1;
                    if slot.multi_node || !request.multi_node {
                        joinable += 1;
                    }
                }
            }
        }
        let stages = [
            (total, "free device(s) of that hardware on the network"),
            (with_gpus, "free after the GPUs-per-node filter"),
            (located, "free after the location filter"),
            (connected, "free after the connectivity-tier filter"),
            (secure, "free after the security-tier filter"),
            (
                joinable,
                "free that can join a multi-node lease (the others cannot join its overlay network; \
                 they take single-node leases)",
            ),
        ];
        let reason = match stages.iter().find(|(count, _)| *count < nodes) {
            Some((count, stage)) => format!("no {wanted}: {count} {stage}"),
            None => format!(
                "no {wanted}: {secure} free device(s) pass the hardware, location and tier filters, \
                 but reputation, CPU, RAM, price ceiling or co-location leave fewer than {nodes}"
            ),
        };
        Refusal::NoCapacity { reason, alternatives: self.alternatives(request, &of_models, &allowed) }
    }

    /// The same hardware elsewhere, and fewer GPUs per node where asked.
    fn alternatives(&self, request: &Request, of_models: &[BucketKey], allowed: &[bool]) -> Vec<String> {
        let per_node = request.per_node();
        let mut alternatives = Vec::new();
        let mut elsewhere: BTreeMap<u16, usize> = BTreeMap::new();
        let mut fewer: BTreeMap<u8, usize> = BTreeMap::new();
        for key in of_models {
            let free = self.buckets.get(key).map_or(0, |b| b.len());
            if free == 0 {
                continue;
            }
            if key.gpu_count >= per_node && !allowed[key.country as usize] {
                *elsewhere.entry(key.country).or_default() += free;
            }
            if key.gpu_count < per_node && allowed[key.country as usize] {
                *fewer.entry(key.gpu_count).or_default() += free;
            }
        }
        let mut countries: Vec<(usize, u16)> = elsewhere.into_iter().map(|(c, n)| (n, c)).collect();
        countries.sort_by(|a, b| b.cmp(a));
        if !countries.is_empty() {
            let listed: Vec<String> = countries
                .iter()
                .take(5)
                .map(|(n, c)| format!("{n} in {}", country_text(&self.countries[*c as usize])))
                .collect();
            alternatives.push(format!("{} elsewhere: {}", request.hardware_label(), listed.join(", ")));
        }
        if let Some((gpus, free)) = fewer.iter().next_back() {
            let label = request.hardware_label();
            let model = label.split_once('×').map_or(label.as_str(), |(_, m)| m);
            alternatives.push(format!("{free} × {gpus}×{model}{}", request.location_label()));
        }
        alternatives
    }
}

/// The same request answered by scanning every device (the benchmark's baseline and the
/// tests' oracle). Co-location: anywhere only.
pub fn place_by_scan(index: &MarketIndex, request: &Request, prices: &PriceBook) -> Option<Placement> {
    let adjusted = adjusted_prices(prices, request);
    let allowed = index.allowed_countries(&request.location);
    let models = request.models();
    let per_node = request.per_node();
    let mut candidates: Vec<(Micros, Entry, Micros)> = index
        .slots
        .iter()
        .enumerate()
        .filter_map(|(i, slot)| {
            let ok = slot.free
                && models.contains(&slot.model)
                && slot.gpu_count >= per_node
                && allowed[slot.country as usize]
                && slot.connectivity >= request.connectivity_min
                && slot.security >= request.security_min;
            if !ok {
                return None;
            }
            let unit = Micros::from(slot.floor_micros).max(adjusted.get(&slot.model).copied().unwrap_or(0));
            if !index.passes_device_checks(i as u32, request, unit) {
                return None;
            }
            let node = if slot.model == CPU_ONLY { unit } else { unit * Micros::from(slot.gpu_count) };
            Some((node, entry(i as u32, slot), unit))
        })
        .collect();
    if candidates.len() < request.nodes as usize {
        return None;
    }
    candidates.sort_unstable();
    let nodes = candidates[..request.nodes as usize]
        .iter()
        .map(|(node, entry, unit)| {
            index.placed(entry.2, &Candidate { node_price: *node, unit_price: *unit, entry: *entry })
        })
        .collect();
    Some(Placement { nodes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::tests::offer;

    const H100: ModelId = 2;

    fn request(nodes: u32, per_node: u8, country: Option<&str>) -> Request {
        Request {
            hardware: Hardware::Gpu { models: vec![H100], per_node },
            nodes,
            cpu_cores_min: 0,
            ram_gib_min: 0,
            location: Location {
                allow: country.map(|c| vec![c.as_bytes().try_into().unwrap()]),
                deny: vec![],
                label: String::new(),
            },
            connectivity_min: ConnectivityTier::None,
            security_min: SecurityTier::Any,
            reputation_min: 0,
            colocation: Colocation::Anywhere,
            price_ceiling_micros: None,
            terms: QuoteTerms { hours: 1, start_now: false },
            supplier: None,
            multi_node: nodes > 1,
        }
    }

    fn pool() -> MarketIndex {
        let mut index = MarketIndex::new();
        let devices = [
            (1, 8, "US", 2_000_000),
            (2, 8, "US", 3_000_000),
            (3, 8, "DE", 2_500_000),
            (4, 4, "JP", 2_000_000),
            (5, 1, "JP", 1_000_000),
        ];
        for (n, gpus, country, floor) in devices {
            index.upsert(&offer(n, H100, gpus, country, floor), true);
        }
        index
    }

    #[test]
    fn cheapest_nodes_win_and_floors_set_prices() {
        let index = pool();
        let prices = PriceBook::new();
        let placed = index.place(&request(2, 8, None), &prices).unwrap();
        let floors: Vec<Micros> = placed.nodes.iter().map(|n| n.unit_price_micros).collect();
        let market = prices.market_price(H100 as usize);
        assert_eq!(floors, [market.max(2_000_000), market.max(2_500_000)]);
        assert_eq!(placed.per_hour_micros(), floors.iter().sum::<Micros>() * 8);
        assert_eq!(placed.nodes[0].country, *b"US");
    }

    #[test]
    fn refusals_name_the_constraint_and_the_alternatives() {
        let index = pool();
        let refusal = index.place(&request(1, 8, Some("JP")), &PriceBook::new()).unwrap_err();
        let text = refusal.to_string();
        assert!(matches!(refusal, Refusal::NoCapacity { .. }));
        assert!(text.starts_with("no 1 × 8×H100 in JP: 0 free after the location filter"), "{text}");
        assert!(text.contains("8×H100 elsewhere: 2 in US, 1 in DE"), "{text}");
        assert!(text.contains("1 × 4×H100 in JP"), "{text}");
        let mut ultra = request(1, 8, None);
        ultra.connectivity_min = ConnectivityTier::Ultra;
        let tiered = index.place(&ultra, &PriceBook::new()).unwrap_err().to_string();
        assert!(tiered.starts_with("no 1 × 8×H100: 0 free after the connectivity-tier filter"), "{tiered}");

        let impossible = index.place(&request(1, 16, None), &PriceBook::new()).unwrap_err();
        assert_eq!(
            impossible,
            Refusal::Impossible("16 GPUs per node is more than any H100 device on the network has; at most 8".into())
        );
    }

    #[test]
    fn ceilings_reputation_and_colocation_are_honoured() {
        let mut index = pool();
        let prices = PriceBook::new();
        let mut cheap = request(1, 1, None);
        cheap.price_ceiling_micros = Some(prices.market_price(H100 as usize) - 1);
        assert!(index.place(&cheap, &prices).is_err(), "the market price is above the ceiling");

        let mut same_country = request(2, 8, None);
        same_country.colocation = Colocation::SameCountry;
        let placed = index.place(&same_country, &prices).unwrap();
        assert!(placed.nodes.iter().all(|n| n.country == *b"US"));

        let mut trusted = request(1, 1, None);
        trusted.reputation_min = 900;
        assert!(index.place(&trusted, &prices).is_err());
        let mut star = offer(9, H100, 1, "BR", 4_000_000);
        star.reputation = 950;
        index.upsert(&star, true);
        assert_eq!(index.place(&trusted, &prices).unwrap().nodes[0].device, star.key);

        let mut one_supplier = request(2, 1, None);
        one_supplier.colocation = Colocation::SameSupplier;
        let placed = index.place(&one_supplier, &prices).unwrap();
        assert_eq!(placed.nodes[0].supplier, placed.nodes[1].supplier);
    }

    #[test]
    fn a_supplier_filter_keeps_a_replacement_with_its_supplier() {
        let index = pool();
        let prices = PriceBook::new();
        let mut replacement = request(1, 8, None);
        replacement.supplier = Some(offer(3, H100, 8, "DE", 0).supplier);
        let placed = index.place(&replacement, &prices).unwrap();
        assert_eq!(placed.nodes[0].device, offer(3, H100, 8, "DE", 0).key, "the cheaper US nodes are another's");
        replacement.supplier = Some([42; 32]);
        assert!(index.place(&replacement, &prices).is_err());
        assert!(place_by_scan(&index, &replacement, &prices).is_none(), "the oracle agrees");
    }
}
