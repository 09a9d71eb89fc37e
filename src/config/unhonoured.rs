//! Settings of the static file that Pylon reads but cannot honour (yet): each is a located
//! warning, so that none is taken for working.

use super::{file::RawConfig, Checker};

/// Settings Pylon reads but cannot honour: each a located warning, so that none is taken for
/// working. (`watch` and `useAPIV3` describe what Pylon always does, and need none.)
pub(super) fn warn(raw: &RawConfig, c: &mut Checker) {
    if let Some(log) = &raw.traefiklog {
        if log.filepath.as_deref().is_some_and(|p| !p.is_empty()) {
            c.warn(
                "traefiklog.filepath",
                "ignored: Pylon logs to stderr (redirect it, or let the container runtime keep it)",
            );
        }
        if log.format.is_some() {
            c.warn(
                "traefiklog.format",
                "ignored: Pylon's log lines have one format (tracing's, with key=value fields)",
            );
        }
    }
    if let Some(api) = &raw.api {
        if api.debug == Some(true) {
            c.warn("api.debug", "not supported: Pylon serves no /debug/ endpoints");
        }
        if api.basepath.as_deref().is_some_and(|p| p != "/") {
            match api.insecure == Some(true) {
                true => c.error("api.basepath", "basePath cannot be used with insecure (as in Traefik)"),
                false => c.warn("api.basepath", "not supported yet: the API is served under /api"),
            }
        }
    }
    if raw.metrics.as_ref().is_some_and(|m| m.addinternals == Some(true)) {
        c.warn("metrics.addinternals", "ignored: requests to /ping and /metrics are never counted");
    }
    // Security settings of Traefik 1.x that Pylon cannot enforce: refused, never ignored.
    for (name, ep) in &raw.entrypoints {
        if ep.auth.is_some() {
            c.error(
                &format!("entrypoints.{name}.auth"),
                "not supported: Pylon does not enforce Traefik 1.x's entrypoint auth; put a basicAuth, digestAuth or forwardAuth middleware in entryPoints.<name>.http.middlewares",
            );
        }
        for (key, set) in
            [("whitelist", ep.whitelist.is_some()), ("whitelistsourcerange", ep.whitelistsourcerange.is_some())]
        {
            if set {
                c.error(
                    &format!("entrypoints.{name}.{key}"),
                    "not supported: Pylon does not enforce Traefik 1.x's entrypoint whitelist; put an ipAllowList middleware in entryPoints.<name>.http.middlewares",
                );
            }
        }
    }
    if let Some(web) = &raw.web {
        if web.auth.is_some() {
            c.error("web.auth", "not supported: the API would be served without it; route api@internal behind a basicAuth middleware instead");
        }
        for (key, set) in [("web.certfile", web.certfile.is_some()), ("web.keyfile", web.keyfile.is_some())] {
            if set {
                c.error(key, "not supported: the API would be served without TLS; route api@internal on a TLS entrypoint instead");
            }
        }
    }
    if raw.web.as_ref().is_some_and(|w| w.readonly.is_some()) {
        c.warn("web.readonly", "ignored: Pylon serves no API that changes anything");
    }
    if raw.acme.as_ref().is_some_and(|a| a.acmelogging == Some(true)) {
        c.warn("acme.acmelogging", "ignored: ACME progress is always logged, as certificate.* events");
    }
    for (key, on) in [("checknewversion", raw.checknewversion), ("sendanonymoususage", raw.sendanonymoususage)] {
        if on == Some(true) {
            c.warn(key, "ignored: Pylon never contacts anything but its store, its CA and its upstreams");
        }
    }
}

