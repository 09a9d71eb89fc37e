//! Services as the request path sees them: a tree of load balancers (pools of servers),
//! weighted sets (canary releases), mirrors and failovers, built from the dynamic
//! configuration. Picking a server reads atomics (no lock, no allocation; see [`schedule`]);
//! nothing waits for the store. Pools whose configuration did not change are carried over from the previous build, so
//! their health state and connections survive a reload.

pub mod health;
pub mod pool;
pub mod schedule;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use http::{HeaderMap, HeaderValue};

pub use pool::Pool;
use schedule::Schedule;

use crate::dynamic::{self, Cookie, DynamicConfig};

pub enum Service {
    Pool(Arc<Pool>),
    Weighted(Weighted),
    Mirroring(Mirroring),
    Failover {
        main: Arc<Service>,
        fallback: Arc<Service>,
    },
    /// Pylon's own endpoint (`api@internal`): answered by the proxy, never forwarded.
    Internal(crate::data::proxy::internal::Endpoint),
}

pub struct Weighted {
    children: Vec<Child>,
    /// Smooth weighted round robin over the children's weights.
    schedule: Schedule,
    sticky: Option<Cookie>,
}

struct Child {
    name: String,
    service: Arc<Service>,
    weight: u32,
}

pub struct Mirroring {
    pub main: Arc<Service>,
    pub mirrors: Vec<Mirror>,
    /// Requests with a longer (or unknown) body are not mirrored.
    pub max_body_size: u64,
}

pub struct Mirror {
    pub service: Arc<Service>,
    pub percent: u32,
    count: AtomicU64,
}

impl Mirror {
    /// Whether this request goes to the mirror: `percent` of every 100, spread evenly.
    pub fn take(&self) -> bool {
        let n = self.count.fetch_add(1, Ordering::Relaxed);
        (n * u64::from(self.percent)) % 100 + u64::from(self.percent) >= 100
    }
}

/// Mirrored bodies are buffered; this bounds them when `maxBodySize` is not set.
pub const DEFAULT_MIRROR_BODY: u64 = 1024 * 1024;

/// The server chosen for a request, and the sticky cookies the response must set.
pub struct Pick {
    pub pool: Arc<Pool>,
    pub server: usize,
    pub set_cookies: Vec<HeaderValue>,
}

impl Service {
    /// Whether some server below this service is up.
    pub fn is_available(&self) -> bool {
        match self {
            Service::Pool(p) => p.has_up(),
            Service::Weighted(w) => w.children.iter().any(|c| c.weight > 0 && c.service.is_available()),
            Service::Mirroring(m) => m.main.is_available(),
            Service::Failover { main, fallback } => main.is_available() || fallback.is_available(),
            Service::Internal(_) => true,
        }
    }

    /// Chooses a server, honouring sticky cookies in `headers`; `None` when none is up.
    pub fn pick(&self, headers: &HeaderMap) -> Option<Pick> {
        match self {
            Service::Pool(pool) => {
                let sticky = pool.spec.sticky.as_ref();
                if let Some(i) = sticky.and_then(|c| cookie(headers, &c.name)).and_then(|v| pool.by_cookie(v)) {
                    return Some(Pick { pool: pool.clone(), server: i, set_cookies: Vec::new() });
                }
                let server = pool.next(&[])?;
                let set_cookies =
                    sticky.map(|c| set_cookie(c, &pool.servers[server].cookie_value)).into_iter().collect();
                Some(Pick { pool: pool.clone(), server, set_cookies })
            }
            Service::Weighted(w) => w.pick(headers),
            Service::Mirroring(m) => m.main.pick(headers),
            Service::Failover { main, fallback } => {
                if main.is_available() {
                    main.pick(headers)
                } else {
                    fallback.pick(headers)
                }
            }
            Service::Internal(_) => None,
        }
    }
}

