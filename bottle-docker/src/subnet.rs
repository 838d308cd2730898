//! Subnets for a bottle's two networks from bottle's own range, for when
//! docker's address pools cannot give one (issue #19: docker's default
//! pools hold 31 networks, so about 12 bottles).
//!
//! By default (`fallback`) a network is created exactly as rendered, and
//! only a create that docker refuses because its pools are exhausted is
//! retried with `--subnet`, a `/28` ([`NETWORK_PREFIX`]) picked by
//! [`choose`] from the range (`BOTTLE_SUBNET_POOL`, default
//! [`DEFAULT_POOL`]) that overlaps no docker network (`docker network
//! inspect`, IPAM config) and no route of the host bottle runs on
//! (`/proc/net/route`; with a remote engine, routes of the engine's host
//! are not known here: choose a range free there). `always` picks from the range for every network;
//! `off` never does. A concurrent create that took the same subnet first
//! makes docker answer "Pool overlaps": the used subnets are read again and
//! the next free one is tried, [`ATTEMPTS`] times at most. No `--gateway`
//! is given: docker reserves the subnet's first host address as the
//! gateway (on the internal network `inhibit_ipv4` keeps it off the
//! bridge, as with a subnet from docker's pools). The networks
//! carry the same labels either way, so rollback and `bottle gc` remove
//! them like any other. README "Networks and subnets".

use std::fmt;
use std::net::Ipv4Addr;

use bottle_core::command::{failure, CommandRunner, CommandSpec};
use bottle_core::{Error, Result};

/// Env var naming bottle's range (`10.211.0.0/16`).
pub const SUBNET_POOL_ENV: &str = "BOTTLE_SUBNET_POOL";
/// Env var choosing when the range is used: `fallback`, `always`, `off`.
pub const SUBNET_MODE_ENV: &str = "BOTTLE_SUBNET_MODE";
/// The default range: private (RFC 1918), outside docker's default pools
/// (172.17–31.0.0/16, 192.168.0.0/16) and outside the `10.210.0.0/16` the
/// smolmachines backend carves per slot; a /16 holds 4096 networks, 2048
/// bottles.
pub const DEFAULT_POOL: &str = "10.211.0.0/16";
/// The size of each network: 16 addresses, of which the network address,
/// the broadcast address and the gateway docker reserves (even with
/// `inhibit_ipv4`, which only keeps it off the bridge) leave 13 for
/// endpoints; a bottle's networks hold two (internal: agent and bundle) and
/// one (egress: the bundle).
pub const NETWORK_PREFIX: u8 = 28;
/// How many subnets a network create tries before giving up when other
/// creates keep taking the chosen one first.
pub const ATTEMPTS: usize = 8;

/// An IPv4 network (the `ipnet` crate's, host bits cleared), with the few
/// questions the chooser asks of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ipv4Net(ipnet::Ipv4Net);

impl Ipv4Net {
    /// The network of `addr/prefix` (host bits cleared); `None` when
    /// `prefix > 32`.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Self> {
        ipnet::Ipv4Net::new(addr, prefix)
            .ok()
            .map(|n| Self(n.trunc()))
    }

    /// Parse `a.b.c.d/p`; `None` for anything else (IPv6 included).
    pub fn parse(s: &str) -> Option<Self> {
        s.trim()
            .parse::<ipnet::Ipv4Net>()
            .ok()
            .map(|n| Self(n.trunc()))
    }

    /// The first address.
    pub fn addr(&self) -> Ipv4Addr {
        self.0.network()
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.0.prefix_len()
    }

    /// Whether `addr` lies in it.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        self.0.contains(&addr)
    }

    /// Whether the two share any address (for prefixes, one holds the
    /// other).
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.0.contains(&other.0) || other.0.contains(&self.0)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The first `/prefix` subnet of `pool`, counting from the `start`-th one
/// and wrapping around, that overlaps none of `taken`; `None` when every
/// one does (or `prefix` is wider than the pool). `start` spreads the
/// bottles of one home over the range (the launch passes the slot, unique
/// among live bottles, so two bottles started together try different
/// subnets first); "first free" is then first free from there.
pub fn choose(pool: Ipv4Net, prefix: u8, taken: &[Ipv4Net], start: u32) -> Option<Ipv4Net> {
    if prefix < pool.prefix() || prefix > 32 {
        return None;
    }
    let count = 1u64 << (prefix - pool.prefix());
    let size = 1u64 << (32 - prefix);
    let base = u64::from(u32::from(pool.addr()));
    (0..count)
        .map(|i| (u64::from(start) + i) % count)
        .filter_map(|i| Ipv4Net::new(Ipv4Addr::from((base + i * size) as u32), prefix))
        .find(|c| !taken.iter().any(|t| t.overlaps(c)))
}

