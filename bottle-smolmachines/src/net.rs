//! Per-bottle addresses computed from the slot core allocates under the
//! state lock (`Home::allocate`). A slot is unique among live bottles, so
//! the subnet and the loopback alias derived from it are too: collisions are
//! impossible by construction (SPEC §7.6), not merely unlikely (a hash).

use std::net::Ipv4Addr;

use serde::Serialize;

use crate::hv::HostOs;

/// Base of the bundle bridges: `10.210.0.0/16`, carved into one `/28` per
/// slot (16 addresses × 4096 slots = exactly the /16).
pub const SUBNET_BASE: [u8; 2] = [10, 210];
/// First two octets of the loopback aliases: `127.77.x.y`.
pub const ALIAS_BASE: [u8; 2] = [127, 77];
/// Slots that fit (must match `bottle_core::state::MAX_SLOTS`).
pub const SLOTS: u32 = 4096;

/// The addresses of one bottle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Addresses {
    /// The bundle bridge, `10.210.a.b/28`.
    pub subnet: String,
    /// Its gateway (first host address).
    pub gateway: Ipv4Addr,
    /// The bundle's pinned IP (second host address).
    pub bundle_ip: Ipv4Addr,
    /// The per-bottle loopback alias the bundle's ports are published on and
    /// that the VM's allowlist names.
    pub loopback_alias: Ipv4Addr,
}

/// Why a slot has no addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutOfSlots(pub u32);

impl Addresses {
    /// Addresses of `slot`.
    pub fn for_slot(slot: u32) -> Result<Addresses, OutOfSlots> {
        if slot >= SLOTS {
            return Err(OutOfSlots(slot));
        }
        let hi = (slot / 16) as u8;
        let lo = ((slot % 16) * 16) as u8;
        let net = Ipv4Addr::new(SUBNET_BASE[0], SUBNET_BASE[1], hi, lo);
        // 127.77.(1 + slot/254).(1 + slot%254): never .0 or .255 in the last
        // octet, never 127.77.0.x (left for humans).
        let alias = Ipv4Addr::new(
            ALIAS_BASE[0],
            ALIAS_BASE[1],
            (1 + slot / 254) as u8,
            (1 + slot % 254) as u8,
        );
        Ok(Addresses {
            subnet: format!("{net}/28"),
            gateway: Ipv4Addr::new(SUBNET_BASE[0], SUBNET_BASE[1], hi, lo + 1),
            bundle_ip: Ipv4Addr::new(SUBNET_BASE[0], SUBNET_BASE[1], hi, lo + 2),
            loopback_alias: alias,
        })
    }
}

impl Addresses {
    /// The one address the VM may reach: its only `--allow-cidr` (as a
    /// `/32`) and the agent's `bundle_host`.
    ///
    /// - Linux: the bundle container's own IP. Its network namespace holds
    ///   only the bundle's listeners, so exactly the bundle's ports answer
    ///   there, whatever else the host serves on `0.0.0.0` (all of 127/8 is
    ///   the host on Linux, so a loopback alias would expose every such
    ///   service). Nothing is published on the host.
    /// - macOS: docker runs in a VM and container IPs are not routable from
    ///   the host, so the ports are published on the loopback alias; a host
    ///   service bound to `0.0.0.0` also answers there (docs/smolmachines.md,
    ///   known limits).
    pub fn agent_endpoint(&self, os: HostOs) -> Ipv4Addr {
        match os {
            HostOs::Macos => self.loopback_alias,
            HostOs::Linux | HostOs::Other => self.bundle_ip,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_slot_gets_distinct_addresses() {
        let mut subnets = BTreeSet::new();
        let mut aliases = BTreeSet::new();
        let mut ips = BTreeSet::new();
        for s in 0..SLOTS {
            let a = Addresses::for_slot(s).unwrap();
            assert!(subnets.insert(a.subnet.clone()), "subnet reused at {s}");
            assert!(aliases.insert(a.loopback_alias), "alias reused at {s}");
            assert!(ips.insert(a.bundle_ip));
            assert!(a.loopback_alias.is_loopback());
            let last = a.loopback_alias.octets()[3];
            assert!(last != 0 && last != 255);
        }
        assert_eq!(SLOTS, bottle_core::state::MAX_SLOTS);
        assert!(Addresses::for_slot(SLOTS).is_err());
        let a = Addresses::for_slot(17).unwrap();
        assert_eq!(a.subnet, "10.210.1.16/28");
        assert_eq!(a.bundle_ip.to_string(), "10.210.1.18");
        assert_eq!(a.loopback_alias.to_string(), "127.77.1.18");
    }

    #[test]
    fn linux_reaches_the_bundle_container_not_host_loopback() {
        let a = Addresses::for_slot(17).unwrap();
        let linux = a.agent_endpoint(HostOs::Linux);
        assert_eq!(linux, a.bundle_ip);
        // neither host loopback nor the bridge gateway (a host address)
        assert!(!linux.is_loopback());
        assert_ne!(linux, a.gateway);
        assert_eq!(a.agent_endpoint(HostOs::Macos), a.loopback_alias);
    }
}
