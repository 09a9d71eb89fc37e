//! ACME's `onDemand`: a certificate for a name no certificate covers is ordered while its
//! handshake waits (the one wait of the data plane for the control plane).
//! onDemand on the open internet lets anyone make the cluster order certificates, so a name is
//! ordered only when the policy allows it: it matches `allow`, or the `ask` URL answers 200 for
//! it (both when both are set), and this replica has not ordered `ratePerMinute` new names in
//! the last minute. The order itself runs in the manager, under the certificate's lock, so one
//! name is never ordered twice at once; the handshake waits for the certificate to appear in
//! the resolver, up to the policy's timeout, then goes on with whatever certificate there is.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use http_body_util::{BodyExt, Empty};
use tokio::sync::mpsc;

use super::valid_name;
use crate::{
    config::model::{Domain, OnDemandPolicy},
    data::plane::{self, BoxFuture, Plane},
    data::upstream::Upstream,
};

/// How long an `ask` answer is reused.
const ASK_TTL: Duration = Duration::from_secs(60);

pub struct OnDemand {
    policy: OnDemandPolicy,
    requests: mpsc::UnboundedSender<Domain>,
    ask_client: Option<Upstream>,
    state: Mutex<State>,
    /// Names refused (by the policy, `ask` or the rate), for `pylon_acme_on_demand_refused_total`.
    pub refused: Arc<AtomicU64>,
}

#[derive(Default)]
struct State {
    /// Names already handed to the manager (ordered or being ordered).
    requested: HashSet<String>,
    /// Start of the current minute and the new names requested in it.
    window: Option<(Instant, u32)>,
    asked: HashMap<String, (bool, Instant)>,
}

impl OnDemand {
    pub fn new(policy: OnDemandPolicy, requests: mpsc::UnboundedSender<Domain>) -> Result<OnDemand, String> {
        let ask_client = match &policy.ask {
            Some(_) => Some(Upstream::new(&Default::default()).map_err(|e| e.to_string())?),
            None => None,
        };
        Ok(OnDemand { policy, requests, ask_client, state: Mutex::default(), refused: Arc::default() })
    }

    fn allowed_by_list(&self, name: &str) -> bool {
        self.policy.allow.iter().any(|pattern| match pattern.strip_prefix("*.") {
            Some(parent) => name.strip_suffix(parent).is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            None => pattern == name,
        })
    }

    async fn ask(&self, url: &str, name: &str) -> bool {
        if let Some((answer, at)) = self.state.lock().unwrap_or_else(|e| e.into_inner()).asked.get(name) {
            if at.elapsed() < ASK_TTL {
                return *answer;
            }
        }
        let separator = if url.contains('?') { '&' } else { '?' };
        let uri = format!("{url}{separator}domain={name}");
        let Some(client) = &self.ask_client else { return false };
        let request = http::Request::get(&uri).body(Empty::new().map_err(|never| match never {}).boxed_unsync());
        let Ok(request) = request else { return false };
        let answer = match tokio::time::timeout(Duration::from_secs(5), client.client.request(request)).await {
            Ok(Ok(response)) => response.status() == http::StatusCode::OK,
            Ok(Err(err)) => {
                tracing::warn!(
                    domain = name,
                    ask = url,
                    "onDemand ask failed: {}",
                    crate::data::upstream::error_chain(&err)
                );
                false
            }
            Err(_) => {
                tracing::warn!(domain = name, ask = url, "onDemand ask did not answer within 5s");
                false
            }
        };
        self.state.lock().unwrap_or_else(|e| e.into_inner()).asked.insert(name.to_string(), (answer, Instant::now()));
        answer
    }

    /// Whether the policy lets `name` be ordered now; counts it against the rate when so.
    async fn admit(&self, name: &str) -> bool {
        if !valid_name(name) || name.contains('*') {
            return false;
        }
        let listed = !self.policy.allow.is_empty();
        if (!listed && self.policy.ask.is_none()) || (listed && !self.allowed_by_list(name)) {
            tracing::debug!(domain = name, "onDemand: not allowed by acme.onDemandPolicy");
            return false;
        }
        if let Some(url) = &self.policy.ask {
            if !self.ask(url, name).await {
                tracing::info!(domain = name, "onDemand: refused by acme.onDemandPolicy.ask");
                return false;
            }
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.requested.contains(name) {
            return true;
        }
        let (start, count) = match state.window {
            Some((start, count)) if start.elapsed() < Duration::from_secs(60) => (start, count),
            _ => (Instant::now(), 0),
        };
        if count >= self.policy.rate_per_minute {
            tracing::warn!(
                domain = name,
                limit = self.policy.rate_per_minute,
                "onDemand: rate limit reached; not ordering"
            );
            return false;
        }
        state.window = Some((start, count + 1));
        state.requested.insert(name.to_string());
        let _ = self.requests.send(Domain { main: name.to_string(), sans: Vec::new() });
        true
    }

    async fn wait(&self, plane: &Plane, name: &str) {
        if !self.admit(name).await {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if !plane.wait_until(self.policy.timeout, |snapshot| snapshot.certs.lookup(name).is_some()).await {
            tracing::info!(domain = name, "onDemand: no certificate within the timeout yet");
        }
    }
}

impl plane::OnDemand for OnDemand {
    fn wait<'a>(&'a self, plane: &'a Plane, name: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(OnDemand::wait(self, plane, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_demand(allow: &[&str]) -> OnDemand {
        let policy = OnDemandPolicy {
            allow: allow.iter().map(|a| a.to_string()).collect(),
            ask: None,
            rate_per_minute: 2,
            timeout: Duration::from_secs(1),
        };
        OnDemand::new(policy, mpsc::unbounded_channel().0).unwrap()
    }

    #[test]
    fn allow_patterns_match_names_and_names_under_a_parent() {
        let policy = on_demand(&["shop.example", "*.customers.example"]);
        assert!(policy.allowed_by_list("shop.example"));
        assert!(policy.allowed_by_list("a.customers.example"));
        assert!(policy.allowed_by_list("x.a.customers.example"));
        assert!(!policy.allowed_by_list("customers.example"));
        assert!(!policy.allowed_by_list("evilcustomers.example"));
        assert!(!policy.allowed_by_list("www.shop.example"));
    }

    #[tokio::test]
    async fn the_rate_counts_new_names_only_and_invalid_names_never_pass() {
        let policy = on_demand(&["*.example"]);
        assert!(policy.admit("a.example").await);
        assert!(policy.admit("a.example").await, "a name already requested is not counted again");
        assert!(policy.admit("b.example").await);
        assert!(!policy.admit("c.example").await, "two new names per minute");
        assert!(!policy.admit("127.0.0.1").await);
        assert!(!policy.admit("*.example").await);
        assert!(!on_demand(&[]).admit("a.example").await, "no allow and no ask: nothing");
    }
}
