//! What the API shows of the dynamic configuration: every router, service and middleware as
//! its keys say (their tree as JSON), with Traefik's runtime fields: a status (`enabled`,
//! `warning` after a non-critical error, `disabled` after a critical one) and the errors. Built
//! by the control plane with each table; the API reads the last one published.

use std::collections::BTreeMap;

use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Enabled,
    Warning,
    Disabled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Enabled => "enabled",
            Status::Warning => "warning",
            Status::Disabled => "disabled",
        }
    }
}

/// One router, service or middleware.
#[derive(Clone, Debug, PartialEq)]
pub struct Info {
    /// Its keys as a JSON object, lists as arrays; `Null` when they could not be read at all.
    pub config: Value,
    pub status: Status,
    pub errors: Vec<String>,
    /// A service's or middleware's type, lower-cased (`loadbalancer`, `basicauth`).
    pub kind: String,
}

impl Info {
    pub(super) fn new(config: Value, served: bool, errors: Vec<String>) -> Info {
        let status = match (served, errors.is_empty()) {
            (false, _) => Status::Disabled,
            (true, true) => Status::Enabled,
            (true, false) => Status::Warning,
        };
        let kind = config.as_object().and_then(|o| o.keys().next()).map(|k| k.to_ascii_lowercase()).unwrap_or_default();
        Info { config, status, errors, kind }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Runtime {
    pub routers: BTreeMap<String, Info>,
    pub services: BTreeMap<String, Info>,
    pub middlewares: BTreeMap<String, Info>,
}

impl Runtime {
    /// Takes in what building the table said of a router (`router "name" ...`): a router it
    /// disabled is `disabled`; one served with a problem (an entrypoint that does not exist,
    /// TLS refused on one entrypoint) gets a `warning`.
    pub fn note_table_warning(&mut self, line: &str) {
        let Some(name) = line.strip_prefix("router \"").and_then(|rest| rest.split_once('"')).map(|(n, _)| n) else {
            return;
        };
        let Some(info) = self.routers.get_mut(name) else { return };
        info.errors.push(line.to_string());
        let everywhere = line.contains(" disabled: ") || line.contains(" is not available");
        info.status = match (info.status, everywhere) {
            (_, true) | (Status::Disabled, _) => Status::Disabled,
            _ => Status::Warning,
        };
    }
}

/// Traefik's keys of the dynamic configuration, in its case: the tree folds keys to lower case
/// (they are case-insensitive), and the API shows them as Traefik does.
const TRAEFIK_KEYS: &str = "entryPoints middlewares service rule ruleSyntax priority tls options certResolver domains \
    main sans loadBalancer servers url weight preservePath passHostHeader healthCheck path interval unhealthyInterval \
    timeout scheme mode hostname port headers followRedirects method status sticky cookie name secure httpOnly sameSite \
    maxAge domain responseForwarding flushInterval serversTransport strategy weighted services mirroring mirrors \
    mirrorBody percent maxBodySize failover fallback basicAuth users usersFile realm removeHeader headerField digestAuth \
    forwardAuth address trustForwardHeader authResponseHeaders authResponseHeadersRegex authRequestHeaders \
    addAuthCookiesToResponse preserveLocationHeader preserveRequestMethod forwardBody maxResponseBodySize ca cert key \
    insecureSkipVerify ipAllowList ipWhiteList sourceRange ipStrategy depth excludedIPs ipv6Subnet rejectStatusCode \
    rateLimit average period burst sourceCriterion requestHeaderName requestHost inFlightReq amount redirectScheme \
    permanent redirectRegex regex replacement customRequestHeaders customResponseHeaders \
    accessControlAllowCredentials accessControlAllowHeaders accessControlAllowMethods accessControlAllowOriginList \
    accessControlAllowOriginListRegex accessControlExposeHeaders accessControlMaxAge addVaryHeader allowedHosts \
    hostsProxyHeaders sslProxyHeaders stsSeconds stsIncludeSubdomains stsPreload forceSTSHeader frameDeny \
    customFrameOptionsValue contentTypeNosniff browserXssFilter customBrowserXSSValue contentSecurityPolicy \
    contentSecurityPolicyReportOnly publicKey referrerPolicy permissionsPolicy isDevelopment stripPrefix prefixes \
    forceSlash stripPrefixRegex addPrefix prefix replacePath replacePathRegex chain compress excludedContentTypes \
    includedContentTypes minResponseBodyBytes encodings defaultEncoding errors query statusRewrites retry attempts \
    initialInterval circuitBreaker expression checkPeriod fallbackDuration recoveryDuration responseCode buffering \
    maxRequestBodyBytes memRequestBodyBytes maxResponseBodyBytes memResponseBodyBytes retryExpression contentType \
    autoDetect passTLSClientCert pem info notAfter notBefore subject commonName country province locality \
    organization organizationalUnit serialNumber domainComponent issuer grpcWeb allowOrigins";

/// Traefik's keys whose values are numbers and booleans: the KV layout stores them as text,
/// and the API shows them typed, as Traefik does.
const NUMBERS: &str = "priority weight percent maxBodySize port depth burst average amount attempts stsSeconds \
    accessControlMaxAge minResponseBodyBytes maxRequestBodyBytes memRequestBodyBytes maxResponseBodyBytes \
    memResponseBodyBytes maxResponseBodySize responseCode status maxAge ipv6Subnet rejectStatusCode";
const BOOLEANS: &str = "passHostHeader preservePath secure httpOnly insecureSkipVerify removeHeader \
    trustForwardHeader addAuthCookiesToResponse preserveLocationHeader preserveRequestMethod forwardBody \
    permanent forceSlash accessControlAllowCredentials addVaryHeader stsIncludeSubdomains stsPreload \
    forceSTSHeader frameDeny contentTypeNosniff browserXssFilter isDevelopment autoDetect pem followRedirects \
    mirrorBody notAfter notBefore sans commonName country province locality organization organizationalUnit \
    serialNumber domainComponent";

/// `value` of `key`, typed when the key is one of Traefik's numbers or booleans.
fn typed(key: &str, value: &toml::Value) -> Value {
    if let toml::Value::String(text) = value {
        if NUMBERS.split_whitespace().any(|k| k == key) {
            if let Ok(n) = text.trim().parse::<i64>() {
                return Value::from(n);
            }
            if let Some(n) = text.trim().parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
                return Value::Number(n);
            }
        }
        if BOOLEANS.split_whitespace().any(|k| k == key) {
            if let Ok(b) = text.trim().to_ascii_lowercase().parse::<bool>() {
                return Value::Bool(b);
            }
        }
    }
    json_of(value)
}

/// `key` in Traefik's case when it is one of Traefik's keys; as given otherwise (names).
fn traefik_case(key: &str) -> String {
    TRAEFIK_KEYS.split_whitespace().find(|k| k.eq_ignore_ascii_case(key)).unwrap_or(key).to_string()
}

/// A configuration tree as JSON, keys in Traefik's case: tables whose keys are `0`, `1`, ...
/// (lists, as the KV layout spells them) become arrays.
pub fn json_of(value: &toml::Value) -> Value {
    match value {
        toml::Value::Table(table) => {
            let mut keys: Vec<(usize, &toml::Value)> = Vec::new();
            let indexed =
                !table.is_empty() && table.iter().all(|(k, v)| k.parse::<usize>().map(|i| keys.push((i, v))).is_ok());
            if indexed {
                keys.sort_by_key(|(i, _)| *i);
                Value::Array(keys.into_iter().map(|(_, v)| json_of(v)).collect())
            } else {
                Value::Object(
                    table
                        .iter()
                        .map(|(k, v)| {
                            let key = traefik_case(k);
                            let value = typed(&key, v);
                            (key, value)
                        })
                        .collect(),
                )
            }
        }
        toml::Value::Array(items) => Value::Array(items.iter().map(json_of).collect()),
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => Value::from(*f),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_lists_become_arrays_and_statuses_follow_errors() {
        let tree: toml::Value = toml::from_str(
            "[loadbalancer.servers.1]\nurl = \"http://b\"\n[loadbalancer.servers.0]\nurl = \"http://a\"\n",
        )
        .unwrap();
        let json = json_of(&tree);
        assert_eq!(json["loadBalancer"]["servers"][0]["url"], "http://a");
        assert_eq!(json["loadBalancer"]["servers"][1]["url"], "http://b");
        let kv: toml::Value =
            toml::from_str("[lb]\npasshostheader = \"false\"\n[[lb.servers]]\nweight = \"3\"\nurl = \"7\"\n").unwrap();
        let typed = json_of(&kv);
        assert_eq!(typed["lb"]["passHostHeader"], false, "KV text becomes Traefik's boolean");
        assert_eq!(typed["lb"]["servers"][0]["weight"], 3);
        assert_eq!(typed["lb"]["servers"][0]["url"], "7", "only known number keys are numbers");
        let info = Info::new(json.clone(), true, vec![]);
        assert_eq!((info.status, info.kind.as_str()), (Status::Enabled, "loadbalancer"));
        assert_eq!(Info::new(json.clone(), true, vec!["old keys kept".into()]).status, Status::Warning);
        assert_eq!(Info::new(json, false, vec!["no service".into()]).status, Status::Disabled);

        let mut runtime = Runtime::default();
        runtime.routers.insert("a".into(), Info::new(Value::Null, true, vec![]));
        runtime.routers.insert("b".into(), Info::new(Value::Null, true, vec![]));
        runtime.note_table_warning("router \"a\": entrypoint \"nope\" does not exist");
        runtime.note_table_warning("router \"b\" disabled: its chain cannot be built");
        assert_eq!(runtime.routers["a"].status, Status::Warning);
        assert_eq!(runtime.routers["b"].status, Status::Disabled);
        assert_eq!(runtime.routers["a"].errors.len(), 1);
    }
}
