//! The routing table: for each entrypoint, the routers attached to it, in priority order, with
//! exact hosts dispatched through a hash index. A request is matched against the routers
//! indexed under its host and the routers that can match any host, merged by priority, so a
//! table of 10,000 host routers costs one hash lookup. Built off the request path from a
//! [`DynamicConfig`], never changed afterwards: a reload builds a new table.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use super::rule::{RequestView, Rule};
use crate::{
    config::StaticConfig,
    data::balancer::{Service, Services},
    data::metrics::{names::Kind, Name},
    data::middleware::{Chain, Instances, With},
    data::proxy::internal::Endpoint,
    dynamic::{self, DynamicConfig},
};

pub struct Route {
    pub name: String,
    pub rule: Rule,
    pub priority: u64,
    pub service: Arc<Service>,
    /// The entrypoint's middlewares, then the router's; empty for most routers.
    pub chain: Chain,
    /// Position in the table's global order (priority, then name): lower wins.
    rank: u32,
    /// The router's and its service's names, as the metrics count them.
    pub metric: Name,
    pub service_metric: Name,
}

/// Routers that can answer one kind of connection (TLS or plain) on one entrypoint.
#[derive(Default)]
struct Routes {
    by_host: HashMap<String, Vec<Arc<Route>>>,
    any_host: Vec<Arc<Route>>,
}

#[derive(Default)]
struct EntryRoutes {
    tls: Routes,
    plain: Routes,
}

#[derive(Default)]
pub struct Table {
    entry_points: HashMap<String, EntryRoutes>,
    /// How many routers the table holds.
    pub routers: usize,
    /// The middlewares built for this table, for the next one to carry over.
    middlewares: Instances,
    /// Per entrypoint, the hosts whose TLS routers name options other than `default`, with the
    /// names (and `default` where the host has routers under it too): what the control plane
    /// builds the handshake configurations from (and takes out before publishing).
    pub tls_wanted: crate::data::tls::handshakes::WantedOptions,
    /// The routers and services this table serves, as the metrics name them: series of others
    /// are dropped at the next scrape.
    pub live: HashSet<Name>,
    /// Every load balancer the table's services use (for `traefik_service_server_up`).
    pub pools: Vec<Arc<crate::data::balancer::Pool>>,
}

/// Whether the static configuration turns on what an internal service serves.
fn internal_enabled(endpoint: Endpoint, statics: &StaticConfig) -> bool {
    match endpoint {
        Endpoint::Api => statics.api.is_some(),
        Endpoint::Dashboard => statics.api.as_ref().is_some_and(|a| a.dashboard),
        Endpoint::Prometheus => statics.metrics.is_some(),
        Endpoint::Ping => statics.ping.is_some(),
    }
}

/// Traefik's internal routers: `/metrics` on the metrics entrypoint (unless `manualRouting`),
/// and with an insecure API `/api` and, for the dashboard, `/` on the API's entrypoint; above
/// every user router, behind the entrypoint's middlewares like any router there.
fn internal_routers(statics: &StaticConfig) -> Vec<(String, dynamic::Router, Endpoint)> {
    let mut wanted = Vec::new();
    if let Some(metrics) = statics.metrics.as_ref().filter(|m| !m.manual_routing) {
        wanted.push((
            "prometheus@internal",
            "PathPrefix(`/metrics`)",
            &metrics.entry_point,
            u64::MAX - 1,
            Endpoint::Prometheus,
        ));
    }
    if let Some(api) = statics.api.as_ref().filter(|a| a.on_entry_point) {
        wanted.push(("api@internal", "PathPrefix(`/api`)", &api.entry_point, u64::MAX - 1, Endpoint::Api));
        if api.dashboard {
            wanted.push(("dashboard@internal", "PathPrefix(`/`)", &api.entry_point, u64::MAX - 2, Endpoint::Dashboard));
        }
    }
    wanted
        .into_iter()
        .filter_map(|(name, rule_text, entry_point, priority, endpoint)| {
            let router = dynamic::Router {
                rule: Rule::parse(rule_text).ok()?,
                rule_text: rule_text.to_string(),
                service: name.to_string(),
                entry_points: vec![entry_point.clone()],
                middlewares: Vec::new(),
                priority,
                tls: None,
            };
            Some((name.to_string(), router, endpoint))
        })
        .collect()
}

