//! Active health checks: one task per pool that has a `healthCheck`, probing every server each
//! interval. A server that fails leaves rotation; it comes back at its first passing probe. The
//! task holds the pool weakly and ends when a reload drops the pool, or at shutdown.

use std::sync::{Arc, Weak};

use http::{uri::PathAndQuery, Request, Uri};
use http_body_util::{BodyExt, Empty};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::Pool;
use crate::{data::upstream::Upstream, dynamic::HealthCheck};

/// Starts the health check of `pool`, if it has one, on `tasks`.
pub fn spawn(tasks: &TaskTracker, pool: &Arc<Pool>, upstream: Upstream, shutdown: CancellationToken) {
    let Some(check) = pool.spec.health_check.clone().map(Arc::new) else { return };
    let weak = Arc::downgrade(pool);
    tasks.spawn(async move {
        let mut ticker = tokio::time::interval(check.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if !probe_all(&weak, &check, &upstream).await {
                return;
            }
        }
    });
}

/// Probes every server once, concurrently; false when the pool is gone.
async fn probe_all(weak: &Weak<Pool>, check: &Arc<HealthCheck>, upstream: &Upstream) -> bool {
    let Some(pool) = weak.upgrade() else { return false };
    let mut probes = tokio::task::JoinSet::new();
    for (i, server) in pool.servers.iter().enumerate() {
        let (url, check, upstream) = (server.url.clone(), check.clone(), upstream.clone());
        probes.spawn(async move { (i, probe(&url, &check, &upstream).await) });
    }
    while let Some(Ok((i, verdict))) = probes.join_next().await {
        if pool.set_healthy(i, verdict.is_ok()) {
            let (service, server) = (&pool.service, &pool.servers[i].url);
            match verdict {
                Ok(()) => tracing::info!(%service, %server, "health check passes; server back in rotation"),
                Err(why) => tracing::warn!(%service, %server, "health check fails ({why}); server out of rotation"),
            }
        }
    }
    true
}

/// One probe of one server: the check's method, path, headers, scheme, port and hostname.
async fn probe(server: &Uri, check: &HealthCheck, upstream: &Upstream) -> Result<(), String> {
    let uri = probe_uri(server, check)?;
    let mut request = Request::builder().method(check.method.clone()).uri(uri);
    if let Some(host) = &check.hostname {
        request = request.header(http::header::HOST, host.as_str());
    }
    for (name, value) in &check.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let body = Empty::new().map_err(|never| match never {}).boxed_unsync();
    let request = request.body(body).map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(check.timeout, upstream.request(request))
        .await
        .map_err(|_| format!("no answer within {:?}", check.timeout))?
        .map_err(|e| format!("{e}"))?;
    let status = response.status();
    let ok = match check.status {
        Some(wanted) => status.as_u16() == wanted,
        None => status.is_success() || status.is_redirection(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}

fn probe_uri(server: &Uri, check: &HealthCheck) -> Result<Uri, String> {
    let scheme = check.scheme.as_deref().or(server.scheme_str()).unwrap_or("http");
    let host = server.host().ok_or("the server URL has no host")?;
    let port = check.port.or(server.port_u16());
    let authority = match port {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let path = if check.path.starts_with('/') { check.path.clone() } else { format!("/{}", check.path) };
    let path: PathAndQuery = path.parse().map_err(|e| format!("health check path: {e}"))?;
    Uri::builder().scheme(scheme).authority(authority).path_and_query(path).build().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_uri_takes_the_checks_scheme_port_and_path() {
        let mut check = HealthCheck {
            path: "health?full=1".into(),
            interval: std::time::Duration::from_secs(1),
            timeout: std::time::Duration::from_secs(1),
            port: Some(9000),
            scheme: None,
            hostname: None,
            method: http::Method::GET,
            status: None,
            headers: vec![],
        };
        let server: Uri = "http://10.0.0.1:8080".parse().unwrap();
        assert_eq!(probe_uri(&server, &check).unwrap(), "http://10.0.0.1:9000/health?full=1");
        check.scheme = Some("https".into());
        check.port = None;
        assert_eq!(probe_uri(&server, &check).unwrap(), "https://10.0.0.1:8080/health?full=1");
    }
}
