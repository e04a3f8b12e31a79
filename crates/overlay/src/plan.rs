//! The overlay's address plan. One network, 100.64.0.0/10 (the shared address space of RFC
//! 6598, which home and office LANs do not use), holds every lease: Nebula 1.6 wants each
//! lighthouse inside a host's own network, so every host certificate carries the /10 and the
//! lighthouses sit in its first /24. Each lease gets a /24 of its own after that (16,383 at
//! once), its nodes numbered from .1 in the order their certificates were issued (a
//! replacement takes a new number: the old certificate is blocklisted, its address retired
//! with it). Isolation between leases is Nebula's firewall by certificate group, not routing.

use std::net::Ipv4Addr;

pub const NETWORK: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 0);
pub const PREFIX: u8 = 10;
/// Lease blocks are 1..=MAX_BLOCK (block 0 holds the lighthouses).
pub const MAX_BLOCK: u32 = (1 << (32 - PREFIX as u32 - 8)) - 1;
/// Host numbers within a lease's /24.
pub const MAX_HOST: u32 = 254;
/// Lighthouses a network may run (their addresses are .1 up in block 0).
pub const MAX_LIGHTHOUSES: usize = 16;

/// The overlay address of lighthouse `index` (0-based).
pub fn lighthouse_address(index: usize) -> Ipv4Addr {
    assert!(index < MAX_LIGHTHOUSES, "at most {MAX_LIGHTHOUSES} lighthouses");
    Ipv4Addr::from(u32::from(NETWORK) + 1 + index as u32)
}

/// Host `host` (1..=254) of lease block `block` (1..=MAX_BLOCK).
pub fn lease_address(block: u32, host: u32) -> Option<Ipv4Addr> {
    ((1..=MAX_BLOCK).contains(&block) && (1..=MAX_HOST).contains(&host))
        .then(|| Ipv4Addr::from(u32::from(NETWORK) + (block << 8) + host))
}

/// The group every node of a lease carries and accepts traffic from.
pub fn lease_group(cluster: &str) -> String {
    format!("lease-{cluster}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_fill_the_network_and_no_more() {
        assert_eq!(lighthouse_address(0), Ipv4Addr::new(100, 64, 0, 1));
        assert_eq!(lease_address(1, 1), Some(Ipv4Addr::new(100, 64, 1, 1)));
        assert_eq!(lease_address(MAX_BLOCK, MAX_HOST), Some(Ipv4Addr::new(100, 127, 255, 254)));
        assert_eq!(lease_address(0, 1), None, "block 0 is the lighthouses'");
        assert_eq!(lease_address(MAX_BLOCK + 1, 1), None);
        assert_eq!(lease_address(1, 255), None, "no broadcast address");
    }
}
