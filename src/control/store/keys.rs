//! The one module that knows key paths. Everything Pylon keeps lives under one prefix
//! (`traefik` unless `--consul.prefix` / `--etcd.prefix` say otherwise):
//!
//! ```text
//! <prefix>/static/...   the static configuration, written by `pylon storeconfig`
//! <prefix>/acme/...     ACME state (account, certificates, challenges, locks)
//! <prefix>/http/...     dynamic configuration in Traefik v3's layout
//! <prefix>/tls/...
//! ```
//! `docs/kv-layout.md` documents each key.

/// The prefix Traefik used, kept so that the seed's `storage = "traefik/acme/account"` holds.
pub const DEFAULT_PREFIX: &str = "traefik";

/// Key paths under one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        let prefix = prefix.trim_matches('/');
        Keys { prefix: if prefix.is_empty() { DEFAULT_PREFIX.to_string() } else { prefix.to_string() } }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Everything under the static configuration, with a trailing slash.
    pub fn static_root(&self) -> String {
        format!("{}/static/", self.prefix)
    }

    /// The key of one static setting: `static_key(["entrypoints", "http", "address"])`.
    pub fn static_key<S: AsRef<str>>(&self, path: &[S]) -> String {
        let segments: Vec<&str> = path.iter().map(AsRef::as_ref).collect();
        format!("{}{}", self.static_root(), segments.join("/"))
    }

    /// The segments of a static key below the static root, or `None` for a foreign key.
    pub fn static_path(&self, key: &str) -> Option<Vec<String>> {
        let rest = key.strip_prefix(&self.static_root())?;
        Some(rest.split('/').map(String::from).collect())
    }

    /// The roots of dynamic configuration in Traefik v3's layout, with trailing slashes.
    pub fn dynamic_roots(&self) -> [String; 2] {
        [format!("{}/http/", self.prefix), format!("{}/tls/", self.prefix)]
    }

    /// What the route watcher watches: every spelling of `http/` and `tls/` (keys are
    /// case-insensitive, so `HTTP/` and `Tls/` count) starts with one of these, and nothing
    /// else Pylon keeps under the prefix (`acme/`, `static/`) does.
    pub fn dynamic_watch_parts(&self) -> [String; 4] {
        ["h", "H", "t", "T"].map(|first| format!("{}/{first}", self.prefix))
    }

    /// The segments of a dynamic key below the prefix (`["http", "routers", "web", "rule"]`),
    /// or `None` for a key outside the dynamic roots.
    pub fn dynamic_path(&self, key: &str) -> Option<Vec<String>> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let first = rest.split('/').next()?;
        (first.eq_ignore_ascii_case("http") || first.eq_ignore_ascii_case("tls"))
            .then(|| rest.split('/').map(String::from).collect())
    }

    /// Everything ACME keeps, with a trailing slash; `pylon storeconfig` never touches it.
    pub fn acme_root(&self) -> String {
        format!("{}/acme/", self.prefix)
    }

    /// The cluster's ACME account at one CA.
    pub fn acme_account(&self, ca_id: &str) -> String {
        format!("{}/acme/account/{ca_id}", self.prefix)
    }

    /// Every stored certificate, with a trailing slash.
    pub fn acme_certs(&self) -> String {
        format!("{}/acme/certs/", self.prefix)
    }

    /// One certificate, by its main domain (`*.a.example` for a wildcard).
    pub fn acme_cert(&self, main: &str) -> String {
        format!("{}{main}", self.acme_certs())
    }

    /// Pending HTTP-01 tokens, with a trailing slash.
    pub fn acme_challenges(&self) -> String {
        format!("{}/acme/challenges/", self.prefix)
    }

    /// One HTTP-01 token's key authorization.
    pub fn acme_challenge(&self, token: &str) -> String {
        format!("{}{token}", self.acme_challenges())
    }

    /// TLS-ALPN-01 challenge certificates, with a trailing slash.
    pub fn acme_alpns(&self) -> String {
        format!("{}/acme/alpn/", self.prefix)
    }

    /// The TLS-ALPN-01 challenge certificate for one name.
    pub fn acme_alpn(&self, name: &str) -> String {
        format!("{}{name}", self.acme_alpns())
    }

    /// Orders in progress, with a trailing slash.
    pub fn acme_orders(&self) -> String {
        format!("{}/acme/orders/", self.prefix)
    }

    /// The marker of an order in progress for one certificate.
    pub fn acme_order(&self, main: &str) -> String {
        format!("{}{main}", self.acme_orders())
    }

    /// Failure counts and backoff, with a trailing slash.
    pub fn acme_failures(&self) -> String {
        format!("{}/acme/failures/", self.prefix)
    }

    /// The failure count and backoff of one certificate.
    pub fn acme_failure(&self, main: &str) -> String {
        format!("{}{main}", self.acme_failures())
    }

    /// Where the certificates' locks are: `acme/locks/cert/<main>`.
    pub fn acme_cert_locks(&self) -> String {
        self.acme_lock("cert/")
    }

    /// A lock: `cert/<main>` for an order, `account/<CA id>` for the account.
    pub fn acme_lock(&self, name: &str) -> String {
        format!("{}/acme/locks/{name}", self.prefix)
    }

    /// The replicas' records, with a trailing slash.
    pub fn replicas(&self) -> String {
        format!("{}/replicas/", self.prefix)
    }

    /// One replica's record, bound to its lease.
    pub fn replica(&self, id: &str) -> String {
        format!("{}{id}", self.replicas())
    }
}

#[cfg(test)]
mod tests {
    use super::Keys;

    #[test]
    fn static_keys_round_trip() {
        let keys = Keys::new("/traefik/");
        let key = keys.static_key(&["entrypoints", "http", "address"]);
        assert_eq!(key, "traefik/static/entrypoints/http/address");
        assert_eq!(keys.static_path(&key).unwrap(), ["entrypoints", "http", "address"]);
        assert_eq!(keys.static_path("traefik/acme/account"), None);
    }

    #[test]
    fn dynamic_keys_are_the_http_and_tls_trees() {
        let keys = Keys::new("traefik");
        assert_eq!(keys.dynamic_path("traefik/http/routers/Web/rule").unwrap(), ["http", "routers", "Web", "rule"]);
        assert_eq!(keys.dynamic_path("traefik/TLS/certificates/0/certfile").unwrap()[0], "TLS");
        assert_eq!(keys.dynamic_path("traefik/static/loglevel"), None);
        assert_eq!(keys.dynamic_path("traefikx/http/routers/a/rule"), None);
    }
}