/// The settings of `[metrics.prometheus]` or v1.7's `[web.metrics.prometheus]` (`base` names
/// which), with Traefik's defaults; the keys Pylon cannot honour are located warnings and bad
/// buckets an error.
pub(super) fn prometheus(
    base: &str,
    p: &super::file::RawPrometheus,
    c: &mut Checker,
) -> crate::data::metrics::Settings {
    let buckets = p.buckets.clone().unwrap_or_else(|| vec![0.1, 0.3, 1.2, 5.0]);
    if buckets.is_empty() || buckets.iter().any(|b| !b.is_finite()) || buckets.windows(2).any(|w| w[0] >= w[1]) {
        c.error(&format!("{base}.buckets"), "buckets must be finite numbers in ascending order");
    }
    if p.headerlabels.as_ref().is_some_and(|h| !h.is_empty()) {
        c.warn(&format!("{base}.headerlabels"), "not supported yet: no header becomes a label");
    }
    crate::data::metrics::Settings {
        entry_points: p.addentrypointslabels.unwrap_or(true),
        routers: p.addrouterslabels.unwrap_or(false),
        services: p.addserviceslabels.unwrap_or(true),
        buckets: buckets.into(),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{load, tree::Node, tree::STATIC_NAMES};

    #[test]
    fn prometheus_takes_traefiks_defaults_and_refuses_bad_buckets_at_their_key() {
        let file = "[metrics.prometheus]\nentryPoint = \"traefik\"\n";
        let metrics = load(Node::from_toml("t.toml", file, STATIC_NAMES).unwrap()).unwrap().config.metrics.unwrap();
        assert_eq!(metrics.entry_point, "traefik");
        let s = metrics.settings;
        assert!(s.entry_points && !s.routers && s.services, "Traefik's label defaults");
        assert_eq!(&s.buckets[..], &[0.1, 0.3, 1.2, 5.0]);

        let file = "[metrics.prometheus]\naddRoutersLabels = true\naddServicesLabels = false\nbuckets = [0.5, 2.0]\n";
        let s = load(Node::from_toml("t.toml", file, STATIC_NAMES).unwrap()).unwrap().config.metrics.unwrap().settings;
        assert!(s.routers && !s.services);
        assert_eq!(&s.buckets[..], &[0.5, 2.0]);

        let file = "[metrics.prometheus]\nbuckets = [1.0, 0.5]\n";
        let errors = load(Node::from_toml("t.toml", file, STATIC_NAMES).unwrap()).unwrap_err();
        assert!(errors.0.iter().any(|e| e.to_string().starts_with("t.toml:2:")), "{:?}", errors.0);
        let file = "[metrics.prometheus]\nheaderLabels = { tenant = \"X-Tenant\" }\n";
        let loaded = load(Node::from_toml("t.toml", file, STATIC_NAMES).unwrap()).unwrap();
        assert!(loaded.warnings.iter().any(|w| w.to_string().starts_with("t.toml:2:")), "a located warning");
    }

    #[test]
    fn traefik_1x_web_metrics_are_served_on_the_web_address() {
        let file = "[web]\naddress = \"127.0.0.1:9090\"\n[web.metrics.prometheus]\nbuckets = [0.5, 2.0]\n";
        let config = load(Node::from_toml("t.toml", file, STATIC_NAMES).unwrap()).unwrap().config;
        let metrics = config.metrics.unwrap();
        assert_eq!(metrics.entry_point, "traefik");
        assert_eq!(config.entry_points["traefik"].address.to_string(), "127.0.0.1:9090");
        assert_eq!(&metrics.settings.buckets[..], &[0.5, 2.0]);

        let file = "[web]\naddress = \":9090\"\n[web.metrics.prometheus]\nbuckets = [2.0, 0.5]\n";
        let errors = load(Node::from_toml("t.toml", file, STATIC_NAMES).unwrap()).unwrap_err();
        assert!(errors.0.iter().any(|e| e.to_string().starts_with("t.toml:4:")), "located: {:?}", errors.0);
        let file = "[web]\n[web.metrics.prometheus]\n[metrics.prometheus]\n";
        let errors = load(Node::from_toml("t.toml", file, STATIC_NAMES).unwrap()).unwrap_err();
        assert!(errors.0.iter().any(|e| e.to_string().contains("keep one")), "{:?}", errors.0);
    }

    #[test]
    fn traefik_1x_auth_and_whitelists_are_refused_at_their_line() {
        for (file, at) in [
            ("[entryPoints.web]\naddress = \":80\"\n[entryPoints.web.auth.basic]\nusers = [\"a:b\"]\n", "t.toml:3:"),
            ("[entryPoints.web]\naddress = \":80\"\nwhiteList = [\"10.0.0.0/8\"]\n", "t.toml:3:"),
            ("[web]\naddress = \":8080\"\n[web.auth.basic]\nusers = [\"a:b\"]\n", "t.toml:3:"),
            ("[web]\naddress = \":8080\"\ncertFile = \"c.pem\"\n", "t.toml:3:"),
            ("[api]\ninsecure = true\nbasePath = \"/ops\"\n", "t.toml:3:"),
        ] {
            let errors = load(Node::from_toml("t.toml", file, STATIC_NAMES).unwrap()).unwrap_err();
            assert!(errors.0.iter().any(|e| e.to_string().starts_with(at)), "{file}: {:?}", errors.0);
        }
    }
}