impl Table {
    /// Builds the table of `config`'s routers over the built `services`, carrying over the
    /// middlewares of `previous` whose spec did not change. Routers without entrypoints attach
    /// to the default ones. Returns the table and a warning for each router that names an
    /// entrypoint which does not exist, or whose middlewares cannot be used there.
    pub fn build(
        config: &DynamicConfig,
        services: &Services,
        statics: &StaticConfig,
        previous: &Table,
        upstream: &crate::data::upstream::Upstream,
    ) -> (Table, Vec<String>) {
        let with = With { upstream, services };
        let mut warnings = Vec::new();
        let mut routers: Vec<(&String, &dynamic::Router, Arc<Service>)> = Vec::new();
        let internal = internal_routers(statics);
        for (name, router, endpoint) in &internal {
            routers.push((name, router, Arc::new(Service::Internal(*endpoint))));
        }
        for (name, router) in &config.routers {
            if let Some(endpoint) = Endpoint::named(&router.service) {
                match internal_enabled(endpoint, statics) {
                    true => routers.push((name, router, Arc::new(Service::Internal(endpoint)))),
                    false => warnings.push(format!(
                        "router {name:?} disabled: {} is not enabled in the static configuration",
                        router.service
                    )),
                }
                continue;
            }
            match services.by_name.get(dynamic::unqualified(&router.service)) {
                Some(service) => routers.push((name, router, service.clone())),
                None => warnings.push(format!("router {name:?}: service {:?} is not available", router.service)),
            }
        }
        routers.sort_by(|a, b| b.1.priority.cmp(&a.1.priority).then_with(|| a.0.cmp(b.0)));

        let mut table = Table { routers: routers.len(), ..Table::default() };
        let mut tls_wanted = crate::data::tls::handshakes::WantedOptions::new();
        for (rank, (name, router, service)) in routers.into_iter().enumerate() {
            let mut chain_on = |references: &[String]| {
                table.middlewares.chain(&previous.middlewares, name, references, &config.middlewares, &with)
            };
            let chain = match chain_on(&router.middlewares) {
                Ok(chain) => chain,
                Err(why) => {
                    warnings.push(format!("router {name:?} disabled: {why}"));
                    continue;
                }
            };
            let route = Arc::new(Route {
                name: name.clone(),
                rule: router.rule.clone(),
                priority: router.priority,
                service,
                chain,
                rank: rank as u32,
                metric: crate::data::metrics::intern(Kind::Router, name),
                service_metric: crate::data::metrics::intern(Kind::Service, dynamic::unqualified(&router.service)),
            });
            table.live.insert(route.metric);
            let hosts = route.rule.required_hosts();
            let attach =
                if router.entry_points.is_empty() { &statics.default_entry_points } else { &router.entry_points };
            for ep in attach {
                let Some(static_ep) = statics.entry_points.get(ep) else {
                    warnings.push(format!("router {name:?}: entrypoint {ep:?} does not exist"));
                    continue;
                };
                // A TLS entrypoint serves every router as TLS; elsewhere the router's tls decides.
                let tls = static_ep.tls.is_some() || router.tls.is_some();
                if tls {
                    let inherited = static_ep.router_tls.as_ref().and_then(|t| t.options.as_deref());
                    let options = router.tls.as_ref().and_then(|t| t.options.as_deref()).or(inherited);
                    if let Err(why) = want_tls_options(&mut tls_wanted, ep, hosts.as_deref(), options, config) {
                        warnings.push(format!("router {name:?} is not served over TLS on entrypoint {ep:?}: {why}"));
                        continue;
                    }
                }
                let route = match static_ep.middlewares.as_slice() {
                    [] => route.clone(),
                    first => {
                        let references: Vec<String> = first.iter().chain(&router.middlewares).cloned().collect();
                        match chain_on(&references) {
                            Ok(chain) => Arc::new(Route {
                                chain,
                                name: route.name.clone(),
                                rule: route.rule.clone(),
                                service: route.service.clone(),
                                ..*route
                            }),
                            Err(why) => {
                                warnings.push(format!("router {name:?} disabled on entrypoint {ep:?}: {why}"));
                                continue;
                            }
                        }
                    }
                };
                let routes = table.entry_points.entry(ep.clone()).or_default();
                let routes = if tls { &mut routes.tls } else { &mut routes.plain };
                match &hosts {
                    Some(hosts) => {
                        for host in hosts {
                            routes.by_host.entry(host.to_ascii_lowercase()).or_default().push(route.clone());
                        }
                    }
                    None => routes.any_host.push(route.clone()),
                }
            }
        }
        for ep in table.entry_points.values_mut() {
            for routes in [&mut ep.tls, &mut ep.plain] {
                for list in routes.by_host.values_mut() {
                    list.dedup_by_key(|r| r.rank);
                }
            }
        }
        table.mark_default_options(&mut tls_wanted, config, statics);
        table.tls_wanted = tls_wanted;
        table.live.extend(services.by_name.keys().map(|name| crate::data::metrics::intern(Kind::Service, name)));
        table.pools = services.pools.values().cloned().collect();
        (table, warnings)
    }
}

