//! Traefik routing rules: parsing (v3 syntax, plus v2's multi-value `Host(`a`, `b`)` and
//! `Headers(...)`) into a tree of compiled matchers, and matching that tree against a request.
//! A rule that does not parse is an error naming the column where it went wrong.

use std::net::IpAddr;

use http::{HeaderMap, Method};
use regex::Regex;

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
        let tokens = lex(text)?;
        let mut parser = Parser { tokens, pos: 0, text };
        let rule = parser.or()?;
        match parser.peek() {
            None => Ok(rule),
            Some(t) => Err(parser.error_at(t.column, format!("unexpected {}", t.kind.describe()))),
        }
    }

    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        match self {
            Rule::And(rules) => rules.iter().all(|r| r.matches(req)),
            Rule::Or(rules) => rules.iter().any(|r| r.matches(req)),
            Rule::Not(rule) => !rule.matches(req),
            Rule::Match(m) => m.matches(req),
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

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Ident(String),
    Str(String),
    Open,
    Close,
    Comma,
    And,
    Or,
    Not,
}

impl Kind {
    fn describe(&self) -> String {
        match self {
            Kind::Ident(name) => format!("{name:?}"),
            Kind::Str(s) => format!("value `{s}`"),
            Kind::Open => "\"(\"".into(),
            Kind::Close => "\")\"".into(),
            Kind::Comma => "\",\"".into(),
            Kind::And => "\"&&\"".into(),
            Kind::Or => "\"||\"".into(),
            Kind::Not => "\"!\"".into(),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    column: usize,
}

fn lex(text: &str) -> Result<Vec<Token>, RuleError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let column = i + 1;
        let c = chars[i];
        let kind = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '(' => Kind::Open,
            ')' => Kind::Close,
            ',' => Kind::Comma,
            '!' => Kind::Not,
            '&' | '|' => {
                if chars.get(i + 1) != Some(&c) {
                    return Err(RuleError { column, message: format!("expected \"{c}{c}\"") });
                }
                i += 1;
                if c == '&' {
                    Kind::And
                } else {
                    Kind::Or
                }
            }
            '`' | '"' | '\'' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&d| d == c)
                    .ok_or(RuleError { column, message: format!("unterminated value: no closing {c}") })?;
                let value: String = chars[i + 1..i + 1 + end].iter().collect();
                i += end + 1;
                Kind::Str(value)
            }
            c if c.is_ascii_alphabetic() => {
                let len = chars[i..].iter().take_while(|c| c.is_ascii_alphanumeric()).count();
                let name: String = chars[i..i + len].iter().collect();
                i += len - 1;
                Kind::Ident(name)
            }
            other => return Err(RuleError { column, message: format!("unexpected character {other:?}") }),
        };
        tokens.push(Token { kind, column });
        i += 1;
    }
    Ok(tokens)
}

struct Parser<'a> {
    tokens: Vec<Token>,
    pos: usize,
    text: &'a str,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn end_column(&self) -> usize {
        self.text.chars().count() + 1
    }

    fn error_at(&self, column: usize, message: String) -> RuleError {
        RuleError { column, message }
    }

    fn expect(&mut self, kind: Kind, what: &str) -> Result<Token, RuleError> {
        match self.tokens.get(self.pos).cloned() {
            Some(t) if t.kind == kind => {
                self.pos += 1;
                Ok(t)
            }
            Some(t) => Err(self.error_at(t.column, format!("expected {what}, found {}", t.kind.describe()))),
            None => Err(self.error_at(self.end_column(), format!("expected {what} at the end of the rule"))),
        }
    }

    fn or(&mut self) -> Result<Rule, RuleError> {
        let mut parts = vec![self.and()?];
        while self.peek().is_some_and(|t| t.kind == Kind::Or) {
            self.pos += 1;
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 { parts.remove(0) } else { Rule::Or(parts) })
    }

    fn and(&mut self) -> Result<Rule, RuleError> {
        let mut parts = vec![self.unary()?];
        while self.peek().is_some_and(|t| t.kind == Kind::And) {
            self.pos += 1;
            parts.push(self.unary()?);
        }
        Ok(if parts.len() == 1 { parts.remove(0) } else { Rule::And(parts) })
    }

    fn unary(&mut self) -> Result<Rule, RuleError> {
        match self.peek().cloned() {
            Some(Token { kind: Kind::Not, .. }) => {
                self.pos += 1;
                Ok(Rule::Not(Box::new(self.unary()?)))
            }
            Some(Token { kind: Kind::Open, .. }) => {
                self.pos += 1;
                let rule = self.or()?;
                self.expect(Kind::Close, "\")\"")?;
                Ok(rule)
            }
            Some(Token { kind: Kind::Ident(name), column }) => {
                self.pos += 1;
                self.expect(Kind::Open, &format!("\"(\" after {name}"))?;
                let mut args = Vec::new();
                loop {
                    match self.tokens.get(self.pos).cloned() {
                        Some(Token { kind: Kind::Str(value), .. }) => {
                            self.pos += 1;
                            args.push(value);
                        }
                        Some(t) => {
                            return Err(self.error_at(
                                t.column,
                                format!("expected a value in backticks, found {}", t.kind.describe()),
                            ))
                        }
                        None => {
                            return Err(
                                self.error_at(self.end_column(), "expected a value at the end of the rule".into())
                            )
                        }
                    }
                    match self.tokens.get(self.pos).map(|t| t.kind.clone()) {
                        Some(Kind::Comma) => self.pos += 1,
                        _ => break,
                    }
                }
                self.expect(Kind::Close, "\")\"")?;
                matcher(&name, args).map(Rule::Match).map_err(|message| self.error_at(column, message))
            }
            Some(t) => Err(self.error_at(
                t.column,
                format!("expected a matcher such as Host(`example.com`), found {}", t.kind.describe()),
            )),
            None => Err(self.error_at(self.end_column(), "expected a matcher at the end of the rule".into())),
        }
    }
}