/// The destinations of `/proc/net/route` (each address printed as hex of
/// its network-order bytes read as a native integer), without default
/// routes (which overlap everything and say nothing about the LAN).
pub fn parse_proc_net_route(text: &str) -> Vec<Ipv4Net> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let m = u32::from_str_radix(f.get(7)?, 16).ok()?;
            let m = u32::from_be_bytes(m.to_ne_bytes());
            (m != 0 && m.leading_ones() + m.trailing_zeros() == 32).then_some(())?;
            Ipv4Net::new(Ipv4Addr::from(dest.to_ne_bytes()), m.leading_ones() as u8)
        })
        .collect()
}

/// The networks routed on the host bottle runs on (Linux; elsewhere, where
/// the file is missing, none are known). Read through the runner so the
/// launch's transcript shows it and tests can answer it.
fn host_routes(runner: &dyn CommandRunner) -> Result<Vec<Ipv4Net>> {
    let o = runner.output(
        &CommandSpec::new("cat")
            .arg("/proc/net/route")
            .allow_failure(),
    )?;
    Ok(if o.success() {
        parse_proc_net_route(&o.stdout)
    } else {
        Vec::new()
    })
}

/// Docker refused a network because its address pools have no subnet left
/// (20.10: "could not find an available, non-overlapping IPv4 address
/// pool"; newer engines: "all predefined address pools have been fully
/// subnetted").
pub fn pools_exhausted(stderr: &str) -> bool {
    stderr.contains("could not find an available, non-overlapping IPv4 address pool")
        || stderr.contains("all predefined address pools have been fully subnetted")
}

/// Docker refused a `--subnet` that an existing network already covers.
pub fn pool_overlaps(stderr: &str) -> bool {
    stderr.contains("Pool overlaps with other one on this address space")
        || stderr.contains("networks have overlapping IPv4")
}

/// When bottle's range is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubnetMode {
    /// Docker's pools first; bottle's range only when they are exhausted.
    Fallback,
    /// Bottle's range for every network (docker's pools are never asked).
    Always,
    /// Docker's pools only (a launch fails when they are exhausted).
    Off,
}

/// The operator's subnet settings ([`SUBNET_MODE_ENV`], [`SUBNET_POOL_ENV`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubnetSettings {
    /// When the range is used.
    pub mode: SubnetMode,
    /// Bottle's range, carved into `/28`s.
    pub pool: Ipv4Net,
}

impl Default for SubnetSettings {
    fn default() -> Self {
        Self {
            mode: SubnetMode::Fallback,
            pool: Ipv4Net::parse(DEFAULT_POOL).expect("a valid default"),
        }
    }
}

/// A bad setting in the operator's environment (exit 2, like a manifest).
fn env_error(message: String, fix: String) -> Error {
    Error::Manifest {
        file: "<environment>".into(),
        line: None,
        column: None,
        message,
        fix,
    }
}

impl SubnetSettings {
    /// The defaults with the operator's settings from the environment.
    pub fn from_env() -> Result<Self> {
        Self::parse(
            std::env::var(SUBNET_MODE_ENV).ok().as_deref(),
            std::env::var(SUBNET_POOL_ENV).ok().as_deref(),
        )
    }