impl Table {
    /// Adds `default` to the hosts in `wanted` (the few whose routers name options) that also
    /// have a TLS router under `default`, so that the host gets both.
    fn mark_default_options(
        &self,
        wanted: &mut crate::data::tls::handshakes::WantedOptions,
        config: &DynamicConfig,
        statics: &StaticConfig,
    ) {
        use crate::data::tls::handshakes::DEFAULT;
        for (ep, hosts) in wanted.iter_mut() {
            let Some(routes) = self.entry_points.get(ep) else { continue };
            let inherited = statics.entry_points.get(ep).and_then(|e| e.router_tls.as_ref()?.options.as_deref());
            for (host, names) in hosts.iter_mut() {
                let on_host = routes.tls.by_host.get(host).into_iter().flatten();
                let default = on_host.filter_map(|r| config.routers.get(&r.name)).any(|router| {
                    router.tls.as_ref().and_then(|t| t.options.as_deref()).or(inherited).unwrap_or(DEFAULT) == DEFAULT
                });
                if default {
                    names.insert(DEFAULT.to_string());
                }
            }
        }
    }
}

/// Records that a TLS router on `ep` for `hosts` is served under `options` (`None`:
/// `default`), or says why it cannot be: the options are invalid or missing, or the router
/// names options but no host, so that no handshake could be made under them for it.
fn want_tls_options(
    wanted: &mut crate::data::tls::handshakes::WantedOptions,
    ep: &str,
    hosts: Option<&[String]>,
    options: Option<&str>,
    config: &DynamicConfig,
) -> Result<(), String> {
    use crate::data::tls::handshakes::DEFAULT;
    let options = options.unwrap_or(DEFAULT);
    match config.tls_options.get(options) {
        Some(None) => return Err(format!("its TLS options {options:?} are invalid")),
        None if options != DEFAULT => return Err(format!("its TLS options {options:?} do not exist")),
        _ => {}
    }
    match hosts {
        // Hosts whose routers all use `default` need no entry: every other name gets it.
        Some(_) if options == DEFAULT => Ok(()),
        Some(hosts) => {
            let wanted = wanted.entry(ep.to_string()).or_default();
            for host in hosts {
                wanted.entry(host.to_ascii_lowercase()).or_default().insert(options.to_string());
            }
            Ok(())
        }
        None if options != DEFAULT => Err(format!(
            "it names TLS options {options:?} but its rule names no Host, and a connection's options \
                 are chosen by its SNI; add a Host matcher"
        )),
        None => Ok(()),
    }
}

