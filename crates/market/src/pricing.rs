//! Market prices per GPU model, driven by supply and demand.
//!
//! For each model, price = reference × multiplier. The multiplier moves towards a target set
//! by utilisation `u` (hired ÷ online GPUs) and recent demand `d` (GPUs requested in the last
//! minutes ÷ online GPUs, decaying 10 % a minute):
//!
//! ```text
//! target = 0.70 + 1.30·u² + min(0.50, 0.50·d)        clamped to [0.50, 3.00]
//! ```
//!
//! and never by more than 5 % per elapsed minute, so prices cannot jump. A quote then adds an
//! urgency premium for start-now requests (up to +20 %, in proportion to `u`) and a discount for
//! long leases (−5 % from 24 h, −10 % from 7 days, −15 % from 30 days). No device is ever
//! offered below its supplier's floor. All arithmetic is integer (per mille, USD micros).

use std::collections::VecDeque;

use herd_core::catalog::GPU_MODELS;
use herd_core::Micros;

const MULTIPLIER_MIN: i64 = 500;
const MULTIPLIER_MAX: i64 = 3000;
/// Where a model with no history starts.
const MULTIPLIER_START: i64 = 1000;
/// Per mille of the current multiplier per elapsed minute.
const STEP_PER_MINUTE_PERMILLE: i64 = 50;
/// Elapsed minutes counted in one update (a long gap does not allow a huge jump).
const STEP_MINUTES_MAX: i64 = 10;
const DEMAND_DECAY_PER_MINUTE_PERMILLE: u64 = 900;
const URGENCY_PREMIUM_MAX_PERMILLE: i64 = 200;
const HISTORY_SAMPLE_MS: i64 = 3_600_000;
const HISTORY_MS: i64 = 24 * HISTORY_SAMPLE_MS;
const MINUTE_MS: i64 = 60_000;

/// Supply and demand of one model at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelLoad {
    pub online_gpus: u64,
    pub hired_gpus: u64,
}

#[derive(Debug, Clone)]
struct ModelMarket {
    multiplier_permille: i64,
    updated_ms: Option<i64>,
    /// GPUs requested recently (decayed), in GPUs × 1000 to keep precision in integers.
    demand_milli_gpus: u64,
    load: ModelLoad,
    /// Hourly (time, price) samples for the 24 h change.
    history: VecDeque<(i64, Micros)>,
}

/// The target multiplier for a utilisation and demand (both per mille of online GPUs).
/// Non-decreasing in both.
pub fn target_multiplier_permille(utilisation_permille: u64, demand_permille: u64) -> i64 {
    let u = utilisation_permille.min(1000) as i64;
    let pressure = (demand_permille.min(1000) as i64) / 2;
    (700 + 1300 * u * u / 1_000_000 + pressure).clamp(MULTIPLIER_MIN, MULTIPLIER_MAX)
}

fn per_mille(part: u64, whole: u64) -> u64 {
    part.saturating_mul(1000).checked_div(whole).map_or(0, |p| p.min(1000))
}

#[derive(Debug, Clone)]
pub struct PriceBook {
    models: Vec<ModelMarket>,
}

/// What a quote needs to know about the request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuoteTerms {
    pub hours: u32,
    pub start_now: bool,
}

impl Default for PriceBook {
    fn default() -> Self {
        Self::new()
    }
}

impl PriceBook {
    pub fn new() -> PriceBook {
        let model = ModelMarket {
            multiplier_permille: MULTIPLIER_START,
            updated_ms: None,
            demand_milli_gpus: 0,
            load: ModelLoad::default(),
            history: VecDeque::new(),
        };
        PriceBook { models: vec![model; GPU_MODELS.len()] }
    }

    /// The current market price per GPU-hour of a catalog model.
    pub fn market_price(&self, model: usize) -> Micros {
        GPU_MODELS[model].reference_price_micros * self.models[model].multiplier_permille / 1000
    }

    pub fn multiplier_permille(&self, model: usize) -> i64 {
        self.models[model].multiplier_permille
    }

    pub fn load(&self, model: usize) -> ModelLoad {
        self.models[model].load
    }

    pub fn utilisation_permille(&self, model: usize) -> u64 {
        let load = self.models[model].load;
        per_mille(load.hired_gpus, load.online_gpus)
    }

    /// Counts GPUs asked for (placed or refused): demand that moves the price.
    pub fn record_demand(&mut self, model: usize, gpus: u64) {
        let market = &mut self.models[model];
        market.demand_milli_gpus = market.demand_milli_gpus.saturating_add(gpus.saturating_mul(1000));
    }

    /// Moves every model's multiplier towards its target for the time elapsed since its last
    /// update (bounded per minute), and records hourly samples.
    pub fn update(&mut self, now_ms: i64, loads: &[ModelLoad]) {
        for (index, market) in self.models.iter_mut().enumerate() {
            let load = loads.get(index).copied().unwrap_or_default();
            market.load = load;
            let minutes = match market.updated_ms {
                Some(then) => ((now_ms - then) / MINUTE_MS).clamp(0, STEP_MINUTES_MAX),
                None => STEP_MINUTES_MAX,
            };
            if minutes == 0 && market.updated_ms.is_some() {
                continue;
            }
            for _ in 0..minutes {
                market.demand_milli_gpus = market.demand_milli_gpus * DEMAND_DECAY_PER_MINUTE_PERMILLE / 1000;
            }
            let demand_permille = per_mille(market.demand_milli_gpus / 1000, load.online_gpus.max(1));
            let target = target_multiplier_permille(per_mille(load.hired_gpus, load.online_gpus), demand_permille);
            let current = market.multiplier_permille;
            let step = (current * STEP_PER_MINUTE_PERMILLE * minutes / 1000).max(1);
            market.multiplier_permille = target.clamp(current - step, current + step);
            market.updated_ms = Some(market.updated_ms.map_or(now_ms, |then| then + minutes * MINUTE_MS));
            let price = GPU_MODELS[index].reference_price_micros * market.multiplier_permille / 1000;
            if market.history.back().is_none_or(|(t, _)| now_ms - t >= HISTORY_SAMPLE_MS) {
                market.history.push_back((now_ms, price));
            }
            while market.history.front().is_some_and(|(t, _)| now_ms - t > HISTORY_MS) {
                market.history.pop_front();
            }
        }
    }

