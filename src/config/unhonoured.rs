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
    if raw.api.is_some() {
        c.warn("api", "the API and the dashboard are not served yet: /api and /dashboard/ answer 404");
    } else if raw.web.is_some() {
        c.warn(
            "web",
            "the API and the dashboard are not served yet: [web] gives the internal entrypoint and /ping only",
        );
    }
    if raw.metrics.as_ref().is_some_and(|m| m.prometheus.is_some()) {
        c.warn("metrics.prometheus", "Prometheus metrics are not served yet: /metrics answers 404");
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