fn regex(pattern: &str) -> Result<Regex, String> {
    Regex::new(pattern).map_err(|e| format!("invalid regular expression `{pattern}`: {e}"))
}

/// Builds one matcher from its name (case-insensitive) and arguments.
fn matcher(name: &str, args: Vec<String>) -> Result<Matcher, String> {
    let count = args.len();
    let exactly = |n: usize| {
        if count == n {
            Ok(())
        } else {
            Err(format!("{name} takes {n} value{}, got {count}", if n == 1 { "" } else { "s" }))
        }
    };
    Ok(match name.to_ascii_lowercase().as_str() {
        "host" => Matcher::Host(args.iter().map(|h| h.to_ascii_lowercase()).collect()),
        "hostregexp" => {
            exactly(1)?;
            Matcher::HostRegexp(regex(&format!("(?i){}", args[0]))?)
        }
        "path" => Matcher::Path(args),
        "pathprefix" => Matcher::PathPrefix(args),
        "pathregexp" => {
            exactly(1)?;
            Matcher::PathRegexp(regex(&args[0])?)
        }
        "method" => Matcher::Method(
            args.iter()
                .map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| format!("invalid method {m:?}")))
                .collect::<Result<_, _>>()?,
        ),
        "header" | "headers" => {
            exactly(2)?;
            Matcher::Header(args[0].to_ascii_lowercase(), args[1].clone())
        }
        "headerregexp" | "headersregexp" => {
            exactly(2)?;
            Matcher::HeaderRegexp(args[0].to_ascii_lowercase(), regex(&args[1])?)
        }
        "query" => match args.len() {
            1 => Matcher::Query(args[0].clone(), None),
            2 => Matcher::Query(args[0].clone(), Some(args[1].clone())),
            n => return Err(format!("Query takes a key and optionally a value, got {n} values")),
        },
        "queryregexp" => {
            exactly(2)?;
            Matcher::QueryRegexp(args[0].clone(), regex(&args[1])?)
        }
        "clientip" => Matcher::ClientIp(
            args.iter().map(|a| Cidr::parse(a).ok_or_else(|| format!("invalid IP or CIDR {a:?}"))).collect::<Result<_, _>>()?,
        ),
        _ => {
            return Err(format!(
                "unknown matcher {name:?}; use Host, HostRegexp, Path, PathPrefix, PathRegexp, Method, Header, HeaderRegexp, Query, QueryRegexp or ClientIP"
            ))
        }
    })
    .and_then(|m| match &m {
        Matcher::Host(v) | Matcher::Path(v) | Matcher::PathPrefix(v) if v.is_empty() => Err(format!("{name} needs a value")),
        Matcher::Method(v) if v.is_empty() => Err(format!("{name} needs a value")),
        _ => Ok(m),
    })
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
    fn parse_errors_name_the_column() {
        let err = |rule: &str| Rule::parse(rule).unwrap_err();
        assert_eq!(err("Host(`a`) && ").column, 14);
        assert_eq!(err("Host(`a`) & Path(`/`)").column, 11);
        assert_eq!(err("Hots(`a`)").column, 1);
        assert!(err("Hots(`a`)").message.contains("unknown matcher"));
        assert_eq!(err("Host(`a`").column, 9);
        assert_eq!(err("Path(`/x)").column, 6);
        assert_eq!(err("Host(`a`) Path(`/`)").column, 11);
        assert!(err("PathRegexp(`(`)").message.contains("invalid regular expression"));
        assert!(err("ClientIP(`10.0.0.0/40`)").message.contains("CIDR"));
        assert!(err("Header(`X`)").message.contains("takes 2 values"));
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
