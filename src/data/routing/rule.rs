//! Traefik routing rules: parsing (v3 syntax, plus v2's multi-value `Host(`a`, `b`)` and
//! `Headers(...)`) into a tree of compiled matchers, and matching that tree against a request.
//! A rule that does not parse is an error naming the column where it went wrong.

use std::net::IpAddr;

use http::{HeaderMap, Method};
use regex::Regex;

mod parse;

/// A compiled rule.
#[derive(Debug, Clone)]
pub enum Rule {
    And(Vec<Rule>),
    Or(Vec<Rule>),
    Not(Box<Rule>),
    Match(Matcher),
}

/// One matcher with its compiled arguments. Hosts are lowercase.
#[derive(Debug, Clone)]
pub enum Matcher {
    Host(Vec<String>),
    HostRegexp(Regex),
    Path(Vec<String>),
    PathPrefix(Vec<String>),
    PathRegexp(Regex),
    Method(Vec<Method>),
    Header(String, String),
    HeaderRegexp(String, Regex),
    Query(String, Option<String>),
    QueryRegexp(String, Regex),
    ClientIp(Vec<Cidr>),
}

/// What a rule looks at in a request.
pub struct RequestView<'a> {
    /// The host without its port, lowercase.
    pub host: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    pub client_ip: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct RuleError {
    /// 1-based, in characters.
    pub column: usize,
    pub message: String,
}

/// An address range: `10.0.0.0/8`, `::1/128`, or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// As written: a single address without its `/32` or `/128`.
impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let max = if self.network.is_ipv4() { 32 } else { 128 };
        match self.prefix {
            p if p == max => write!(f, "{}", self.network),
            p => write!(f, "{}/{p}", self.network),
        }
    }
}

impl Cidr {
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (text.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { network: addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.network, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            _ => ip,
        };
        let (a, b, bits) = match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => (u32::from(n) as u128, u32::from(i) as u128, 32),
            (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
            _ => return false,
        };
        if self.prefix == 0 {
            return true;
        }
        let shift = bits - self.prefix as u32;
        (a >> shift) == (b >> shift)
    }
}

impl Rule {
    /// Parses and compiles a rule.
    pub fn parse(text: &str) -> Result<Rule, RuleError> {
        parse::parse(text)
    }

    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        match self {
            Rule::And(rules) => rules.iter().all(|r| r.matches(req)),
            Rule::Or(rules) => rules.iter().any(|r| r.matches(req)),
            Rule::Not(rule) => !rule.matches(req),
            Rule::Match(m) => m.matches(req),
        }
    }

    /// Every host named by a `Host` matcher outside a negation, in order: the names a
    /// certificate for this rule's router covers (ACME's onHostRule).
    pub fn hosts(&self) -> Vec<String> {
        match self {
            Rule::Match(Matcher::Host(hosts)) => hosts.clone(),
            Rule::And(rules) | Rule::Or(rules) => rules.iter().flat_map(Rule::hosts).collect(),
            _ => Vec::new(),
        }
    }

    /// The exact hosts one of which a request must have for this rule to match, or `None`
    /// when the rule can match other hosts too. This is what the host index dispatches on.
    pub fn required_hosts(&self) -> Option<Vec<String>> {
        match self {
            Rule::Match(Matcher::Host(hosts)) => Some(hosts.clone()),
            Rule::And(rules) => rules.iter().find_map(Rule::required_hosts),
            Rule::Or(rules) => {
                let mut all = Vec::new();
                for rule in rules {
                    all.extend(rule.required_hosts()?);
                }
                Some(all)
            }
            _ => None,
        }
    }
}

impl Matcher {
    fn matches(&self, req: &RequestView<'_>) -> bool {
        match self {
            Matcher::Host(hosts) => hosts.iter().any(|h| h == req.host),
            Matcher::HostRegexp(re) => re.is_match(req.host),
            Matcher::Path(paths) => paths.iter().any(|p| p == req.path),
            Matcher::PathPrefix(prefixes) => prefixes.iter().any(|p| req.path.starts_with(p.as_str())),
            Matcher::PathRegexp(re) => re.is_match(req.path),
            Matcher::Method(methods) => methods.contains(req.method),
            Matcher::Header(name, value) => req.headers.get_all(name).iter().any(|v| v.as_bytes() == value.as_bytes()),
            Matcher::HeaderRegexp(name, re) => {
                req.headers.get_all(name).iter().any(|v| v.to_str().is_ok_and(|v| re.is_match(v)))
            }
            Matcher::Query(name, value) => {
                query_values(req.query, name).any(|v| value.as_deref().is_none_or(|want| v == want))
            }
            Matcher::QueryRegexp(name, re) => query_values(req.query, name).any(|v| re.is_match(&v)),
            Matcher::ClientIp(ranges) => ranges.iter().any(|c| c.contains(req.client_ip)),
        }
    }
}

