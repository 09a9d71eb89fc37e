//! `inFlightReq`: at most `amount` requests of one source (the request's host, port included,
//! by default) in flight at once; one more gets 429 `max connections reached: <amount>`. A
//! request counts until its response has been sent whole (or the client left). Counts live in
//! this replica's memory. An upgraded connection (a WebSocket) counts until it closes.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use http::{Response, StatusCode};
use serde::Deserialize;

use super::{
    source::{self, Source},
    Next,
};
use crate::{
    config::Checker,
    data::proxy::{reply::Holding, ProxyBody},
};

#[derive(Debug, Default, Deserialize)]
struct Raw {
    #[serde(default, deserialize_with = "crate::config::lenient::u64")]
    amount: Option<u64>,
    sourcecriterion: Option<source::Raw>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub amount: u64,
    pub source: Source,
}

pub(super) fn decode(raw: toml::Value, path: &str, c: &mut Checker) -> Option<Spec> {
    let raw: Raw = super::spec::raw(raw, path, c)?;
    let amount = raw.amount.unwrap_or(0);
    if amount == 0 {
        c.warn(&format!("{path}.amount"), "amount is 0: every request gets 429");
    }
    let source = source::decode(raw.sourcecriterion, Source::Host, &format!("{path}.sourcecriterion"), c)?;
    Some(Spec { amount, source })
}

pub struct InFlight {
    spec: Spec,
    counts: Arc<Mutex<HashMap<String, u64>>>,
}

/// One request's place, given back when dropped.
struct Place {
    counts: Arc<Mutex<HashMap<String, u64>>>,
    source: String,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.source);
            }
        }
    }
}

impl InFlight {
    pub fn new(spec: &Spec) -> InFlight {
        InFlight { spec: spec.clone(), counts: Arc::default() }
    }

    pub async fn handle(&self, mut req: super::Req, next: Next<'_>) -> Response<ProxyBody> {
        let source = self.spec.source.of(&req, next.conn);
        let place = {
            let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            let n = counts.entry(source.clone()).or_insert(0);
            if *n >= self.spec.amount {
                if *n == 0 {
                    counts.remove(&source);
                }
                let body = format!("max connections reached: {}", self.spec.amount);
                return crate::data::proxy::error::text(StatusCode::TOO_MANY_REQUESTS, body);
            }
            *n += 1;
            Arc::new(Place { counts: self.counts.clone(), source })
        };
        let mut held = req.extensions().get::<super::HeldWhileOpen>().cloned().unwrap_or_default();
        held.0.push(place.clone());
        req.extensions_mut().insert(held);
        let response = next.run(req).await;
        response.map(|body| ProxyBody::wrap(Holding::new(body, place)))
    }
}
