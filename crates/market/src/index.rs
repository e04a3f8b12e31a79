//! The supply index: every device the market knows, and the free ones grouped into buckets
//! by model, country and GPUs per device, each bucket ordered by floor price then reputation.
//! A request visits only the buckets that can match and reads them cheapest first, so it
//! never scans the whole pool. Tiers, reputation and size are checked per device while
//! reading: splitting buckets by them too made every request touch fifteen times as many
//! buckets, which cost more than it saved (see docs/BENCHMARKS.md).

use std::collections::{BTreeSet, HashMap};

use herd_core::{ConnectivityTier, SecurityTier};

/// A device's public key; the index stores it once and refers to devices by slot.
pub type DeviceKey = [u8; 32];
/// A supplier account's public key.
pub type SupplierKey = [u8; 32];

/// Catalog index of a GPU model, or `CPU_ONLY` for machines without a known GPU.
pub type ModelId = u8;
pub const CPU_ONLY: ModelId = u8::MAX;

/// Reputation is 0..=1000; new devices start at 500.
pub const REPUTATION_MAX: u16 = 1000;

/// What the market needs to know about one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceOffer {
    pub key: DeviceKey,
    pub supplier: SupplierKey,
    pub model: ModelId,
    pub gpu_count: u8,
    /// ISO 3166-1 alpha-2, upper case.
    pub country: [u8; 2],
    pub connectivity: ConnectivityTier,
    pub security: SecurityTier,
    pub reputation: u16,
    pub cpu_cores: u16,
    pub ram_gib: u16,
    /// The supplier's floor: USD micros per GPU-hour (per node-hour for CPU-only machines).
    pub floor_micros: u32,
    /// It can be one node of several: it reaches the lease's other nodes (it joins the
    /// lease's overlay, or shares a machine with them). Else single-node leases only.
    pub multi_node: bool,
}

/// Compact per-device record (the key lives in `keys`, the supplier is interned).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    pub supplier: u32,
    pub floor_micros: u32,
    pub cpu_cores: u16,
    pub ram_gib: u16,
    pub reputation: u16,
    pub country: u16,
    pub model: ModelId,
    pub gpu_count: u8,
    pub connectivity: ConnectivityTier,
    pub security: SecurityTier,
    pub multi_node: bool,
    pub free: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct BucketKey {
    pub model: ModelId,
    pub country: u16,
    pub gpu_count: u8,
}

/// Order inside a bucket: cheapest floor first, then highest reputation, then slot.
pub(crate) type Entry = (u32, u16, u32);

pub(crate) fn entry(slot_id: u32, slot: &Slot) -> Entry {
    (slot.floor_micros, REPUTATION_MAX - slot.reputation.min(REPUTATION_MAX), slot_id)
}

#[derive(Debug, Default)]
pub struct MarketIndex {
    pub(crate) slots: Vec<Slot>,
    keys: Vec<DeviceKey>,
    slot_of: HashMap<DeviceKey, u32>,
    suppliers: Vec<SupplierKey>,
    supplier_of: HashMap<SupplierKey, u32>,
    pub(crate) countries: Vec<[u8; 2]>,
    country_of: HashMap<[u8; 2], u16>,
    pub(crate) buckets: HashMap<BucketKey, BTreeSet<Entry>>,
    /// Every bucket key ever used, per model (buckets are never removed, only emptied).
    pub(crate) buckets_by_model: Vec<Vec<BucketKey>>,
    /// The most GPUs on any one device of each model, free or not: requests for more are
    /// impossible rather than merely unavailable.
    pub(crate) max_gpus_by_model: Vec<u8>,
    free_count: usize,
}

/// A plan named a device that is no longer free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleDevice(pub DeviceKey);

