//! The static configuration as written: serde types in Traefik v1.7's vocabulary (keys are
//! lowercased by the source tree, so `defaultEntryPoints` arrives as `defaultentrypoints`).
//! Nothing here is validated; [`super::model`] turns these into the domain model.

use std::{collections::BTreeMap, time::Duration};

use serde::Deserialize;

use super::lenient;

#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    pub loglevel: Option<String>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub debug: Option<bool>,
    #[serde(default, deserialize_with = "lenient::list")]
    pub defaultentrypoints: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoints: BTreeMap<String, RawEntryPoint>,
    /// Traefik 1.x's top-level grace time, superseded by `[lifeCycle] graceTimeOut`.
    #[serde(default, deserialize_with = "lenient::duration")]
    pub gracetimeout: Option<Duration>,
    pub lifecycle: Option<RawLifeCycle>,
    pub respondingtimeouts: Option<RawRespondingTimeouts>,
    pub forwardingtimeouts: Option<RawForwardingTimeouts>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub insecureskipverify: Option<bool>,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub maxidleconnsperhost: Option<u64>,
    /// PEM files (or PEM contents) trusted for upstream HTTPS besides the system's roots.
    #[serde(default, deserialize_with = "lenient::list")]
    pub rootcas: Option<Vec<String>>,
    pub limits: Option<RawLimits>,
    pub web: Option<RawWeb>,
    pub api: Option<RawApi>,
    pub ping: Option<RawPing>,
    pub metrics: Option<RawMetrics>,
    pub accesslog: Option<RawAccessLog>,
    pub traefiklog: Option<RawTraefikLog>,
    pub acme: Option<RawAcme>,
    /// Traefik v3: `certificatesResolvers.<name>.acme`.
    #[serde(default)]
    pub certificatesresolvers: BTreeMap<String, super::providers::RawResolver>,
    /// Traefik v3's providers left after [`super::dialect::fold_v3`] took etcd, Consul and file.
    pub providers: Option<toml::Table>,
    /// The file provider: v1.7's `[file]`, v3's `providers.file`.
    pub file: Option<super::providers::RawFileProvider>,
    pub global: Option<super::providers::RawGlobal>,
    pub consul: Option<RawKvStore>,
    pub etcd: Option<RawKvStore>,
    // Accepted for compatibility with Traefik files; they change nothing in Pylon.
    #[serde(default, deserialize_with = "lenient::bool")]
    pub checknewversion: Option<bool>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub sendanonymoususage: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawEntryPoint {
    pub address: Option<String>,
    pub redirect: Option<RawRedirect>,
    pub tls: Option<RawTls>,
    /// Traefik v2/v3: `http.redirections` and `http.tls`.
    pub http: Option<RawEntryPointHttp>,
    pub forwardedheaders: Option<RawTrustedIps>,
    pub proxyprotocol: Option<RawTrustedIps>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub compress: Option<bool>,
    /// Traefik v3: routers that name no entrypoint use the `asDefault` ones.
    #[serde(default, deserialize_with = "lenient::bool")]
    pub asdefault: Option<bool>,
    /// Traefik 1.x's `auth`, `whiteList` and `whitelistSourceRange`: read to be refused.
    pub auth: Option<toml::Value>,
    pub whitelist: Option<toml::Value>,
    pub whitelistsourcerange: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRedirect {
    pub entrypoint: Option<String>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub permanent: Option<bool>,
    pub regex: Option<String>,
    pub replacement: Option<String>,
}

/// `[entryPoints.<name>.http]`, Traefik v2/v3's form of an entrypoint's defaults.
#[derive(Debug, Default, Deserialize)]
pub struct RawEntryPointHttp {
    pub redirections: Option<RawRedirections>,
    pub tls: Option<RawEntryPointTls>,
    #[serde(default, deserialize_with = "lenient::list")]
    pub middlewares: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub sanitizepath: Option<bool>,
    pub encodedcharacters: Option<RawEncodedCharacters>,
    /// Pylon's own: the `Upgrade` protocols tunnelled (default `websocket`).
    #[serde(default, deserialize_with = "lenient::list")]
    pub allowedupgrades: Option<Vec<String>>,
}

/// `http.encodedCharacters`: the encoded characters an entrypoint lets through in paths.
#[derive(Debug, Default, Deserialize)]
pub struct RawEncodedCharacters {
    #[serde(default, deserialize_with = "lenient::bool")]
    pub allowencodedslash: Option<bool>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub allowencodedbackslash: Option<bool>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub allowencodednullcharacter: Option<bool>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub allowencodedsemicolon: Option<bool>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub allowencodedpercent: Option<bool>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub allowencodedquestionmark: Option<bool>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub allowencodedhash: Option<bool>,
}

impl RawEncodedCharacters {
    /// Each option, in the order of [`crate::data::proxy::path::REFUSED`] (which names them).
    pub fn options(&self) -> [Option<bool>; 7] {
        [
            self.allowencodedslash,
            self.allowencodedbackslash,
            self.allowencodednullcharacter,
            self.allowencodedsemicolon,
            self.allowencodedpercent,
            self.allowencodedquestionmark,
            self.allowencodedhash,
        ]
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRedirections {
    pub entrypoint: Option<RawRedirectTo>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRedirectTo {
    /// An entrypoint's name, or `:port` of one.
    pub to: Option<String>,
    pub scheme: Option<String>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub permanent: Option<bool>,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub priority: Option<u64>,
}

/// `http.tls`: routers on the entrypoint are TLS routers by default.
#[derive(Debug, Default, Deserialize)]
pub struct RawEntryPointTls {
    pub certresolver: Option<String>,
    pub options: Option<String>,
    #[serde(default)]
    pub domains: Vec<RawDomain>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawTls {
    pub minversion: Option<String>,
    #[serde(default, deserialize_with = "lenient::list")]
    pub ciphersuites: Option<Vec<String>>,
    #[serde(default)]
    pub certificates: Vec<RawCertificate>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub snistrict: Option<bool>,
    /// Traefik 1.x's `[entryPoints.<name>.tls.ClientCA]`.
    pub clientca: Option<RawClientCa>,
    /// Traefik 2+'s `clientAuth` (a TLS option), written on the entrypoint.
    pub clientauth: Option<RawClientAuth>,
    pub maxversion: Option<String>,
    #[serde(default, deserialize_with = "lenient::list")]
    pub curvepreferences: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient::list")]
    pub alpnprotocols: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub disablesessiontickets: Option<bool>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub preferserverciphersuites: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawClientCa {
    #[serde(default, deserialize_with = "lenient::list")]
    pub files: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub optional: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawClientAuth {
    #[serde(default, deserialize_with = "lenient::list")]
    pub cafiles: Option<Vec<String>>,
    pub clientauthtype: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawCertificate {
    pub certfile: Option<String>,
    pub keyfile: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawTrustedIps {
    #[serde(default, deserialize_with = "lenient::list")]
    pub trustedips: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub insecure: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawLifeCycle {
    #[serde(default, deserialize_with = "lenient::duration")]
    pub requestacceptgracetimeout: Option<Duration>,
    #[serde(default, deserialize_with = "lenient::duration")]
    pub gracetimeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRespondingTimeouts {
    #[serde(default, deserialize_with = "lenient::duration")]
    pub readtimeout: Option<Duration>,
    #[serde(default, deserialize_with = "lenient::duration")]
    pub writetimeout: Option<Duration>,
    #[serde(default, deserialize_with = "lenient::duration")]
    pub idletimeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawForwardingTimeouts {
    #[serde(default, deserialize_with = "lenient::duration")]
    pub dialtimeout: Option<Duration>,
    #[serde(default, deserialize_with = "lenient::duration")]
    pub responseheadertimeout: Option<Duration>,
}

/// Pylon's `[limits]`: bounds on what one client may cost.
#[derive(Debug, Default, Deserialize)]
pub struct RawLimits {
    #[serde(default, deserialize_with = "lenient::u64")]
    pub maxheaderbytes: Option<u64>,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub maxconnections: Option<u64>,
}

/// Traefik 1.x's `[web]`: the API, dashboard and ping on their own address.
#[derive(Debug, Default, Deserialize)]
pub struct RawWeb {
    pub address: Option<String>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub readonly: Option<bool>,
    /// `auth`, `certFile`, `keyFile`: read to be refused (the API is served without them).
    pub auth: Option<toml::Value>,
    pub certfile: Option<String>,
    pub keyfile: Option<String>,
    /// `[web.metrics.prometheus]`: Traefik 1.x's metrics, served on the `[web]` address.
    pub metrics: Option<RawMetrics>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawApi {
    pub entrypoint: Option<String>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub dashboard: Option<bool>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub insecure: Option<bool>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub debug: Option<bool>,
    pub basepath: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawPing {
    pub entrypoint: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawMetrics {
    pub prometheus: Option<RawPrometheus>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub addinternals: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawPrometheus {
    pub entrypoint: Option<String>,
    #[serde(default, deserialize_with = "lenient::floats")]
    pub buckets: Option<Vec<f64>>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub addentrypointslabels: Option<bool>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub addrouterslabels: Option<bool>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub addserviceslabels: Option<bool>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub manualrouting: Option<bool>,
    pub headerlabels: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAccessLog {
    pub filepath: Option<String>,
    pub format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawTraefikLog {
    pub filepath: Option<String>,
    pub format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAcme {
    pub email: Option<String>,
    pub storage: Option<String>,
    pub entrypoint: Option<String>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub ondemand: Option<bool>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub onhostrule: Option<bool>,
    pub caserver: Option<String>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub acmelogging: Option<bool>,
    pub keytype: Option<String>,
    pub httpchallenge: Option<RawHttpChallenge>,
    pub tlschallenge: Option<toml::Table>,
    pub dnschallenge: Option<toml::Table>,
    #[serde(default)]
    pub domains: Vec<RawDomain>,
    #[serde(default, deserialize_with = "lenient::list")]
    pub cacertificates: Option<Vec<String>>,
    pub storageencryptionkey: Option<String>,
    #[serde(default, deserialize_with = "lenient::duration")]
    pub leasettl: Option<std::time::Duration>,
    #[serde(default, deserialize_with = "lenient::duration")]
    pub failurebackoff: Option<std::time::Duration>,
    pub eab: Option<RawEab>,
    /// Traefik v3: the lifetime (hours) the CA gives; Pylon reads it off each certificate.
    #[serde(default, deserialize_with = "lenient::u64")]
    pub certificatesduration: Option<u64>,
    pub preferredchain: Option<String>,
    pub ondemandpolicy: Option<RawOnDemandPolicy>,
}

/// `[acme.onDemandPolicy]`: which names may be ordered at the TLS handshake.
#[derive(Debug, Default, Deserialize)]
pub struct RawOnDemandPolicy {
    #[serde(default, deserialize_with = "lenient::list")]
    pub allow: Option<Vec<String>>,
    pub ask: Option<String>,
    #[serde(default, deserialize_with = "lenient::u64")]
    pub rateperminute: Option<u64>,
    #[serde(default, deserialize_with = "lenient::duration")]
    pub timeout: Option<std::time::Duration>,
}

/// External account binding (`[acme.eab] kid`, `hmacEncoded`), for CAs that require one.
#[derive(Debug, Default, Deserialize)]
pub struct RawEab {
    pub kid: Option<String>,
    pub hmacencoded: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawHttpChallenge {
    pub entrypoint: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawDomain {
    pub main: Option<String>,
    #[serde(default, deserialize_with = "lenient::list")]
    pub sans: Option<Vec<String>>,
}

/// `[consul]` or `[etcd]`.
#[derive(Debug, Default, Deserialize)]
pub struct RawKvStore {
    #[serde(default, deserialize_with = "lenient::list")]
    pub endpoint: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub watch: Option<bool>,
    pub prefix: Option<String>,
    pub token: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub useapiv3: Option<bool>,
    /// TLS to the store (Traefik's `ClientTLS`).
    pub tls: Option<RawStoreTls>,
}

/// `[etcd.tls]`, `providers.consul.tls`, ...: files (or PEM text).
#[derive(Debug, Default, Deserialize)]
pub struct RawStoreTls {
    pub ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub insecureskipverify: Option<bool>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub caoptional: Option<bool>,
}

/// Sections of Traefik's other providers, which Pylon does not implement: a file that has them
/// still loads, with a warning.
pub const FOREIGN_PROVIDERS: &[&str] = &[
    "kubernetes",
    "docker",
    "marathon",
    "rancher",
    "ecs",
    "boltdb",
    "zookeeper",
    "consulcatalog",
    "eureka",
    "mesos",
    "servicefabric",
    "rest",
    "dynamodb",
];
