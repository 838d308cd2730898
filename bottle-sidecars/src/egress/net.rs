//! Name resolution, the SSRF guard and the upstream connector.
//!
//! The proxy resolves every name itself, drops addresses that are not public
//! (unless the route says `allow_private = true`) and connects to exactly an
//! address it checked: there is no second resolution between check and
//! connect, so DNS rebinding cannot swap the address.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::Uri;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::Shared;

/// Boxed error used across the connector stack.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why the connector refused to connect.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Every address the name resolves to is loopback/private/link-local/…
    #[error("{host} resolves only to non-public addresses")]
    Private {
        /// The refused host.
        host: String,
    },
    /// No (unexpired) route allows this host and port any more.
    #[error("no route allows {host}:{port}")]
    NoRoute {
        /// Host.
        host: String,
        /// Port.
        port: u16,
    },
    /// The name did not resolve.
    #[error("could not resolve {host}")]
    Resolve {
        /// Host.
        host: String,
    },
}

/// Is `ip` outside the public unicast internet (loopback, private, link-local,
/// CGNAT, metadata, unspecified, multicast, documentation, reserved, or an
/// IPv6 form embedding such an IPv4 address)?
pub fn is_non_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_non_public(v4),
        IpAddr::V6(v6) => v6_non_public(v6),
    }
}

fn v4_non_public(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // includes 169.254.169.254 (cloud metadata)
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || o[0] == 0 // 0.0.0.0/8 "this network"
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10 CGNAT (incl. 100.100.100.200 metadata)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24 protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15 benchmarking
        || o[0] >= 240 // 240.0.0.0/4 reserved
}

fn v6_non_public(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_non_public(v4);
    }
    // IPv4-compatible ::a.b.c.d (deprecated) and NAT64 64:ff9b::/96.
    if (s[0..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified())
        || s[0..6] == [0x64, 0xff9b, 0, 0, 0, 0]
    {
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        return v4_non_public(v4);
    }
    // 6to4 2002::/16 embeds an IPv4 address.
    if s[0] == 0x2002 {
        let v4 = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
        return v4_non_public(v4);
    }
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // fc00::/7 unique local (incl. fd00:ec2::254 metadata)
        || (s[0] & 0xffc0) == 0xfe80 // fe80::/10 link-local
        || (s[0] & 0xffc0) == 0xfec0 // fec0::/10 site-local
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x2001 && s[1] == 0) // Teredo (embeds an obfuscated IPv4)
        || s[0] == 0x0100 && s[1..4] == [0, 0, 0] // 100::/64 discard
}

/// Normalise a host as it appears in a URI/CONNECT/Host header: lower case,
/// no brackets, no trailing dot.
pub fn normalize_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// Resolve `host` (IP literal, test override, or DNS) to socket addresses.
pub(crate) async fn resolve(
    shared: &Shared,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, Refused> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    if let Some(ip) = shared.resolve_overrides.get(host) {
        return Ok(vec![SocketAddr::new(*ip, port)]);
    }
    match tokio::net::lookup_host((host, port)).await {
        Ok(addrs) => {
            let v: Vec<_> = addrs.collect();
            if v.is_empty() {
                Err(Refused::Resolve { host: host.into() })
            } else {
                Ok(v)
            }
        }
        Err(_) => Err(Refused::Resolve { host: host.into() }),
    }
}

/// Resolve and keep only the addresses this route may reach.
pub(crate) async fn checked_addrs(
    shared: &Shared,
    host: &str,
    port: u16,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, Refused> {
    let addrs = resolve(shared, host, port).await?;
    let ok: Vec<_> = addrs
        .into_iter()
        .filter(|a| allow_private || !is_non_public(a.ip()))
        .collect();
    if ok.is_empty() {
        Err(Refused::Private { host: host.into() })
    } else {
        Ok(ok)
    }
}

/// The TCP connector under the TLS layer: looks up the route for the URI's
/// host and port in the live policy, resolves, filters and connects to a
/// checked address.
#[derive(Clone)]
pub struct GuardedConnector {
    pub(crate) shared: Arc<Shared>,
}

impl tower_service::Service<Uri> for GuardedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move {
            let host = normalize_host(uri.host().unwrap_or_default());
            let https = uri.scheme_str() == Some("https") || uri.scheme_str() == Some("wss");
            let default_port = if https { 443 } else { 80 };
            let port = uri.port_u16().unwrap_or(default_port);
            let allow_private = {
                let live = shared.live();
                match live.allow_private(&host, port, default_port) {
                    Ok(allow) => allow,
                    Err(_) => {
                        return Err(Box::new(Refused::NoRoute { host, port }) as BoxError);
                    }
                }
            };
            let addrs = checked_addrs(&shared, &host, port, allow_private).await?;
            let mut last_err = None;
            for addr in addrs {
                match TcpStream::connect(addr).await {
                    Ok(stream) => {
                        let _ = stream.set_nodelay(true);
                        return Ok(TokioIo::new(stream));
                    }
                    Err(e) => last_err = Some(e),
                }
            }
            Err(
                Box::new(last_err.unwrap_or_else(|| std::io::Error::other("no address")))
                    as BoxError,
            )
        })
    }
}

/// Find a [`Refused`] anywhere in an error's source chain.
pub fn find_refused<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<Refused>() {
            return Some(r);
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_addresses() {
        for bad in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.100.100.200",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "240.0.0.1",
            "::",
            "::1",
            "fe80::1",
            "fc00::1",
            "fd00:ec2::254",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:0001::1",
            "2001:db8::1",
        ] {
            assert!(
                is_non_public(bad.parse().unwrap()),
                "{bad} should be non-public"
            );
        }
        for good in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "100.128.0.1",
        ] {
            assert!(
                !is_non_public(good.parse().unwrap()),
                "{good} should be public"
            );
        }
    }

    #[test]
    fn normalizes_hosts() {
        assert_eq!(normalize_host("API.Example.COM."), "api.example.com");
        assert_eq!(normalize_host("[::1]"), "::1");
    }
}
