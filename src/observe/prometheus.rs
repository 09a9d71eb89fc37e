//! `/metrics`: Traefik's Prometheus families (`traefik_*`, with its names, labels and label
//! values) and Pylon's own (`pylon_*`), summed at scrape time from the workers' series, the
//! snapshot and the control plane's numbers. `prometheus-client` writes the exposition
//! (OpenMetrics text); label values are escaped here, since it writes them as given.

use std::{collections::HashMap, fmt, sync::Arc};

use http::{header, HeaderValue, Response, StatusCode};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelValue, LabelValueEncoder, MetricEncoder, NoLabelSet},
    metrics::MetricType,
    registry::Registry,
};

use super::control::ControlMetrics;
use crate::data::{
    metrics::{Key, Level, Metrics, Name, Totals, METHODS, PROTOCOLS},
    plane::Plane,
    proxy::ProxyBody,
};

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What a scrape reads.
pub struct Exposition {
    pub metrics: Option<&'static Metrics>,
    pub plane: Arc<Plane>,
    /// The provider names are qualified with (`app@etcd`).
    pub provider: &'static str,
    pub control: Arc<ControlMetrics>,
    /// The watcher's last status: what it rejected, by kind.
    pub status: tokio::sync::watch::Receiver<crate::control::watcher::Status>,
    /// The cluster's ACME state and this replica's name in lock keys, for
    /// `pylon_acme_locks_held` (when ACME is on).
    pub locks: Option<(tokio::sync::watch::Receiver<Arc<crate::control::acme::follow::Stored>>, String)>,
}

impl fmt::Debug for Exposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exposition").field("provider", &self.provider).finish_non_exhaustive()
    }
}

/// The registry a scrape encodes: the exposition, as one collector.
pub struct Scrape {
    registry: Registry,
}

impl Scrape {
    pub fn new(exposition: Exposition) -> Scrape {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(exposition));
        Scrape { registry }
    }

    pub fn render(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    /// The `/metrics` answer.
    pub fn response(&self) -> Response<ProxyBody> {
        let (status, body) = match self.render() {
            Ok(text) => (StatusCode::OK, text),
            Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "the metrics could not be written\n".to_string()),
        };
        let mut response = Response::new(ProxyBody::full(body));
        *response.status_mut() = status;
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        response
    }
}

/// A label value, escaped as the text format requires (`\\`, `\"`, `\n`).
struct Escaped<'a>(&'a str);

impl EncodeLabelValue for Escaped<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        use fmt::Write;
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

type Labels<'a> = Vec<(&'static str, Escaped<'a>)>;

fn counter(m: &mut MetricEncoder, labels: &Labels, value: u64) -> fmt::Result {
    m.encode_family(labels)?.encode_counter::<NoLabelSet, u64, u64>(&value, None)
}

fn gauge(m: &mut MetricEncoder, labels: &Labels, value: f64) -> fmt::Result {
    m.encode_family(labels)?.encode_gauge(&value)
}

/// Per-bucket counts (the encoder accumulates them) from cumulative ones, `+Inf` last.
fn per_bucket(bounds: &[f64], cumulative: &[u64], count: u64) -> Vec<(f64, u64)> {
    let mut buckets = Vec::with_capacity(bounds.len() + 1);
    let mut before = 0;
    for (bound, &total) in bounds.iter().zip(cumulative) {
        buckets.push((*bound, total - before));
        before = total;
    }
    buckets.push((f64::MAX, count.saturating_sub(before)));
    buckets
}

/// A histogram from cumulative counts per bound.
fn histogram(
    m: &mut MetricEncoder,
    labels: &Labels,
    bounds: &[f64],
    cumulative: &[u64],
    count: u64,
    sum: f64,
) -> fmt::Result {
    let buckets = per_bucket(bounds, cumulative, count);
    m.encode_family(labels)?.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
}

/// The family prefix of a level, and the label naming what it counts.
fn family(level: Level) -> (&'static str, &'static str) {
    match level {
        Level::EntryPoint | Level::EntryPointTls | Level::OpenConnections => ("traefik_entrypoint", "entrypoint"),
        Level::Router | Level::RouterTls => ("traefik_router", "router"),
        Level::Service | Level::ServiceTls | Level::Retries => ("traefik_service", "service"),
    }
}

/// The series of one level.
fn of_level<'a>(totals: &[(&'a Key, &'a Totals)], level: Level) -> Vec<(&'a Key, &'a Totals)> {
    totals.iter().filter(|(k, _)| k.level == level).copied().collect()
}

