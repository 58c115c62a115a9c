//! The outbound address guard (issue #20, finding 1): the Graph and helloHQ
//! connectors talk to the public internet only. Every address a remote host
//! name resolves to is checked after DNS resolution (a reqwest
//! [`dns_resolver`](reqwest::ClientBuilder::dns_resolver)), and a URL whose
//! host is an IP literal is checked before the request goes out (reqwest
//! does not resolve literals). Refused: loopback, private (RFC 1918),
//! carrier-grade NAT, link-local (which holds the cloud metadata service at
//! 169.254.169.254), unique-local, site-local, unspecified, multicast,
//! broadcast, reserved and documentation ranges, and the same addresses
//! written as IPv4-mapped, IPv4-compatible, NAT64 or 6to4 IPv6 addresses.
//!
//! `remote.allow_private_addresses = true` switches the guard off for a
//! client (on-premise proxies, the demo, the simulators in tests, benches).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// What the guard says when it refuses an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing to connect to {host}: {ip} is not a public address ({why}); remote services must be on the public \
     internet (an operator may set remote.allow_private_addresses = true for on-premise or test setups)"
)]
pub struct Refused {
    pub host: String,
    pub ip: IpAddr,
    pub why: &'static str,
}

/// Why `ip` may not be connected to, or `None` when it is a public address.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match () {
        _ if a == 0 => "unspecified (0.0.0.0/8)",
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_private() => "private",
        _ if ip.is_link_local() => "link-local",
        _ if a == 100 && (64..128).contains(&b) => "carrier-grade NAT (100.64.0.0/10)",
        _ if a == 192 && b == 0 && c == 0 => "IETF protocol (192.0.0.0/24)",
        _ if a == 198 && (b == 18 || b == 19) => "benchmarking (198.18.0.0/15)",
        _ if ip.is_documentation() => "documentation",
        _ if ip.is_multicast() => "multicast",
        _ if ip.is_broadcast() => "broadcast",
        _ if a >= 240 => "reserved (240.0.0.0/4)",
        _ => return None,
    })
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    // IPv4 written as IPv6: mapped (::ffff:a.b.c.d), compatible (::a.b.c.d),
    // NAT64 (64:ff9b::a.b.c.d) and 6to4 (2002:AABB:CCDD::).
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4).map(|_| "IPv4-mapped non-public");
    }
    if s[..6] == [0; 6] && !ip.is_unspecified() && !ip.is_loopback() {
        return forbidden_v4(Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8))
            .map(|_| "IPv4-compatible non-public");
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return forbidden_v4(Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8))
            .map(|_| "NAT64 non-public");
    }
    if s[0] == 0x2002 {
        return forbidden_v4(Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8))
            .map(|_| "6to4 non-public");
    }
    Some(match () {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        _ if s[0] & 0xfe00 == 0xfc00 => "unique-local (fc00::/7)",
        _ if s[0] & 0xffc0 == 0xfe80 => "link-local (fe80::/10)",
        _ if s[0] & 0xffc0 == 0xfec0 => "site-local (fec0::/10)",
        _ if ip.is_multicast() => "multicast",
        _ if s[0] == 0x2001 && s[1] == 0x0db8 => "documentation (2001:db8::/32)",
        _ if s[..4] == [0x0100, 0, 0, 0] => "discard-only (100::/64)",
        _ => return None,
    })
}

/// Checks a URL before a request: an IP-literal host must be public (a host
/// name is checked by [`GuardedResolver`] once it is resolved). `localhost`
/// names are refused without asking DNS.
pub fn check_url(url: &url::Url, allow_private: bool) -> Result<(), Refused> {
    if allow_private {
        return Ok(());
    }
    match url.host() {
        Some(url::Host::Ipv4(ip)) => check_ip(&ip.to_string(), IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => check_ip(&ip.to_string(), IpAddr::V6(ip)),
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            if d == "localhost" || d.ends_with(".localhost") {
                return Err(Refused { host: d, ip: IpAddr::V4(Ipv4Addr::LOCALHOST), why: "loopback" });
            }
            Ok(())
        }
        None => Ok(()),
    }
}

/// [`check_url`] for a URL given as text (a text that is not a URL is left
/// to the HTTP client, which refuses it itself).
pub fn check_url_str(url: &str, allow_private: bool) -> Result<(), Refused> {
    match url::Url::parse(url) {
        Ok(u) => check_url(&u, allow_private),
        Err(_) => Ok(()),
    }
}

fn check_ip(host: &str, ip: IpAddr) -> Result<(), Refused> {
    match forbidden(ip) {
        Some(why) => Err(Refused { host: host.to_string(), ip, why }),
        None => Ok(()),
    }
}

/// Resolves with the system resolver and keeps only public addresses; a
/// name with none left is refused (the error names the first address and why).
#[derive(Debug, Clone, Copy, Default)]
pub struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let public: Vec<SocketAddr> = all
                .into_iter()
                .filter(|a| match forbidden(a.ip()) {
                    Some(why) => {
                        refused.get_or_insert(Refused { host: host.clone(), ip: a.ip(), why });
                        false
                    }
                    None => true,
                })
                .collect();
            if public.is_empty() {
                if let Some(r) = refused {
                    return Err(Box::new(r) as Box<dyn std::error::Error + Send + Sync>);
                }
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// A reqwest client builder with the guard installed unless `allow_private`.
pub fn client_builder(allow_private: bool) -> reqwest::ClientBuilder {
    let b = reqwest::Client::builder();
    if allow_private {
        b
    } else {
        b.dns_resolver(Arc::new(GuardedResolver))
    }
}

/// The guard's refusal inside a reqwest error's source chain, if that is
/// what made the request fail (reqwest's own message only says "error
/// sending request").
pub fn refusal_in(e: &(dyn std::error::Error + 'static)) -> Option<Refused> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<Refused>() {
            return Some(r.clone());
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn non_public_addresses_are_refused_in_every_spelling() {
        for bad in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "2001:db8::1",
        ] {
            assert!(forbidden(ip(bad)).is_some(), "{bad} passed the guard");
        }
        for good in ["20.190.160.1", "40.126.1.1", "2603:1030::1", "1.1.1.1", "::ffff:20.190.160.1", "2002:0101:0101::"]
        {
            assert_eq!(forbidden(ip(good)), None, "{good} refused");
        }
    }

    #[test]
    fn ip_literal_and_localhost_urls_are_refused_unless_allowed() {
        for bad in [
            "http://127.0.0.1:8080/x",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/",
            "http://[::ffff:7f00:1]/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://localhost/",
            "http://api.LOCALHOST./",
        ] {
            let u = url::Url::parse(bad).unwrap();
            assert!(check_url(&u, false).is_err(), "{bad} passed");
            assert!(check_url(&u, true).is_ok());
        }
        assert!(check_url(&url::Url::parse("https://graph.microsoft.com/v1.0").unwrap(), false).is_ok());
    }

    #[tokio::test]
    async fn the_resolver_refuses_a_name_that_resolves_to_loopback() {
        let name: Name = "localhost".parse().unwrap();
        let err = match GuardedResolver.resolve(name).await {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(e) => e,
        };
        let r = refusal_in(err.as_ref()).expect("the guard's refusal");
        assert_eq!(r.why, "loopback");
        assert!(r.to_string().contains("remote.allow_private_addresses"), "{r}");
    }
}
