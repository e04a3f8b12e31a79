//! Placement: which ready devices a cluster request gets.
//!
//! Architecture invariant: pure. The coordinator passes a snapshot of ready devices (already
//! narrowed by an indexed query) and commits the returned plan in one transaction that
//! re-checks every device is still free, so a stale plan is rejected rather than applied.
//! This is first fit; pricing and ranking come with the market proper.

pub mod index;
pub mod matching;
pub mod pricing;

use std::fmt;

/// What each node of a cluster needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hardware {
    /// `per_node` GPUs of one catalog model on each node.
    Gpu { model: &'static str, per_node: u32 },
    /// Any machine; CPU-only machines are preferred so GPUs stay free for GPU work.
    Cpu,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRequest {
    pub hardware: Hardware,
    pub nodes: u32,
    /// ISO 3166-1 alpha-2, upper case.
    pub country: Option<String>,
}

/// A ready device as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub device_id: String,
    pub country: String,
    /// Catalog model name and count of the device's GPUs, if it has any herd knows.
    pub gpu: Option<(&'static str, u32)>,
}

/// Devices in rank order: rank 0 is the head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub device_ids: Vec<String>,
}

/// How many ready devices matched when there were too few.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shortfall {
    pub matching: u32,
}

/// Ready devices of one kind in one country, for "ready now: …" in a refusal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Availability {
    /// Catalog model and GPUs per device; None for CPU-only machines.
    pub gpu: Option<(String, u32)>,
    pub country: String,
    pub devices: u32,
}

/// Why a request could not be placed, with what the network does have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoCapacity {
    pub wanted: String,
    pub matching: u32,
    pub available: Vec<Availability>,
}

impl NoCapacity {
    pub fn new(request: &ClusterRequest, shortfall: Shortfall, mut available: Vec<Availability>) -> NoCapacity {
        available.sort();
        let wanted = match &request.country {
            Some(country) => format!("{} × {} in {country}", request.nodes, request.hardware),
            None => format!("{} × {}", request.nodes, request.hardware),
        };
        NoCapacity { wanted, matching: shortfall.matching, available }
    }
}

impl fmt::Display for NoCapacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no capacity for {}: {} matching device(s) ready", self.wanted, self.matching)?;
        if self.available.is_empty() {
            return write!(f, "; no devices are ready on the network");
        }
        let listed: Vec<String> = self
            .available
            .iter()
            .map(|a| match &a.gpu {
                Some((model, n)) => format!("{} × {n}×{model} in {}", a.devices, a.country),
                None => format!("{} × CPU in {}", a.devices, a.country),
            })
            .collect();
        write!(f, "; ready now: {}", listed.join(", "))
    }
}

impl Hardware {
    fn accepts(&self, offer: &Offer) -> bool {
        match self {
            Hardware::Gpu { model, per_node } => offer.gpu.is_some_and(|(m, n)| m == *model && n >= *per_node),
            Hardware::Cpu => true,
        }
    }
}

impl fmt::Display for Hardware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hardware::Gpu { model, per_node } => write!(f, "{per_node}×{model}"),
            Hardware::Cpu => f.write_str("CPU"),
        }
    }
}

/// First fit over `offers` in the order given; all nodes or nothing.
pub fn first_fit(request: &ClusterRequest, offers: &[Offer]) -> Result<Plan, Shortfall> {
    let in_country = |o: &&Offer| request.country.as_ref().is_none_or(|c| &o.country == c);
    let mut matching: Vec<&Offer> = offers.iter().filter(in_country).filter(|o| request.hardware.accepts(o)).collect();
    if request.hardware == Hardware::Cpu {
        // Stable: CPU-only machines first, then the rest in their given order.
        matching.sort_by_key(|o| o.gpu.is_some());
    }
    if matching.len() < request.nodes as usize {
        return Err(Shortfall { matching: matching.len() as u32 });
    }
    Ok(Plan { device_ids: matching.iter().take(request.nodes as usize).map(|o| o.device_id.clone()).collect() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(id: &str, country: &str, gpu: Option<(&'static str, u32)>) -> Offer {
        Offer { device_id: id.into(), country: country.into(), gpu }
    }

    fn fleet() -> Vec<Offer> {
        vec![
            offer("a", "US", Some(("H100", 8))),
            offer("b", "DE", Some(("H100", 8))),
            offer("c", "US", None),
            offer("d", "JP", Some(("H100", 4))),
            offer("e", "DE", None),
        ]
    }

    #[test]
    fn gpu_requests_get_matching_devices_in_order() {
        let request =
            ClusterRequest { hardware: Hardware::Gpu { model: "H100", per_node: 8 }, nodes: 2, country: None };
        assert_eq!(first_fit(&request, &fleet()).unwrap().device_ids, ["a", "b"]);
    }

    #[test]
    fn cpu_requests_prefer_cpu_only_machines() {
        let request = ClusterRequest { hardware: Hardware::Cpu, nodes: 3, country: None };
        assert_eq!(first_fit(&request, &fleet()).unwrap().device_ids, ["c", "e", "a"]);
    }

    #[test]
    fn country_pins_are_honoured() {
        let request = ClusterRequest {
            hardware: Hardware::Gpu { model: "H100", per_node: 4 },
            nodes: 1,
            country: Some("JP".into()),
        };
        assert_eq!(first_fit(&request, &fleet()).unwrap().device_ids, ["d"]);
    }

    #[test]
    fn shortfall_is_all_or_nothing_and_says_what_exists() {
        let request = ClusterRequest {
            hardware: Hardware::Gpu { model: "H100", per_node: 8 },
            nodes: 1,
            country: Some("JP".into()),
        };
        let shortfall = first_fit(&request, &fleet()).unwrap_err();
        assert_eq!(shortfall.matching, 0);
        let available = vec![
            Availability { gpu: Some(("H100".into(), 8)), country: "US".into(), devices: 1 },
            Availability { gpu: Some(("H100".into(), 4)), country: "JP".into(), devices: 1 },
        ];
        let text = NoCapacity::new(&request, shortfall, available).to_string();
        assert!(text.starts_with("no capacity for 1 × 8×H100 in JP: 0 matching"), "{text}");
        assert!(text.contains("1 × 4×H100 in JP, 1 × 8×H100 in US"), "{text}");
        let too_many = ClusterRequest { hardware: Hardware::Cpu, nodes: 6, country: None };
        assert_eq!(first_fit(&too_many, &fleet()).unwrap_err().matching, 5);
        let empty = NoCapacity::new(&too_many, Shortfall { matching: 0 }, vec![]);
        assert!(empty.to_string().contains("no devices are ready"));
    }
}
