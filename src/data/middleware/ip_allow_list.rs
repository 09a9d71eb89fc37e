//! `ipAllowList` (and the deprecated `ipWhiteList`): only clients whose IP is in `sourceRange`
//! pass; the others get `rejectStatusCode` (403) with its reason as the body. The client IP is
//! the connection's peer, or, with an `ipStrategy`, an entry of `X-Forwarded-For`: the
//! `depth`-th from the right, or the first from the right that is not in `excludedIPs`. The
//! entrypoint has already removed `X-Forwarded-For` from peers it does not trust, so an
//! untrusted client cannot choose its IP.

use std::net::IpAddr;

use http::{HeaderMap, Request, StatusCode};
use serde::Deserialize;

use crate::{config::Checker, data::proxy::Connection};

#[derive(Debug, Default, Deserialize)]
struct Raw {
    #[serde(default, deserialize_with = "crate::config::lenient::list")]
    sourcerange: Option<Vec<String>>,
    ipstrategy: Option<RawStrategy>,
    #[serde(default, deserialize_with = "crate::config::lenient::u64")]
    rejectstatuscode: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawStrategy {
    #[serde(default, deserialize_with = "crate::config::lenient::u64")]
    depth: Option<u64>,
    #[serde(default, deserialize_with = "crate::config::lenient::list")]
    excludedips: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::config::lenient::u64")]
    ipv6subnet: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub source_range: Vec<Cidr>,
    pub strategy: Strategy,
    pub reject: StatusCode,
    /// Written as `ipWhiteList`.
    pub deprecated: bool,
}

/// Which IP a request is judged by (`ipStrategy`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Strategy {
    /// The n-th `X-Forwarded-For` entry from the right; 0 = not used.
    pub depth: usize,
    pub excluded: Vec<Cidr>,
    /// IPv6 addresses are reduced to their /n network first.
    pub ipv6_subnet: Option<u8>,
}

/// An address range: an IP and how many leading bits count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Option<Cidr> {
        let (ip, bits) = match text.trim().split_once('/') {
            Some((ip, bits)) => (ip.parse::<IpAddr>().ok()?, Some(bits.parse::<u8>().ok()?)),
            None => (text.trim().parse::<IpAddr>().ok()?, None),
        };
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        (bits <= max).then(|| Cidr { net: mask(ip, bits), bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.net, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            _ => ip,
        };
        self.net.is_ipv4() == ip.is_ipv4() && mask(ip, self.bits) == self.net
    }
}

fn mask(ip: IpAddr, bits: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let keep = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & keep).into())
        }
        IpAddr::V6(v6) => {
            let keep = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & keep).into())
        }
    }
}

pub(super) fn decode(raw: toml::Value, path: &str, deprecated: bool, c: &mut Checker) -> Option<Spec> {
    let raw: Raw = super::spec::raw(raw, path, c)?;
    let source_range = cidrs(raw.sourcerange.unwrap_or_default(), &format!("{path}.sourcerange"), c)?;
    if source_range.is_empty() {
        c.error(path, "an IP allow list needs a sourceRange");
        return None;
    }
    let strategy = strategy(raw.ipstrategy.unwrap_or_default(), &format!("{path}.ipstrategy"), c)?;
    let reject = match raw.rejectstatuscode {
        None | Some(0) => StatusCode::FORBIDDEN,
        Some(_) if deprecated => {
            c.warn(
                &format!("{path}.rejectstatuscode"),
                "ipWhiteList has no rejectStatusCode (it answers 403); ignored",
            );
            StatusCode::FORBIDDEN
        }
        Some(code) => match u16::try_from(code).ok().and_then(|c| StatusCode::from_u16(c).ok()) {
            Some(status) if status.canonical_reason().is_some() => status,
            _ => {
                c.error(&format!("{path}.rejectstatuscode"), format!("{code} is not an HTTP status code"));
                return None;
            }
        },
    };
    Some(Spec { source_range, strategy, reject, deprecated })
}

