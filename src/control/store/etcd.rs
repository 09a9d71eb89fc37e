//! The etcd v3 backend, through the `etcd-client` crate. Revisions, leases and compaction are
//! etcd's own. At start every member is probed at once, and requests go to those that answered,
//! so a hung first member costs no more than a dead one; watches follow one member at a time
//! (`watch.rs`) and move on when it goes quiet.

mod watch;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use async_trait::async_trait;
use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, PutOptions, TxnOp,
};

use super::{Backend, KeyValue, LeaseId, Listing, Op, Result, Revision, StoreError, Txn, TxnResult, Watch};

/// How long one request may take before the endpoint is reported unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a member may take to answer the probe at start.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// After the first member answers the probe, how long the others have to answer too.
const PROBE_GRACE: Duration = Duration::from_millis(300);
/// etcd refuses requests over 1.5 MiB by default; leave room for the key and the envelope.
const MAX_VALUE: usize = 1024 * 1024;
/// etcd's default `--max-txn-ops`.
const MAX_TXN_OPS: usize = 128;

pub struct Etcd {
    /// Balanced over the members that answered at start.
    client: Client,
    endpoints: Vec<String>,
    members: Arc<Members>,
}

/// Every configured member, for watches to move between.
struct Members {
    endpoints: Vec<String>,
    options: ConnectOptions,
    /// The member that last answered a watch: where new watches start.
    preferred: AtomicUsize,
}

impl Members {
    fn preferred(&self) -> usize {
        self.preferred.load(Ordering::Relaxed) % self.endpoints.len()
    }

    fn prefer(&self, at: usize) {
        self.preferred.store(at, Ordering::Relaxed);
    }
}

/// Where and how to reach etcd.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EtcdOptions {
    pub endpoints: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// TLS to every member (`https://`): the CA, and a client certificate if etcd wants one.
    pub tls: Option<super::tls::StoreTls>,
}

/// tonic's TLS settings from the store's: the CA (else the system's roots) and the identity.
fn tls_options(tls: &super::tls::StoreTls) -> Result<etcd_client::TlsOptions> {
    use base64::Engine;
    let mut options = etcd_client::TlsOptions::new();
    match tls.ca_pem()? {
        Some(ca) => options = options.ca_certificate(etcd_client::Certificate::from_pem(ca)),
        None => {
            for der in rustls_native_certs::load_native_certs().certs {
                let body = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
                let pem = format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n");
                options = options.ca_certificate(etcd_client::Certificate::from_pem(pem));
            }
        }
    }
    if let Some((cert, key)) = tls.identity_pem()? {
        options = options.identity(etcd_client::Identity::from_pem(cert, key));
    }
    Ok(options)
}

impl Etcd {
    pub async fn connect(options: &EtcdOptions) -> Result<Etcd> {
        let endpoints = options.endpoints.clone();
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        if let (Some(user), Some(password)) = (&options.username, &options.password) {
            connect = connect.with_user(user.clone(), password.clone());
        }
        if let Some(tls) = &options.tls {
            connect = connect.with_tls(tls_options(tls)?);
        }
        let unreachable =
            |detail: String| StoreError::Unreachable { backend: "etcd", endpoint: endpoints.join(","), detail };
        let (answering, first) = probe(&endpoints, &connect).await.map_err(unreachable)?;
        for (i, endpoint) in endpoints.iter().enumerate().filter(|(i, _)| !answering.contains(i)) {
            tracing::warn!(endpoint, "etcd member {i} did not answer at start; requests go to the others");
        }
        let live: Vec<&String> = answering.iter().map(|&i| &endpoints[i]).collect();
        let client = tokio::time::timeout(REQUEST_TIMEOUT, Client::connect(&live, Some(connect.clone())))
            .await
            .map_err(|_| unreachable(format!("no answer within {REQUEST_TIMEOUT:?}")))?
            .map_err(|e| unreachable(e.to_string()))?;
        let members =
            Arc::new(Members { endpoints: endpoints.clone(), options: connect, preferred: AtomicUsize::new(first) });
        let missing: Vec<String> =
            (0..endpoints.len()).filter(|i| !answering.contains(i)).map(|i| endpoints[i].clone()).collect();
        if !missing.is_empty() {
            tokio::spawn(readmit(client.clone(), Arc::downgrade(&members), missing));
        }
        Ok(Etcd { client, endpoints, members })
    }