impl MarketIndex {
    pub fn new() -> MarketIndex {
        MarketIndex { buckets_by_model: vec![Vec::new(); 256], max_gpus_by_model: vec![0; 256], ..Default::default() }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn free_count(&self) -> usize {
        self.free_count
    }

    pub(crate) fn key(&self, slot: u32) -> &DeviceKey {
        &self.keys[slot as usize]
    }

    pub(crate) fn supplier_key(&self, supplier: u32) -> &SupplierKey {
        &self.suppliers[supplier as usize]
    }

    pub fn country_id(&self, country: &[u8; 2]) -> Option<u16> {
        self.country_of.get(country).copied()
    }

    fn intern_country(&mut self, country: [u8; 2]) -> u16 {
        if let Some(id) = self.country_of.get(&country) {
            return *id;
        }
        let id = self.countries.len() as u16;
        self.countries.push(country);
        self.country_of.insert(country, id);
        id
    }

    fn intern_supplier(&mut self, supplier: SupplierKey) -> u32 {
        if let Some(id) = self.supplier_of.get(&supplier) {
            return *id;
        }
        let id = self.suppliers.len() as u32;
        self.suppliers.push(supplier);
        self.supplier_of.insert(supplier, id);
        id
    }

    fn bucket_key(slot: &Slot) -> BucketKey {
        BucketKey { model: slot.model, country: slot.country, gpu_count: slot.gpu_count }
    }

    fn unlist(&mut self, slot_id: u32) {
        let slot = self.slots[slot_id as usize];
        if slot.free {
            if let Some(bucket) = self.buckets.get_mut(&Self::bucket_key(&slot)) {
                bucket.remove(&entry(slot_id, &slot));
            }
            self.slots[slot_id as usize].free = false;
            self.free_count -= 1;
        }
    }

    fn list(&mut self, slot_id: u32) {
        let slot = self.slots[slot_id as usize];
        if slot.free {
            return;
        }
        let key = Self::bucket_key(&slot);
        let bucket = self.buckets.entry(key).or_insert_with(|| {
            self.buckets_by_model[key.model as usize].push(key);
            BTreeSet::new()
        });
        bucket.insert(entry(slot_id, &slot));
        self.slots[slot_id as usize].free = true;
        self.free_count += 1;
    }

    /// Adds or updates a device; `free` says whether it can be leased now (ready).
    pub fn upsert(&mut self, offer: &DeviceOffer, free: bool) {
        let supplier = self.intern_supplier(offer.supplier);
        let country = self.intern_country(offer.country);
        let slot = Slot {
            supplier,
            floor_micros: offer.floor_micros,
            cpu_cores: offer.cpu_cores,
            ram_gib: offer.ram_gib,
            reputation: offer.reputation.min(REPUTATION_MAX),
            country,
            model: offer.model,
            gpu_count: offer.gpu_count,
            connectivity: offer.connectivity,
            security: offer.security,
            multi_node: offer.multi_node,
            free: false,
        };
        let slot_id = match self.slot_of.get(&offer.key).copied() {
            Some(id) => {
                self.unlist(id);
                self.slots[id as usize] = slot;
                id
            }
            None => {
                let id = self.slots.len() as u32;
                self.slots.push(slot);
                self.keys.push(offer.key);
                self.slot_of.insert(offer.key, id);
                id
            }
        };
        let max = &mut self.max_gpus_by_model[offer.model as usize];
        *max = (*max).max(offer.gpu_count);
        if free {
            self.list(slot_id);
        }
    }

    /// Marks a known device free (ready) or not (hired, offline, blocked); false if unknown.
    pub fn set_free(&mut self, key: &DeviceKey, free: bool) -> bool {
        let Some(&slot_id) = self.slot_of.get(key) else { return false };
        if free {
            self.list(slot_id);
        } else {
            self.unlist(slot_id);
        }
        true
    }

    pub fn is_free(&self, key: &DeviceKey) -> bool {
        self.slot_of.get(key).is_some_and(|id| self.slots[*id as usize].free)
    }

    /// Takes every device of a plan, or none if any is no longer free.
    pub fn reserve(&mut self, keys: &[DeviceKey]) -> Result<(), StaleDevice> {
        for key in keys {
            if !self.is_free(key) {
                return Err(StaleDevice(*key));
            }
        }
        for key in keys {
            self.set_free(key, false);
        }
        Ok(())
    }

    /// Bytes the index holds per device, counted from its structures' capacities (a lower
    /// bound: allocator overhead comes on top; the bench also measures resident memory).
    pub fn approx_bytes(&self) -> usize {
        use std::mem::size_of;
        let slots = self.slots.capacity() * size_of::<Slot>() + self.keys.capacity() * size_of::<DeviceKey>();
        // hashbrown: one control byte per bucket plus the entry; capacity ≈ buckets × 7/8.
        let map = self.slot_of.capacity() * (size_of::<(DeviceKey, u32)>() + 1);
        // B-tree leaves hold up to 11 entries; count ~1.4× the entries for partly full nodes.
        let tree_entries: usize = self.buckets.values().map(BTreeSet::len).sum();
        slots + map + tree_entries * size_of::<Entry>() * 14 / 10
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn offer(n: u32, model: ModelId, gpus: u8, country: &str, floor: u32) -> DeviceOffer {
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(&n.to_le_bytes());
        let mut supplier = [0u8; 32];
        supplier[0] = (n % 7) as u8;
        DeviceOffer {
            key,
            supplier,
            model,
            gpu_count: gpus,
            country: country.as_bytes().try_into().unwrap(),
            connectivity: ConnectivityTier::High,
            security: SecurityTier::Verified,
            reputation: 500,
            cpu_cores: 32,
            ram_gib: 128,
            floor_micros: floor,
            multi_node: true,
        }
    }

    #[test]
    fn devices_move_between_free_and_taken() {
        let mut index = MarketIndex::new();
        let a = offer(1, 2, 8, "US", 2_000_000);
        let b = offer(2, 2, 8, "US", 2_100_000);
        index.upsert(&a, true);
        index.upsert(&b, false);
        assert_eq!((index.len(), index.free_count()), (2, 1));
        assert!(index.set_free(&b.key, true));
        assert_eq!(index.free_count(), 2);
        assert!(index.reserve(&[a.key, b.key]).is_ok());
        assert_eq!(index.free_count(), 0);
        assert_eq!(index.reserve(&[a.key]), Err(StaleDevice(a.key)), "no device in two leases");
        index.set_free(&a.key, true);
        assert_eq!(index.reserve(&[a.key, b.key]), Err(StaleDevice(b.key)));
        assert!(index.is_free(&a.key), "a refused plan takes nothing");
    }

    #[test]
    fn updates_move_a_device_to_its_new_bucket() {
        let mut index = MarketIndex::new();
        let mut a = offer(1, 2, 8, "US", 2_000_000);
        index.upsert(&a, true);
        a.country = *b"DE";
        a.floor_micros = 1;
        index.upsert(&a, true);
        assert_eq!(index.free_count(), 1);
        let entries: usize = index.buckets.values().map(BTreeSet::len).sum();
        assert_eq!(entries, 1, "the old bucket no longer lists it");
    }
}