impl Weighted {
    fn pick(&self, headers: &HeaderMap) -> Option<Pick> {
        if let Some(value) = self.sticky.as_ref().and_then(|c| cookie(headers, &c.name)) {
            if let Some(child) = self.children.iter().find(|c| c.name == value && c.service.is_available()) {
                return child.service.pick(headers);
            }
        }
        let chosen = self.schedule.next(|i| self.children[i].service.is_available())?;
        let child = &self.children[chosen];
        let mut pick = child.service.pick(headers)?;
        if let Some(c) = &self.sticky {
            pick.set_cookies.push(set_cookie(c, &child.name));
        }
        Some(pick)
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn set_cookie(c: &Cookie, value: &str) -> HeaderValue {
    let mut text = format!("{}={}; Path={}", c.name, value, c.path);
    if let Some(age) = c.max_age {
        text.push_str(&format!("; Max-Age={age}"));
    }
    if c.http_only {
        text.push_str("; HttpOnly");
    }
    if c.secure {
        text.push_str("; Secure");
    }
    if let Some(same_site) = &c.same_site {
        text.push_str(&format!("; SameSite={same_site}"));
    }
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("pylon_sticky=invalid"))
}

/// Every service of a configuration, built.
pub struct Services {
    pub by_name: HashMap<String, Arc<Service>>,
    /// Every pool, by service name: the next build reuses the unchanged ones.
    pub pools: HashMap<String, Arc<Pool>>,
    /// Pools created by this build (not carried over): their health checks must start.
    pub new_pools: Vec<Arc<Pool>>,
}

/// Builds every service of `config`, reusing pools from `previous` whose spec is unchanged.
/// `dynamic::build` has already rejected dangling references and cycles.
pub fn build(config: &DynamicConfig, previous: &HashMap<String, Arc<Pool>>) -> Services {
    let mut out = Services { by_name: HashMap::new(), pools: HashMap::new(), new_pools: Vec::new() };
    for name in config.services.keys() {
        build_one(name, config, previous, &mut out);
    }
    out
}

fn build_one(
    name: &str,
    config: &DynamicConfig,
    previous: &HashMap<String, Arc<Pool>>,
    out: &mut Services,
) -> Option<Arc<Service>> {
    let name = dynamic::unqualified(name);
    if let Some(built) = out.by_name.get(name) {
        return Some(built.clone());
    }
    let mut child = |n: &str| build_one(n, config, previous, out);
    let service = match config.services.get(name)? {
        dynamic::Service::LoadBalancer(lb) => {
            let pool = match previous.get(name) {
                Some(p) if p.spec == *lb => p.clone(),
                _ => {
                    let p = Arc::new(Pool::new(name, lb.clone()));
                    out.new_pools.push(p.clone());
                    p
                }
            };
            out.pools.insert(name.to_string(), pool.clone());
            Service::Pool(pool)
        }
        dynamic::Service::Weighted(w) => {
            let children: Vec<Child> = w
                .services
                .iter()
                .filter_map(|(n, weight)| {
                    Some(Child { name: dynamic::unqualified(n).to_string(), service: child(n)?, weight: *weight })
                })
                .collect();
            let schedule = Schedule::new(&children.iter().map(|c| c.weight).collect::<Vec<_>>());
            Service::Weighted(Weighted { children, schedule, sticky: w.sticky.clone() })
        }
        dynamic::Service::Mirroring(m) => {
            let main = child(&m.service)?;
            let mirrors = m
                .mirrors
                .iter()
                .filter_map(|(n, percent)| {
                    Some(Mirror { service: child(n)?, percent: (*percent).min(100), count: AtomicU64::new(0) })
                })
                .collect();
            Service::Mirroring(Mirroring {
                main,
                mirrors,
                max_body_size: m.max_body_size.unwrap_or(DEFAULT_MIRROR_BODY),
            })
        }
        dynamic::Service::Failover(f) => Service::Failover { main: child(&f.service)?, fallback: child(&f.fallback)? },
    };
    let service = Arc::new(service);
    out.by_name.insert(name.to_string(), service.clone());
    Some(service)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::tree::Node, dynamic::DYNAMIC_NAMES};