impl Table {
    /// The highest-priority router on `entry_point` that matches the request.
    pub fn route(&self, entry_point: &str, tls: bool, req: &RequestView<'_>) -> Option<&Arc<Route>> {
        let ep = self.entry_points.get(entry_point)?;
        let routes = if tls { &ep.tls } else { &ep.plain };
        let hosted = routes.by_host.get(req.host).map_or(&[][..], Vec::as_slice);
        let (mut a, mut b) = (hosted.iter().peekable(), routes.any_host.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.rank < y.rank => a.next(),
                (Some(_), Some(_)) | (None, Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, None) => return None,
            }?;
            if next.rule.matches(req) {
                return Some(next);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, net::Ipv4Addr};

    use http::{HeaderMap, Method};

    use super::*;
    use crate::{config::tree::Node, data::balancer, dynamic::DYNAMIC_NAMES};

    fn upstream() -> crate::data::upstream::Upstream {
        crate::data::upstream::Upstream::new(&Default::default()).unwrap()
    }

    fn statics() -> StaticConfig {
        let text = "[entryPoints.web]\naddress = \":80\"\n[entryPoints.websecure]\naddress = \":443\"\n[entryPoints.websecure.tls]\n";
        crate::config::load(Node::from_toml("t.toml", text, crate::config::tree::STATIC_NAMES).unwrap()).unwrap().config
    }

    fn table(routers: &str) -> Table {
        let text =
            format!("{routers}\n[http.services.s.loadBalancer]\nservers = [{{ url = \"http://127.0.0.1:9\" }}]\n");
        let config = dynamic::build(Node::from_toml("d.toml", &text, DYNAMIC_NAMES).unwrap());
        assert!(config.rejected.is_empty(), "{:?}", config.rejected);
        let services = balancer::build(&config, &HashMap::new());
        let (table, warnings) = Table::build(&config, &services, &statics(), &Table::default(), &upstream());
        assert!(warnings.is_empty(), "{warnings:?}");
        table
    }

    fn route<'t>(t: &'t Table, ep: &str, tls: bool, host: &str, path: &str) -> Option<&'t str> {
        let headers = HeaderMap::new();
        let view = RequestView {
            host,
            path,
            query: None,
            method: &Method::GET,
            headers: &headers,
            client_ip: Ipv4Addr::LOCALHOST.into(),
        };
        t.route(ep, tls, &view).map(|r| r.name.as_str())
    }

    #[test]
    fn the_longer_rule_wins_unless_a_priority_says_otherwise() {
        let t = table(
            r#"
            [http.routers.host]
            rule = "Host(`a.example`)"
            service = "s"
            [http.routers.api]
            rule = "Host(`a.example`) && PathPrefix(`/api`)"
            service = "s"
            [http.routers.catchall]
            rule = "PathPrefix(`/`)"
            service = "s"
            priority = 1
            [http.routers.health]
            rule = "Path(`/health`)"
            service = "s"
            priority = 1000
            "#,
        );
        assert_eq!(route(&t, "web", false, "a.example", "/api/x"), Some("api"));
        assert_eq!(route(&t, "web", false, "a.example", "/other"), Some("host"));
        assert_eq!(route(&t, "web", false, "a.example", "/health"), Some("health"));
        assert_eq!(route(&t, "web", false, "b.example", "/x"), Some("catchall"));
    }

    #[test]
    fn routers_attach_to_their_entrypoints_and_tls_decides_the_connection_kind() {
        let t = table(
            r#"
            [http.routers.plain]
            rule = "Host(`a.example`)"
            service = "s"
            entryPoints = ["web"]
            [http.routers.secure]
            rule = "Host(`a.example`)"
            service = "s"
            entryPoints = ["websecure"]
            [http.routers.both]
            rule = "Host(`b.example`)"
            service = "s"
            [http.routers.sni]
            rule = "Host(`c.example`)"
            service = "s"
            entryPoints = ["web"]
            tls = {}
            "#,
        );
        assert_eq!(route(&t, "web", false, "a.example", "/"), Some("plain"));
        assert_eq!(route(&t, "websecure", true, "a.example", "/"), Some("secure"));
        assert_eq!(route(&t, "web", false, "b.example", "/"), Some("both"));
        assert_eq!(route(&t, "websecure", true, "b.example", "/"), Some("both"));
        assert_eq!(route(&t, "web", false, "c.example", "/"), None);
        assert_eq!(route(&t, "web", true, "c.example", "/"), Some("sni"));
    }

    #[test]
    fn tls_routers_record_their_hosts_options_or_are_refused_over_tls_when_they_cannot_be_enforced() {
        let text = r#"
            [http.routers.both]
            rule = "Host(`b.example`)"
            service = "s"
            [http.routers.strict]
            rule = "Host(`s.example`)"
            service = "s"
            tls.options = "modern"
            [http.routers.strict_too]
            rule = "Host(`s.example`) && Path(`/open`)"
            service = "s"
            [http.routers.anyhost]
            rule = "PathPrefix(`/x`)"
            service = "s"
            tls.options = "modern"
            [http.services.s.loadBalancer]
            servers = [{ url = "http://127.0.0.1:9" }]
            [tls.options.modern]
            minVersion = "VersionTLS13"
            "#;
        let config = dynamic::build(Node::from_toml("d.toml", text, DYNAMIC_NAMES).unwrap());
        let services = balancer::build(&config, &HashMap::new());
        let (t, warnings) = Table::build(&config, &services, &statics(), &Table::default(), &upstream());
        assert_eq!(route(&t, "websecure", true, "s.example", "/"), Some("strict"));
        assert_eq!(route(&t, "websecure", true, "c.example", "/x"), None, "{warnings:?}");
        assert_eq!(route(&t, "web", true, "c.example", "/x"), None, "nor where a plain entrypoint speaks TLS");
        assert!(warnings.iter().any(|w| w.contains("\"anyhost\"") && w.contains("add a Host matcher")), "{warnings:?}");
        let wanted = &t.tls_wanted["websecure"];
        assert_eq!(wanted["s.example"].iter().collect::<Vec<_>>(), ["default", "modern"], "both routers' options");
        assert!(!wanted.contains_key("b.example"), "a host under default alone needs no entry");

        // `default` itself invalid: no router is served over TLS, plain ones still are.
        let broken = format!("{text}\n[tls.options.default]\nminVersion = \"TLS13\"\n");
        let config = dynamic::build(Node::from_toml("d.toml", &broken, DYNAMIC_NAMES).unwrap());
        let services = balancer::build(&config, &HashMap::new());
        let (t, _) = Table::build(&config, &services, &statics(), &Table::default(), &upstream());
        assert_eq!(route(&t, "web", false, "b.example", "/"), Some("both"));
        assert_eq!(route(&t, "websecure", true, "b.example", "/"), None);
        assert_eq!(route(&t, "websecure", true, "s.example", "/"), Some("strict"));
    }

    #[test]
    fn ten_thousand_host_routers_dispatch_by_index() {
        let mut text = String::new();
        for i in 0..10_000 {
            text.push_str(&format!("[http.routers.r{i}]\nrule = \"Host(`h{i}.example`)\"\nservice = \"s\"\n"));
        }
        let t = table(&text);
        assert_eq!(t.routers, 10_000);
        assert_eq!(route(&t, "web", false, "h9999.example", "/"), Some("r9999"));
        assert_eq!(route(&t, "web", false, "h10000.example", "/"), None);
        let ep = &t.entry_points["web"].plain;
        assert!(ep.any_host.is_empty() && ep.by_host["h5.example"].len() == 1);
    }
}