    /// The settings from the two variables' values (unset: `None`).
    pub fn parse(mode: Option<&str>, pool: Option<&str>) -> Result<Self> {
        let mut s = Self::default();
        if let Some(m) = mode.map(str::trim).filter(|m| !m.is_empty()) {
            s.mode = match m {
                "fallback" => SubnetMode::Fallback,
                "always" => SubnetMode::Always,
                "off" => SubnetMode::Off,
                _ => {
                    return Err(env_error(
                        format!("{SUBNET_MODE_ENV}={m} is not `fallback`, `always` or `off`"),
                        format!("unset it for `fallback` (bottle's subnets only when docker's address pools are exhausted), or set `{SUBNET_MODE_ENV}=always`"),
                    ))
                }
            };
        }
        if let Some(p) = pool.map(str::trim).filter(|p| !p.is_empty()) {
            let net = Ipv4Net::parse(p)
                .filter(|n| n.prefix() <= NETWORK_PREFIX)
                .filter(|n| n.to_string() == p)
                .ok_or_else(|| {
                    env_error(
                        format!("{SUBNET_POOL_ENV}={p} is not an IPv4 network of /{NETWORK_PREFIX} or wider written by its first address"),
                        format!("set it like `{SUBNET_POOL_ENV}={DEFAULT_POOL}` (a private range your LAN does not use), or unset it for {DEFAULT_POOL}"),
                    )
                })?;
            s.pool = net;
        }
        Ok(s)
    }
}

/// A rendered network create: which network, and where its subnet may come
/// from.
#[derive(Debug, Clone)]
pub struct NetworkCreate {
    /// The network's name (the create's last argument).
    pub name: String,
    /// The operator's settings.
    pub settings: SubnetSettings,
    /// Where [`choose`] starts counting (`2 × slot`, `+ 1` for the egress
    /// network).
    pub start: u32,
}

/// `spec` (a `docker network create … <name>`) with `--subnet <subnet>`
/// before the name.
pub fn with_subnet(spec: &CommandSpec, subnet: Ipv4Net) -> CommandSpec {
    let mut out = spec.clone();
    let at = out.args.len().saturating_sub(1);
    out.args
        .splice(at..at, ["--subnet".to_owned(), subnet.to_string()]);
    out
}

/// Every IPv4 subnet of the engine's networks.
fn used_subnets(runner: &dyn CommandRunner) -> Result<Vec<Ipv4Net>> {
    let ids = runner.output(&CommandSpec::new("docker").args(["network", "ls", "--quiet"]))?;
    let ids: Vec<&str> = ids.stdout.split_whitespace().collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // allow_failure: a network removed since `ls` fails the inspect of it
    // alone; the others are still printed
    let o = runner.output(
        &CommandSpec::new("docker")
            .args([
                "network",
                "inspect",
                "--format",
                "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
            ])
            .args(ids)
            .allow_failure(),
    )?;
    Ok(o.stdout
        .split_whitespace()
        .filter_map(Ipv4Net::parse)
        .collect())
}

/// Run a rendered network create (launch.rs, `Action::Network`).
pub fn create(runner: &dyn CommandRunner, spec: &CommandSpec, net: &NetworkCreate) -> Result<()> {
    let settings = &net.settings;
    if settings.mode != SubnetMode::Always {
        let first = spec.clone().allow_failure();
        let o = runner.output(&first)?;
        if o.success() {
            return Ok(());
        }
        if settings.mode == SubnetMode::Off || !pools_exhausted(&o.stderr) {
            return Err(failure(spec, &o));
        }
        tracing::info!(
            network = %net.name,
            range = %settings.pool,
            "docker's address pools are exhausted: using a subnet from bottle's range"
        );
    }
    let routes = host_routes(runner)?;
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let mut taken = used_subnets(runner)?;
        taken.extend(routes.iter().copied());
        let Some(subnet) = choose(settings.pool, NETWORK_PREFIX, &taken, net.start) else {
            return Err(range_full(net, settings.pool));
        };
        let attempt = with_subnet(spec, subnet).allow_failure();
        let o = runner.output(&attempt)?;
        if o.success() {
            return Ok(());
        }
        if !pool_overlaps(&o.stderr) {
            return Err(failure(&attempt, &o));
        }
        // another create took it first: read again, take the next free one
        last = Some(subnet);
    }
    Err(Error::other(
        format!(
            "creating network {}: other networks took each subnet bottle chose from {} first ({ATTEMPTS} tries, the last {})",
            net.name,
            settings.pool,
            last.map(|s| s.to_string()).unwrap_or_default(),
        ),
        "start the bottle again once the other launches have finished",
    ))
}