impl Exposition {
    fn qualified(&self, names: &HashMap<Name, Arc<str>>, name: Name) -> String {
        crate::observe::api::records::qualify(names.get(&name).map_or("", |n| n), self.provider)
    }

    /// The name a series is labelled with: an entrypoint's as it is, a router's or service's
    /// qualified with the provider.
    fn label_name(&self, names: &HashMap<Name, Arc<str>>, level: Level, name: Name) -> String {
        match family(level).1 {
            "entrypoint" => names.get(&name).map_or(String::new(), |n| n.to_string()),
            _ => self.qualified(names, name),
        }
    }

    /// The request families of one level: requests, duration, request and response bytes.
    fn requests(
        &self,
        e: &mut DescriptorEncoder,
        totals: &[(&Key, &Totals)],
        level: Level,
        names: &HashMap<Name, Arc<str>>,
    ) -> fmt::Result {
        let (prefix, what) = family(level);
        let series = of_level(totals, level);
        if series.is_empty() {
            return Ok(());
        }
        let labelled: Vec<(Vec<String>, &Totals)> = series
            .iter()
            .map(|(key, totals)| {
                let mut values = vec![
                    key.a.to_string(),
                    METHODS[usize::from(key.b >> 8).min(METHODS.len() - 1)].to_string(),
                    PROTOCOLS[usize::from(key.b & 0xff).min(PROTOCOLS.len() - 1)].to_string(),
                    self.label_name(names, level, key.name),
                ];
                if level == Level::Router {
                    values.push(self.qualified(names, key.service));
                }
                (values, *totals)
            })
            .collect();
        let labels = |values| request_labels(what, values);
        let bounds = self.metrics.map_or(&[][..], |m| &m.settings.buckets[..]);
        let (name, help) = (format!("{prefix}_requests"), format!("How many HTTP requests the {what} processed"));
        let mut m = e.encode_descriptor(&name, &help, None, MetricType::Counter)?;
        for (values, t) in &labelled {
            counter(&mut m, &labels(values), t.count)?;
        }
        let (name, help) =
            (format!("{prefix}_request_duration_seconds"), format!("How long the {what}'s requests took"));
        let mut m = e.encode_descriptor(&name, &help, None, MetricType::Histogram)?;
        for (values, t) in &labelled {
            histogram(&mut m, &labels(values), bounds, &t.buckets, t.count, t.seconds)?;
        }
        let (name, help) = (format!("{prefix}_requests_bytes"), format!("The size of the {what}'s request bodies"));
        let mut m = e.encode_descriptor(&name, &help, None, MetricType::Counter)?;
        for (values, t) in &labelled {
            counter(&mut m, &labels(values), t.request_bytes)?;
        }
        let (name, help) = (format!("{prefix}_responses_bytes"), format!("The size of the {what}'s response bodies"));
        let mut m = e.encode_descriptor(&name, &help, None, MetricType::Counter)?;
        for (values, t) in &labelled {
            counter(&mut m, &labels(values), t.response_bytes)?;
        }
        Ok(())
    }

    /// `*_requests_tls_total`, by TLS version and cipher suite.
    fn tls(
        &self,
        e: &mut DescriptorEncoder,
        totals: &[(&Key, &Totals)],
        level: Level,
        names: &HashMap<Name, Arc<str>>,
    ) -> fmt::Result {
        let (prefix, what) = family(level);
        let series = of_level(totals, level);
        if series.is_empty() {
            return Ok(());
        }
        let (name, help) = (format!("{prefix}_requests_tls"), format!("How many HTTPS requests the {what} processed"));
        let mut m = e.encode_descriptor(&name, &help, None, MetricType::Counter)?;
        for (key, t) in series {
            let name = self.label_name(names, level, key.name);
            let (version, cipher) = (tls_version(key.a), cipher_name(key.b));
            let service = self.qualified(names, key.service);
            let mut labels =
                vec![("tls_version", Escaped(&version)), ("tls_cipher", Escaped(&cipher)), (what, Escaped(&name))];
            if level == Level::RouterTls {
                labels.push(("service", Escaped(&service)));
            }
            counter(&mut m, &labels, t.count)?;
        }
        Ok(())
    }
}

/// code, method, protocol, the entrypoint, router or service, and a router's service.
fn request_labels<'a>(what: &'static str, values: &'a [String]) -> Labels<'a> {
    let mut labels = vec![
        ("code", Escaped(&values[0])),
        ("method", Escaped(&values[1])),
        ("protocol", Escaped(&values[2])),
        (what, Escaped(&values[3])),
    ];
    if let Some(service) = values.get(4) {
        labels.push(("service", Escaped(service)));
    }
    labels
}