    /// Price now minus the oldest price within the last 24 h.
    /// The hourly samples of the last 24 h, oldest first: (ms since the epoch, price).
    pub fn history(&self, model: usize) -> Vec<(i64, Micros)> {
        self.models[model].history.iter().copied().collect()
    }

    pub fn change_24h(&self, model: usize) -> Micros {
        let oldest = self.models[model].history.front().map_or(self.market_price(model), |(_, p)| *p);
        self.market_price(model) - oldest
    }

    /// What one device costs per GPU-hour (per node-hour for CPU-only machines) for a request
    /// with these terms: the market price with urgency and duration adjustments, never below
    /// the device's floor.
    pub fn device_price(&self, model: Option<usize>, floor_micros: Micros, terms: QuoteTerms) -> Micros {
        let Some(model) = model else {
            // CPU-only machines are priced at their floor (set from cores at registration).
            return floor_micros;
        };
        let mut price = self.market_price(model);
        if terms.start_now {
            let premium = URGENCY_PREMIUM_MAX_PERMILLE * self.utilisation_permille(model) as i64 / 1000;
            price = price * (1000 + premium) / 1000;
        }
        let discount = match terms.hours {
            h if h >= 720 => 150,
            h if h >= 168 => 100,
            h if h >= 24 => 50,
            _ => 0,
        };
        price = price * (1000 - discount) / 1000;
        price.max(floor_micros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H100: usize = 2;

    fn load(online: u64, hired: u64) -> Vec<ModelLoad> {
        let mut loads = vec![ModelLoad::default(); GPU_MODELS.len()];
        loads[H100] = ModelLoad { online_gpus: online, hired_gpus: hired };
        loads
    }

    #[test]
    fn busy_models_get_dearer_idle_ones_cheaper_within_bounds() {
        let mut book = PriceBook::new();
        let reference = GPU_MODELS[H100].reference_price_micros;
        book.update(0, &load(1000, 0));
        assert!(book.market_price(H100) < reference, "idle supply lowers the price");
        let mut busy = PriceBook::new();
        busy.update(0, &load(1000, 1000));
        assert!(busy.market_price(H100) > reference);
        for minute in 1..600 {
            busy.update(minute * MINUTE_MS, &load(1000, 1000));
        }
        assert_eq!(busy.multiplier_permille(H100), 2000, "converges to the target at full use");
    }

    #[test]
    fn changes_are_bounded_per_minute() {
        let mut book = PriceBook::new();
        book.update(0, &load(1000, 500));
        let before = book.multiplier_permille(H100);
        book.update(MINUTE_MS, &load(1000, 1000));
        let after = book.multiplier_permille(H100);
        assert!(after - before <= before * 50 / 1000 + 1, "{before} → {after}");
        book.update(MINUTE_MS + 1, &load(1000, 0));
        assert_eq!(book.multiplier_permille(H100), after, "no change within the same minute");
    }

    #[test]
    fn demand_raises_the_price_and_decays() {
        let mut calm = PriceBook::new();
        let mut rushed = PriceBook::new();
        rushed.record_demand(H100, 2000);
        for minute in 0..5 {
            calm.update(minute * MINUTE_MS, &load(1000, 300));
            rushed.update(minute * MINUTE_MS, &load(1000, 300));
        }
        assert!(rushed.market_price(H100) > calm.market_price(H100));
    }

    #[test]
    fn quotes_adjust_for_urgency_and_duration_but_respect_floors() {
        let mut book = PriceBook::new();
        book.update(0, &load(100, 100));
        let now = QuoteTerms { hours: 1, start_now: true };
        let later = QuoteTerms { hours: 1, start_now: false };
        let month = QuoteTerms { hours: 720, start_now: false };
        let urgent = book.device_price(Some(H100), 0, now);
        let flexible = book.device_price(Some(H100), 0, later);
        assert!(urgent > flexible);
        assert!(book.device_price(Some(H100), 0, month) < flexible);
        assert_eq!(book.device_price(Some(H100), 99_000_000, month), 99_000_000, "never below the floor");
        assert_eq!(book.device_price(None, 320_000, now), 320_000);
    }

    #[test]
    fn the_24h_change_compares_with_a_day_ago() {
        let mut book = PriceBook::new();
        book.update(0, &load(1000, 0));
        let start = book.market_price(H100);
        for minute in 1..=(12 * 60) {
            book.update(minute * MINUTE_MS, &load(1000, 1000));
        }
        assert_eq!(book.change_24h(H100), book.market_price(H100) - start, "against the sample at t = 0");
        for minute in (12 * 60)..=(40 * 60) {
            book.update(minute * MINUTE_MS, &load(1000, 1000));
        }
        assert_eq!(book.change_24h(H100), 0, "a day at a steady price");
    }
}