fn range_full(net: &NetworkCreate, pool: Ipv4Net) -> Error {
    Error::other(
        format!(
            "creating network {}: no /{NETWORK_PREFIX} is free in bottle's subnet range {pool} (every one overlaps a docker network or a route of this host){}",
            net.name,
            if net.settings.mode == SubnetMode::Fallback {
                ", and docker's own address pools are exhausted"
            } else {
                ""
            },
        ),
        format!(
            "remove bottles you no longer use (`bottle ls`, `bottle rm`, `bottle gc`), or set {SUBNET_POOL_ENV} to a larger private range that nothing else here uses (e.g. {SUBNET_POOL_ENV}=10.212.0.0/15)"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        Ipv4Net::parse(s).unwrap()
    }

    #[test]
    fn nets_parse_overlap_and_print() {
        assert_eq!(net("10.211.3.7/28").to_string(), "10.211.3.0/28");
        assert!(Ipv4Net::parse("fd00::/64").is_none());
        assert!(Ipv4Net::parse("10.0.0.0/33").is_none());
        assert!(Ipv4Net::parse("10.0.0.0").is_none());
        assert!(net("10.0.0.0/8").overlaps(&net("10.211.0.16/28")));
        assert!(net("10.211.0.16/28").overlaps(&net("10.0.0.0/8")));
        assert!(!net("10.211.0.16/28").overlaps(&net("10.211.0.32/28")));
        assert!(net("10.211.0.16/28").contains("10.211.0.31".parse().unwrap()));
        assert!(!net("10.211.0.16/28").contains("10.211.0.32".parse().unwrap()));
        assert!(net("0.0.0.0/0").overlaps(&net("192.0.2.0/24")));
    }

    #[test]
    fn the_chooser_takes_the_first_free_subnet_from_its_start() {
        let pool = net("10.211.0.0/26"); // four /28s
        assert_eq!(choose(pool, 28, &[], 0), Some(net("10.211.0.0/28")));
        assert_eq!(choose(pool, 28, &[], 2), Some(net("10.211.0.32/28")));
        // the start wraps around the range
        assert_eq!(choose(pool, 28, &[], 5), Some(net("10.211.0.16/28")));
        let taken = [net("10.211.0.0/28"), net("10.211.0.16/28")];
        assert_eq!(choose(pool, 28, &taken, 0), Some(net("10.211.0.32/28")));
        assert_eq!(choose(pool, 28, &taken, 1), Some(net("10.211.0.32/28")));
        // from the last one, wrapping past the taken ones
        let taken = [net("10.211.0.0/28"), net("10.211.0.48/28")];
        assert_eq!(choose(pool, 28, &taken, 3), Some(net("10.211.0.16/28")));
        // a wider network (a docker /16, a host route) takes every /28 in it
        let taken = [net("10.211.0.0/27"), net("10.211.0.40/29")];
        assert_eq!(choose(pool, 28, &taken, 0), Some(net("10.211.0.48/28")));
        // a network that holds the whole range leaves nothing
        assert_eq!(choose(pool, 28, &[net("10.0.0.0/8")], 0), None);
        // an unrelated network changes nothing
        assert_eq!(
            choose(pool, 28, &[net("172.17.0.0/16")], 0),
            Some(net("10.211.0.0/28"))
        );
        // all taken, or a prefix wider than the range
        let all: Vec<Ipv4Net> = (0..4)
            .map(|i| net(&format!("10.211.0.{}/28", i * 16)))
            .collect();
        assert_eq!(choose(pool, 28, &all, 0), None);
        assert_eq!(choose(pool, 24, &[], 0), None);
        // the default range: 4096 networks, the last one reachable
        let d = net(DEFAULT_POOL);
        assert_eq!(choose(d, 28, &[], 4095), Some(net("10.211.255.240/28")));
        assert_eq!(choose(d, 28, &[], 4096), Some(net("10.211.0.0/28")));
    }

    #[test]
    fn host_routes_are_read_without_the_default_route() {
        // as this host's kernel prints them (little-endian: `000200C0` is
        // 192.0.2.0)
        let hex = |a: [u8; 4]| format!("{:08X}", u32::from_ne_bytes(a));
        let row = |iface: &str, dest: [u8; 4], gw: [u8; 4], mask: [u8; 4]| {
            format!(
                "{iface}\t{}\t{}\t0001\t0\t0\t0\t{}\t0\t0\t0\n",
                hex(dest),
                hex(gw),
                hex(mask)
            )
        };
        let text = [
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
                .to_owned(),
            row("eth0", [0, 0, 0, 0], [192, 0, 2, 1], [0, 0, 0, 0]),
            row("docker0", [172, 17, 0, 0], [0; 4], [255, 255, 0, 0]),
            row("eth0", [192, 0, 2, 0], [0; 4], [255, 255, 255, 0]),
            row("wg0", [10, 211, 211, 0], [0; 4], [255, 255, 255, 0]),
            "bad\tzz\n".to_owned(),
        ]
        .concat();
        let text = text.as_str();
        if cfg!(target_endian = "little") {
            assert!(text.contains("eth0\t000200C0\t00000000"), "{text}");
        }
        assert_eq!(
            parse_proc_net_route(text),
            [
                net("172.17.0.0/16"),
                net("192.0.2.0/24"),
                net("10.211.211.0/24")
            ]
        );
        // such a route keeps the chooser off the LAN/VPN it names
        let pool = net("10.211.211.0/27");
        let r = parse_proc_net_route(text);
        assert_eq!(choose(pool, 28, &r, 0), None);
    }

    #[test]
    fn docker_answers_are_told_apart() {
        assert!(pools_exhausted("Error response from daemon: could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network"));
        assert!(pools_exhausted(
            "Error response from daemon: all predefined address pools have been fully subnetted"
        ));
        assert!(!pools_exhausted(
            "Error response from daemon: network with name x already exists"
        ));
        assert!(pool_overlaps(
            "Error response from daemon: Pool overlaps with other one on this address space"
        ));
        assert!(!pool_overlaps("Error response from daemon: could not find an available, non-overlapping IPv4 address pool"));
    }

    #[test]
    fn settings_come_from_two_variables_with_clear_errors() {
        let d = SubnetSettings::parse(None, None).unwrap();
        assert_eq!(d, SubnetSettings::default());
        assert_eq!(d.mode, SubnetMode::Fallback);
        assert_eq!(d.pool.to_string(), DEFAULT_POOL);
        let s = SubnetSettings::parse(Some("always"), Some("10.99.0.0/20")).unwrap();
        assert_eq!(s.mode, SubnetMode::Always);
        assert_eq!(s.pool, net("10.99.0.0/20"));
        assert_eq!(
            SubnetSettings::parse(Some("off"), Some("")).unwrap().mode,
            SubnetMode::Off
        );
        let e = SubnetSettings::parse(Some("sometimes"), None).unwrap_err();
        assert!(
            e.to_string().contains("BOTTLE_SUBNET_MODE=sometimes"),
            "{e}"
        );
        assert!(e.fix().unwrap().contains("always"), "{e:?}");
        for bad in [
            "10.99.0.0",
            "10.99.0.0/29",
            "10.99.0.1/16",
            "fd00::/48",
            "x",
        ] {
            let e = SubnetSettings::parse(None, Some(bad)).unwrap_err();
            assert!(e.to_string().contains(bad), "{bad}: {e}");
            assert!(e.fix().unwrap().contains(DEFAULT_POOL), "{bad}: {e:?}");
        }
    }

    #[test]
    fn the_subnet_goes_before_the_network_name() {
        let spec = CommandSpec::new("docker").args([
            "network",
            "create",
            "--internal",
            "--label",
            "a=b",
            "n1",
        ]);
        assert_eq!(
            with_subnet(&spec, net("10.211.0.16/28")).argv_line(),
            "docker network create --internal --label a=b --subnet 10.211.0.16/28 n1"
        );
    }
}