/// Go's names for TLS versions, as Traefik labels them.
fn tls_version(version: u16) -> String {
    match version {
        0x0304 => "1.3".into(),
        0x0303 => "1.2".into(),
        0x0302 => "1.1".into(),
        0x0301 => "1.0".into(),
        other => format!("{other:#06x}"),
    }
}

/// Go's names for cipher suites (IANA's, with TLS 1.3's written `TLS_AES_...`).
fn cipher_name(suite: u16) -> String {
    let name = format!("{:?}", rustls::CipherSuite::from(suite));
    name.strip_prefix("TLS13_").map_or(name.clone(), |rest| format!("TLS_{rest}"))
}

impl Collector for Exposition {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let snapshot = self.plane.load();
        let c = &self.control;
        let relaxed = std::sync::atomic::Ordering::Relaxed;

        let mut m = e.encode_descriptor("traefik_config_reloads", "Config reloads", None, MetricType::Counter)?;
        m.encode_counter::<NoLabelSet, u64, u64>(&c.reloads.load(relaxed), None)?;
        let mut m = e.encode_descriptor(
            "traefik_config_last_reload_success",
            "Last config reload success (Unix seconds)",
            None,
            MetricType::Gauge,
        )?;
        m.encode_gauge(&(c.last_reload.load(relaxed) as f64))?;

        // Certificates served, with their expiry.
        let mut m = e.encode_descriptor(
            "traefik_tls_certs_not_after",
            "Certificate expiration timestamp",
            None,
            MetricType::Gauge,
        )?;
        for cert in snapshot.certs.certificates() {
            let Some(details) = cert.cert.first().and_then(|c| crate::der::details(c)) else { continue };
            let cn = details.subject.iter().find(|(a, _)| *a == crate::der::Attr::CommonName).map_or("", |(_, v)| v);
            let sans = details.sans.join(",");
            let labels = vec![("cn", Escaped(cn)), ("serial", Escaped(&details.serial)), ("sans", Escaped(&sans))];
            gauge(&mut m, &labels, details.not_after as f64)?;
        }

        if let Some(metrics) = self.metrics {
            let table = &snapshot.table;
            let totals = metrics.collect(|name| table.live.contains(&name));
            let names = crate::data::metrics::names::resolve(totals.keys().flat_map(|k| [k.name, k.service]));
            let totals: Vec<(&Key, &Totals)> = totals.iter().collect();

            let mut m = e.encode_descriptor(
                "traefik_open_connections",
                "How many connections are open",
                None,
                MetricType::Gauge,
            )?;
            for (key, t) in totals.iter().filter(|(k, _)| k.level == Level::OpenConnections) {
                let name = names.get(&key.name).map_or("", |n| n);
                gauge(&mut m, &vec![("entrypoint", Escaped(name)), ("protocol", Escaped("TCP"))], t.gauge() as f64)?;
            }
            for level in [Level::EntryPoint, Level::Router, Level::Service] {
                self.requests(&mut e, &totals, level, &names)?;
            }
            for level in [Level::EntryPointTls, Level::RouterTls, Level::ServiceTls] {
                self.tls(&mut e, &totals, level, &names)?;
            }
            let retries: Vec<_> = totals.iter().filter(|(k, _)| k.level == Level::Retries).collect();
            if !retries.is_empty() {
                let mut m = e.encode_descriptor(
                    "traefik_service_retries",
                    "How many request retries happened",
                    None,
                    MetricType::Counter,
                )?;
                for (key, t) in retries {
                    let service = self.qualified(&names, key.name);
                    counter(&mut m, &vec![("service", Escaped(&service))], t.count)?;
                }
            }
            if metrics.settings.services {
                let mut m = e.encode_descriptor(
                    "traefik_service_server_up",
                    "Whether a server passes its health check (1) or not (0)",
                    None,
                    MetricType::Gauge,
                )?;
                for pool in table.pools.iter().filter(|p| p.spec.health_check.is_some()) {
                    let service = crate::observe::api::records::qualify(&pool.service, self.provider);
                    for (i, server) in pool.servers.iter().enumerate() {
                        let url = server.url.to_string();
                        let up = if pool.is_healthy(i) { 1.0 } else { 0.0 };
                        gauge(&mut m, &vec![("service", Escaped(&service)), ("url", Escaped(&url))], up)?;
                    }
                }
            }
        }

        self.pylon(&mut e)
    }
}

mod pylon;

#[cfg(test)]
mod tests;
