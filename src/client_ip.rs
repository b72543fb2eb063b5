//! The client's IP address, for per-IP limits and records.
//!
//! It is the socket's peer, unless that peer is a trusted proxy (`TOLLGATE_TRUSTED_PROXIES`,
//! CIDRs): only then is `X-Forwarded-For` read, from the right, skipping trusted proxies; the
//! first address that is not one is the client. A client cannot spoof its way past a limit by
//! sending its own `X-Forwarded-For`: from an untrusted peer the header is never read, and
//! behind a trusted proxy the entries a client prepends lie to the left of the one the proxy
//! appended.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The trusted proxy ranges.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses CIDRs (a bare address means a /32 or /128).
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        entries
            .iter()
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{entry:?} is not a CIDR or an IP address"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// The ranges as text (for `config check`).
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }

    /// Whether `address` is a trusted proxy.
    pub fn trusts(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.0.iter().any(|net| net.contains(&address))
    }

    /// The client address for a request from `peer` with `headers`.
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer.ip());
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .collect::<Vec<_>>();
        for hop in hops.iter().rev() {
            let Ok(address) = hop.trim().parse::<IpAddr>().map(canonical) else {
                // An unparseable entry: nothing to its left can be trusted.
                break;
            };
            client = address;
            if !self.trusts(address) {
                break;
            }
        }
        client
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) count as the IPv4 address.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in xff {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8".into()]).unwrap();
        let ip = proxies.client_ip(peer("203.0.113.9"), &headers(&["1.1.1.1"]));
        assert_eq!(ip.to_string(), "203.0.113.9");
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8".into(), "192.168.1.1".into()]).unwrap();
        // The client prepended a fake 6.6.6.6; the load balancer appended the real address.
        let ip = proxies.client_ip(
            peer("10.0.0.2"),
            &headers(&["6.6.6.6, 198.51.100.7", "192.168.1.1"]),
        );
        assert_eq!(ip.to_string(), "198.51.100.7");
    }

    #[test]
    fn garbage_stops_the_walk() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8".into()]).unwrap();
        let ip = proxies.client_ip(
            peer("10.0.0.2"),
            &headers(&["6.6.6.6, not-an-ip, 10.1.1.1"]),
        );
        assert_eq!(
            ip.to_string(),
            "10.1.1.1",
            "the last parseable hop, all trusted, stands"
        );
        assert_eq!(
            proxies
                .client_ip(peer("10.0.0.2"), &headers(&[]))
                .to_string(),
            "10.0.0.2"
        );
    }

    #[test]
    fn mapped_ipv6_counts_as_ipv4_and_bad_cidrs_are_refused() {
        let proxies = TrustedProxies::parse(&["127.0.0.1".into()]).unwrap();
        let ip = proxies.client_ip(peer("::ffff:127.0.0.1"), &headers(&["203.0.113.1"]));
        assert_eq!(ip.to_string(), "203.0.113.1");
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
    }
}