    fn config(toml: &str) -> DynamicConfig {
        let d = dynamic::build(Node::from_toml("dyn.toml", toml, DYNAMIC_NAMES).unwrap());
        assert!(d.rejected.is_empty(), "{:?}", d.rejected);
        d
    }

    const CANARY: &str = r#"
        [http.services.app.weighted]
        services = [{ name = "v1", weight = 9 }, { name = "v2", weight = 1 }]
        [http.services.app.weighted.sticky.cookie]
        name = "canary"
        [http.services.v1.loadBalancer]
        servers = [{ url = "http://127.0.0.1:1001" }]
        [http.services.v2.loadBalancer]
        servers = [{ url = "http://127.0.0.1:1002" }]
    "#;

    #[test]
    fn nested_weights_hold_within_one_percent_and_stickiness_follows_the_cookie() {
        let services = build(&config(CANARY), &HashMap::new());
        let app = &services.by_name["app"];
        let mut v2 = 0;
        for _ in 0..10_000 {
            let pick = app.pick(&HeaderMap::new()).unwrap();
            v2 += usize::from(pick.pool.service == "v2");
        }
        assert!((990..=1010).contains(&v2), "v2 got {v2} of 10000");
        let mut headers = HeaderMap::new();
        headers.insert(http::header::COOKIE, HeaderValue::from_static("other=1; canary=v2"));
        for _ in 0..20 {
            assert_eq!(app.pick(&headers).unwrap().pool.service, "v2");
        }
        let first = app.pick(&HeaderMap::new()).unwrap();
        assert!(first.set_cookies[0].to_str().unwrap().starts_with("canary=v"), "{:?}", first.set_cookies);
    }

    #[test]
    fn unchanged_pools_are_carried_over_and_changed_ones_rebuilt() {
        let first = build(&config(CANARY), &HashMap::new());
        assert_eq!(first.new_pools.len(), 2);
        let changed = CANARY.replace("1002", "1003");
        let second = build(&config(&changed), &first.pools);
        assert!(Arc::ptr_eq(&first.pools["v1"], &second.pools["v1"]));
        assert!(!Arc::ptr_eq(&first.pools["v2"], &second.pools["v2"]));
        assert_eq!(second.new_pools.len(), 1);
    }

    #[test]
    fn failover_uses_the_fallback_only_while_the_main_service_is_down() {
        let toml = r#"
            [http.services.f.failover]
            service = "main"
            fallback = "spare"
            [http.services.main.loadBalancer]
            servers = [{ url = "http://127.0.0.1:1001" }]
            [http.services.spare.loadBalancer]
            servers = [{ url = "http://127.0.0.1:1002" }]
        "#;
        let services = build(&config(toml), &HashMap::new());
        let f = &services.by_name["f"];
        assert_eq!(f.pick(&HeaderMap::new()).unwrap().pool.service, "main");
        services.pools["main"].set_healthy(0, false);
        assert_eq!(f.pick(&HeaderMap::new()).unwrap().pool.service, "spare");
        services.pools["spare"].mark_failed(0);
        assert!(f.pick(&HeaderMap::new()).is_none());
    }

    #[test]
    fn a_mirror_takes_its_percentage_of_requests() {
        let nothing = dynamic::LoadBalancer {
            servers: vec![],
            pass_host_header: true,
            health_check: None,
            sticky: None,
            flush_interval: None,
        };
        let service = Arc::new(Service::Pool(Arc::new(Pool::new("m", nothing))));
        for percent in [0, 10, 33, 100] {
            let m = Mirror { service: service.clone(), percent, count: AtomicU64::new(0) };
            let taken = (0..1000).filter(|_| m.take()).count();
            assert_eq!(taken, percent as usize * 10, "percent {percent}");
        }
    }
}