    /// Runs one request with a deadline, mapping failures to errors that name the endpoint or
    /// the request (`request` says what it was and on which key). The gRPC status code decides
    /// the kind: `NotFound` (etcd's code for a missing lease), `Unavailable`, or a refusal.
    async fn call<T, F, Fut>(&self, request: impl FnOnce() -> String, f: F) -> Result<T>
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        match tokio::time::timeout(REQUEST_TIMEOUT, f(self.client.clone())).await {
            Err(_) => Err(self.unreachable(format!("no answer within {REQUEST_TIMEOUT:?}"))),
            Ok(Ok(value)) => Ok(value),
            Ok(Err(etcd_client::Error::GRpcStatus(status))) => {
                let (backend, request, detail) = ("etcd", request(), status.message().to_string());
                match status.code() {
                    tonic::Code::Unavailable => Err(self.unreachable(detail)),
                    tonic::Code::NotFound => Err(StoreError::NotFound { backend, request, detail }),
                    _ => Err(StoreError::Rejected { backend, request, detail }),
                }
            }
            Ok(Err(err)) => Err(self.unreachable(err.to_string())),
        }
    }

    fn unreachable(&self, detail: String) -> StoreError {
        StoreError::Unreachable { backend: "etcd", endpoint: self.endpoints.join(","), detail }
    }
}

/// Probes the members left out at start every ten seconds, and gives requests to each again
/// once it answers. Ends when every member is back or the backend is dropped.
async fn readmit(client: Client, members: std::sync::Weak<Members>, mut missing: Vec<String>) {
    while !missing.is_empty() {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let Some(options) = members.upgrade().map(|m| m.options.clone()) else { return };
        let (answering, _) = probe(&missing, &options).await.unwrap_or_default();
        for endpoint in answering.iter().rev().map(|&i| missing.remove(i)) {
            match client.add_endpoint(&endpoint).await {
                Ok(()) => tracing::info!(endpoint, "etcd member answers again; requests go to it too"),
                Err(err) => tracing::warn!(endpoint, "etcd member answers but cannot be added back: {err}"),
            }
        }
    }
}

/// Asks every member at once for a count-only read: the members that answered (within
/// [`PROBE_GRACE`] of the first), in the configured order, and the first of them; the error
/// says why none did.
async fn probe(endpoints: &[String], options: &ConnectOptions) -> std::result::Result<(Vec<usize>, usize), String> {
    let mut probes = tokio::task::JoinSet::new();
    for (i, endpoint) in endpoints.iter().enumerate() {
        let (endpoint, options) = (endpoint.clone(), options.clone());
        probes.spawn(async move {
            let answer = async {
                let mut client = Client::connect([endpoint], Some(options)).await?;
                client.get("pylon-ping", Some(GetOptions::new().with_count_only())).await
            };
            (i, tokio::time::timeout(PROBE_TIMEOUT, answer).await)
        });
    }
    let mut answering = Vec::new();
    let mut errors = Vec::new();
    let mut deadline = None;
    loop {
        let next = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, probes.join_next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
            None => probes.join_next().await,
        };
        let Some(next) = next else { break };
        let Ok((i, answer)) = next else { continue };
        match answer {
            Ok(Ok(_)) => {
                answering.push(i);
                deadline.get_or_insert_with(|| tokio::time::Instant::now() + PROBE_GRACE);
            }
            Ok(Err(err)) => errors.push(format!("{}: {err}", endpoints[i])),
            Err(_) => errors.push(format!("{}: no answer within {PROBE_TIMEOUT:?}", endpoints[i])),
        }
    }
    // Watches start on the first member in the configured order that answered.
    answering.sort_unstable();
    match answering.first() {
        Some(&first) => Ok((answering, first)),
        None => Err(errors.join("; ")),
    }
}

fn to_kv(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision() as u64,
        mod_revision: kv.mod_revision() as u64,
        lease: (kv.lease() != 0).then(|| LeaseId(kv.lease().to_string())),
    }
}

/// The store a watch has followed so far. A store restored from a backup, or wiped and started
/// again on the same address, answers with a lower revision or raft term (or another cluster
/// id): its history is not the one the watch was following, and only a new listing is right.
struct Seen {
    cluster: Option<u64>,
    term: u64,
    revision: Revision,
}

