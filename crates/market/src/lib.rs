//! Placement: which ready devices a cluster request gets.
//!
//! Architecture invariant: pure. The coordinator passes a snapshot of ready devices (already
//! narrowed by an indexed query) and commits the returned plan in one transaction that
//! re-checks every device is still free, so a stale plan is rejected rather than applied.
//! This is first fit; pricing and ranking come with the market proper.

use std::collections::BTreeMap;
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

/// Why a request could not be placed, with what the network does have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoCapacity {
    pub wanted: String,
    pub matching: u32,
    /// (hardware, country) → ready devices, sorted, for "available: …".
    pub available: Vec<(String, String, u32)>,
}

impl fmt::Display for NoCapacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no capacity for {}: {} matching device(s) ready", self.wanted, self.matching)?;
        if self.available.is_empty() {
            return write!(f, "; no devices are ready on the network");
        }
        let listed: Vec<String> =
            self.available.iter().map(|(hw, country, n)| format!("{n} × {hw} in {country}")).collect();
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

fn offer_label(offer: &Offer) -> String {
    match offer.gpu {
        Some((model, n)) => format!("{n}×{model}"),
        None => "CPU".to_owned(),
    }
}

/// First fit over `offers` in the order given; all nodes or nothing.
pub fn first_fit(request: &ClusterRequest, offers: &[Offer]) -> Result<Plan, NoCapacity> {
    let in_country = |o: &&Offer| request.country.as_ref().is_none_or(|c| &o.country == c);
    let mut matching: Vec<&Offer> = offers.iter().filter(in_country).filter(|o| request.hardware.accepts(o)).collect();
    if request.hardware == Hardware::Cpu {
        // Stable: CPU-only machines first, then the rest in their given order.
        matching.sort_by_key(|o| o.gpu.is_some());
    }
    if matching.len() >= request.nodes as usize {
        let device_ids = matching.iter().take(request.nodes as usize).map(|o| o.device_id.clone()).collect();
        return Ok(Plan { device_ids });
    }
    let mut available: BTreeMap<(String, String), u32> = BTreeMap::new();
    for offer in offers {
        *available.entry((offer_label(offer), offer.country.clone())).or_default() += 1;
    }
    let wanted = match &request.country {
        Some(country) => format!("{} × {} in {country}", request.nodes, request.hardware),
        None => format!("{} × {}", request.nodes, request.hardware),
    };
    Err(NoCapacity {
        wanted,
        matching: matching.len() as u32,
        available: available.into_iter().map(|((hw, c), n)| (hw, c, n)).collect(),
    })
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
        let err = first_fit(&request, &fleet()).unwrap_err();
        assert_eq!(err.matching, 0);
        let text = err.to_string();
        assert!(text.contains("1 × 8×H100 in JP"), "{text}");
        assert!(text.contains("1 × 4×H100 in JP"), "{text}");
        assert!(text.contains("1 × 8×H100 in US"), "{text}");
        let too_many = ClusterRequest { hardware: Hardware::Cpu, nodes: 6, country: None };
        assert_eq!(first_fit(&too_many, &fleet()).unwrap_err().matching, 5);
        assert!(first_fit(&too_many, &[]).unwrap_err().to_string().contains("no devices are ready"));
    }
}