pub(super) fn strategy(raw: RawStrategy, path: &str, c: &mut Checker) -> Option<Strategy> {
    let ipv6_subnet = match raw.ipv6subnet {
        None | Some(0) => None,
        Some(n @ 1..=128) => Some(n as u8),
        Some(n) => {
            c.error(&format!("{path}.ipv6subnet"), format!("ipv6Subnet {n} is not between 1 and 128"));
            return None;
        }
    };
    Some(Strategy {
        depth: raw.depth.unwrap_or(0) as usize,
        excluded: cidrs(raw.excludedips.unwrap_or_default(), &format!("{path}.excludedips"), c)?,
        ipv6_subnet,
    })
}

fn cidrs(texts: Vec<String>, path: &str, c: &mut Checker) -> Option<Vec<Cidr>> {
    let mut out = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        match Cidr::parse(text) {
            Some(cidr) => out.push(cidr),
            None => {
                c.error(&format!("{path}.{i}"), format!("{} is not an IP or CIDR range", crate::limits::shown(text)));
                return None;
            }
        }
    }
    Some(out)
}

impl Strategy {
    /// The IP a request counts as coming from; `None` when the strategy finds none.
    pub fn client_ip(&self, headers: &HeaderMap, peer: IpAddr) -> Option<IpAddr> {
        let ip = if self.depth == 0 && self.excluded.is_empty() {
            peer
        } else {
            let lines: Vec<&str> = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect();
            let joined = lines.join(",");
            let entries: Vec<&str> = joined.split(',').map(str::trim).collect();
            let entry = if self.depth > 0 {
                entries.len().checked_sub(self.depth).map(|i| entries[i])?
            } else {
                entries
                    .iter()
                    .rev()
                    .filter(|e| !e.is_empty())
                    .find(|e| e.parse::<IpAddr>().map_or(true, |ip| !self.excluded.iter().any(|x| x.contains(ip))))
                    .copied()?
            };
            entry.parse().ok()?
        };
        // Traefik's excludedIPs strategy leaves IPv6 addresses whole.
        let subnet = self.ipv6_subnet.filter(|_| self.depth > 0 || self.excluded.is_empty());
        Some(match (ip, subnet) {
            (IpAddr::V6(_), Some(bits)) => mask(ip, bits),
            _ => ip,
        })
    }
}

pub struct IpAllowList {
    spec: Spec,
}

impl IpAllowList {
    pub fn new(spec: &Spec) -> IpAllowList {
        IpAllowList { spec: spec.clone() }
    }

    pub fn request<B>(&self, req: Request<B>, conn: Connection) -> super::Passed<B> {
        let ip = self.spec.strategy.client_ip(req.headers(), conn.peer.ip());
        if ip.is_some_and(|ip| self.spec.source_range.iter().any(|r| r.contains(ip))) {
            return Ok(req);
        }
        let reason = self.spec.reject.canonical_reason().unwrap_or("Forbidden");
        Err(Box::new(crate::data::proxy::error::text(self.spec.reject, reason)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", value.parse().unwrap());
        h
    }

    #[test]
    fn strategies_pick_traefiks_entries() {
        let h = xff("10.0.0.1,11.0.0.1,12.0.0.1,13.0.0.1");
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let depth = |d| Strategy { depth: d, ..Strategy::default() }.client_ip(&h, peer);
        assert_eq!(depth(1), Some("13.0.0.1".parse().unwrap()));
        assert_eq!(depth(3), Some("11.0.0.1".parse().unwrap()));
        assert_eq!(depth(5), None);
        let excluded = vec![Cidr::parse("12.0.0.1").unwrap(), Cidr::parse("13.0.0.0/8").unwrap()];
        let s = Strategy { excluded, ..Strategy::default() };
        assert_eq!(s.client_ip(&h, peer), Some("11.0.0.1".parse().unwrap()));
        assert_eq!(Strategy::default().client_ip(&h, peer), Some(peer), "no strategy: the peer");
    }

    #[test]
    fn ranges_hold_what_they_should() {
        let r = Cidr::parse("192.168.1.0/24").unwrap();
        assert!(r.contains("192.168.1.77".parse().unwrap()));
        assert!(!r.contains("192.168.2.1".parse().unwrap()));
        assert!(r.contains("::ffff:192.168.1.5".parse().unwrap()), "an IPv4-mapped IPv6 peer");
        assert!(Cidr::parse("2001:db8::/32").unwrap().contains("2001:db8:1::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("10.0.0").is_none());
    }
}