impl Seen {
    /// Records `header`; false when it comes from a store other than the one seen so far.
    fn same_store(&mut self, header: &etcd_client::ResponseHeader) -> bool {
        let (cluster, term, revision) = (header.cluster_id(), header.raft_term(), header.revision() as u64);
        let same = self.cluster.is_none_or(|c| c == cluster) && term >= self.term && revision >= self.revision;
        *self = Seen { cluster: Some(cluster), term, revision };
        same
    }
}

fn lease_number(lease: &LeaseId) -> Result<i64> {
    lease.0.parse().map_err(|_| StoreError::LeaseLost(lease.clone()))
}

#[async_trait]
impl Backend for Etcd {
    fn name(&self) -> &'static str {
        "etcd"
    }
    fn endpoint(&self) -> String {
        self.endpoints.join(",")
    }
    fn max_value_bytes(&self) -> usize {
        MAX_VALUE
    }
    fn max_txn_ops(&self) -> usize {
        MAX_TXN_OPS
    }
    fn keeps_history(&self) -> bool {
        true
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let request = || format!("a read of {key:?}");
        let key = key.to_string();
        let resp = self.call(request, |mut c| async move { c.get(key, None).await }).await?;
        Ok(resp.kvs().first().map(to_kv))
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        let request = || format!("a listing of {prefix:?}");
        let prefix = prefix.to_string();
        let list = |mut c: Client| async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await };
        let resp = self.call(request, list).await?;
        let revision = resp.header().map_or(0, |h| h.revision() as u64);
        Ok(Listing { kvs: resp.kvs().iter().map(to_kv).collect(), revision })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        let compares: Vec<EtcdCompare> = txn
            .compares
            .iter()
            .map(|c| EtcdCompare::mod_revision(c.key.clone(), CompareOp::Equal, c.revision as i64))
            .collect();
        let lease = txn.ops.iter().find_map(|op| match op {
            Op::Put { lease: Some(lease), .. } => Some(lease.clone()),
            _ => None,
        });
        let described = txn.describe();
        let request = move || described;
        let mut ops = Vec::with_capacity(txn.ops.len());
        for op in txn.ops {
            ops.push(match op {
                Op::Put { key, value, lease: None } => TxnOp::put(key, value, None),
                Op::Put { key, value, lease: Some(lease) } => {
                    TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease_number(&lease)?)))
                }
                Op::Delete { key } => TxnOp::delete(key, None),
                Op::DeletePrefix { prefix } => TxnOp::delete(prefix, Some(DeleteOptions::new().with_prefix())),
            });
        }
        let txn_request = etcd_client::Txn::new().when(compares).and_then(ops);
        let resp = match self.call(request, |mut c| async move { c.txn(txn_request).await }).await {
            // A put bound to an expired lease: etcd answers NotFound.
            Err(StoreError::NotFound { .. }) => {
                return Err(StoreError::LeaseLost(lease.unwrap_or_else(|| LeaseId(String::new()))));
            }
            other => other?,
        };
        let revision = resp.header().map_or(0, |h| h.revision() as u64);
        Ok(TxnResult { succeeded: resp.succeeded(), revision })
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch> {
        let (tx, live, watch) = Watch::channel_reporting_live();
        tokio::spawn(watch::run(self.members.clone(), prefix.to_string(), after, tx, live));
        Ok(watch)
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        let secs = ttl.as_secs().max(1) as i64;
        let request = || format!("a lease grant of {secs} s");
        let resp = self.call(request, |mut c| async move { c.lease_grant(secs, None).await }).await?;
        Ok(LeaseId(resp.id().to_string()))
    }

    async fn keep_alive(&self, lease: &LeaseId) -> Result<()> {
        let id = lease_number(lease)?;
        let resp = self
            .call(
                || format!("a keep-alive of lease {lease}"),
                |mut c| async move {
                    let (mut keeper, mut stream) = c.lease_keep_alive(id).await?;
                    keeper.keep_alive().await?;
                    stream.message().await
                },
            )
            .await?;
        match resp {
            Some(resp) if resp.ttl() > 0 => Ok(()),
            _ => Err(StoreError::LeaseLost(lease.clone())),
        }
    }

    async fn revoke_lease(&self, lease: &LeaseId) -> Result<()> {
        let id = lease_number(lease)?;
        match self.call(|| format!("a revoke of lease {lease}"), |mut c| async move { c.lease_revoke(id).await }).await
        {
            Ok(_) => Ok(()),
            Err(StoreError::NotFound { .. }) => Ok(()),
            Err(err) => Err(err),
        }
    }
}