/// The decoded values of `name` in a query string.
fn query_values<'a>(query: Option<&'a str>, name: &'a str) -> impl Iterator<Item = String> + 'a {
    query.unwrap_or_default().split('&').filter_map(move |pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k) == name).then(|| decode(v))
    })
}

/// Percent-decoding with `+` as a space, as in form-encoded queries.
fn decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1).and_then(|&b| hex(b)), bytes.get(i + 2).and_then(|&b| hex(b))) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(host: &'a str, path: &'a str, query: Option<&'a str>, headers: &'a HeaderMap) -> RequestView<'a> {
        RequestView { host, path, query, method: &Method::GET, headers, client_ip: "10.1.2.3".parse().unwrap() }
    }

    fn matches(rule: &str, host: &str, path: &str, query: Option<&str>) -> bool {
        let mut headers = HeaderMap::new();
        headers.insert("x-canary", "always".parse().unwrap());
        Rule::parse(rule).unwrap_or_else(|e| panic!("{rule}: {e}")).matches(&request(host, path, query, &headers))
    }

    #[test]
    fn each_matcher_matches_what_it_names() {
        assert!(matches("Host(`a.example`)", "a.example", "/", None));
        assert!(matches("Host(`A.Example`)", "a.example", "/", None));
        assert!(!matches("Host(`a.example`)", "b.example", "/", None));
        assert!(matches("HostRegexp(`^[a-z]+\\.example$`)", "abc.example", "/", None));
        assert!(matches("Path(`/x`)", "h", "/x", None) && !matches("Path(`/x`)", "h", "/x/y", None));
        assert!(
            matches("PathPrefix(`/api`)", "h", "/api/v1", None) && !matches("PathPrefix(`/api`)", "h", "/ap", None)
        );
        assert!(matches("PathRegexp(`^/v[0-9]+/`)", "h", "/v2/users", None));
        assert!(matches("Method(`GET`)", "h", "/", None) && !matches("Method(`POST`)", "h", "/", None));
        assert!(
            matches("Header(`X-Canary`, `always`)", "h", "/", None)
                && !matches("Header(`X-Canary`, `never`)", "h", "/", None)
        );
        assert!(matches("HeaderRegexp(`X-Canary`, `^al`)", "h", "/", None));
        assert!(matches("Query(`debug`, `1`)", "h", "/", Some("a=b&debug=1")));
        assert!(
            matches("Query(`debug`)", "h", "/", Some("debug")) && !matches("Query(`debug`)", "h", "/", Some("x=1"))
        );
        assert!(matches("QueryRegexp(`name`, `^jo`)", "h", "/", Some("name=jo%20e")));
        assert!(
            matches("ClientIP(`10.0.0.0/8`)", "h", "/", None)
                && !matches("ClientIP(`192.168.0.0/16`, `::1`)", "h", "/", None)
        );
    }

    #[test]
    fn operators_combine_with_the_usual_precedence() {
        let rule = "Host(`a`) && PathPrefix(`/x`) || Host(`b`) && !Path(`/private`)";
        assert!(matches(rule, "a", "/x/1", None));
        assert!(!matches(rule, "a", "/y", None));
        assert!(matches(rule, "b", "/y", None));
        assert!(!matches(rule, "b", "/private", None));
        assert!(matches("(Host(`a`) || Host(`b`)) && Path(\"/q\")", "b", "/q", None));
        assert!(matches("Host(`a`, `b`)", "b", "/", None), "v2's multi-value Host");
        assert!(matches("Headers(`X-Canary`, `always`)", "h", "/", None), "v2's Headers");
    }

    #[test]
    fn exact_hosts_are_found_for_the_index() {
        let hosts = |r: &str| Rule::parse(r).unwrap().required_hosts();
        assert_eq!(hosts("Host(`a`) && PathPrefix(`/x`)"), Some(vec!["a".to_string()]));
        assert_eq!(hosts("Host(`a`) || Host(`b`, `c`)"), Some(vec!["a".into(), "b".into(), "c".into()]));
        assert_eq!(hosts("Host(`a`) || PathPrefix(`/x`)"), None);
        assert_eq!(hosts("!Host(`a`)"), None);
        assert_eq!(hosts("HostRegexp(`.*`)"), None);
    }

    #[test]
    fn cidrs_contain_their_addresses() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.255.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
    }
}
