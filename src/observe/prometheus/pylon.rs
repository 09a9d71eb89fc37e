//! Pylon's own families (`pylon_*`): the configuration served, the store, ACME. Each is one
//! series, or one per label value, from the control plane's numbers.

use std::fmt;

use prometheus_client::{
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::MetricType,
};

use super::{counter, gauge, per_bucket, Escaped, Exposition};
use crate::{
    dynamic::runtime::{Info, Status},
    observe::control::Histogram,
};

fn one_gauge(e: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> fmt::Result {
    e.encode_descriptor(name, help, None, MetricType::Gauge)?.encode_gauge(&value)
}

fn one_histogram(e: &mut DescriptorEncoder, name: &str, help: &str, h: &Histogram) -> fmt::Result {
    let buckets = per_bucket(h.bounds, &h.buckets, h.count);
    e.encode_descriptor(name, help, None, MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)
}

impl Exposition {
    pub(super) fn pylon(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let c = &self.control;
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        let revision = c.revision.load(relaxed) as f64;
        one_gauge(e, "pylon_config_revision", "The store revision of the dynamic configuration served", revision)?;

        let runtime = self.status.borrow().runtime.clone();
        let disabled = |infos: &std::collections::BTreeMap<String, Info>| {
            infos.values().filter(|i| i.status == Status::Disabled).count()
        };
        let kinds = [
            ("router", disabled(&runtime.routers)),
            ("service", disabled(&runtime.services)),
            ("middleware", disabled(&runtime.middlewares)),
        ];
        let other = (c.rejected.load(relaxed) as usize).saturating_sub(kinds.iter().map(|(_, n)| n).sum());
        let help = "What the configuration served leaves out, by kind: disabled routers, services and middlewares; other rejected objects";
        let mut m = e.encode_descriptor("pylon_config_rejected", help, None, MetricType::Gauge)?;
        for (kind, n) in kinds.into_iter().chain([("other", other)]) {
            gauge(&mut m, &vec![("kind", Escaped(kind))], n as f64)?;
        }

        let delay = c.apply_delay.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let help = "From a store change reaching this replica to the table that serves it";
        one_histogram(e, "pylon_config_apply_delay_seconds", help, &delay)?;
        let up = if c.store_up.load(relaxed) { 1.0 } else { 0.0 };
        one_gauge(e, "pylon_store_up", "Whether the store answered the last probe", up)?;

        let orders = c.orders.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let help = "Certificate orders of this replica, by result";
        let mut m = e.encode_descriptor("pylon_acme_orders", help, None, MetricType::Counter)?;
        for result in ["issued", "renewed", "failed", "taken_over", "lock_lost"] {
            counter(&mut m, &vec![("result", Escaped(result))], orders.get(result).copied().unwrap_or(0))?;
        }
        let took = c.order_duration.lock().unwrap_or_else(|e| e.into_inner()).clone();
        one_histogram(
            e,
            "pylon_acme_order_duration_seconds",
            "From an order's start to its certificate stored",
            &took,
        )?;
        let help = "Names onDemand refused to order (policy, ask, rate)";
        let mut m = e.encode_descriptor("pylon_acme_on_demand_refused", help, None, MetricType::Counter)?;
        m.encode_counter::<NoLabelSet, u64, u64>(&c.on_demand_refused.load(relaxed), None)?;
        if let Some((stored, holder)) = &self.locks {
            let held = stored.borrow().locked.values().filter(|(h, _)| h == holder).count();
            one_gauge(e, "pylon_acme_locks_held", "Certificate locks this replica holds", held as f64)?;
        }
        Ok(())
    }
}
