//! One certificate order, under that certificate's lock: take the lock (bound to the replica's
//! one lease, which a background task keeps alive), look at the store again (another replica may have just
//! finished), mark the order as started, order, publish each challenge response bound to the
//! lease so that any replica can answer, wait for the CA, finalize with a fresh key, and write
//! the certificate fenced on the lock: a holder that lost its lock (paused past its lease) can
//! never overwrite a newer certificate. A failed order records the cluster's backoff instead.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use instant_acme::{Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus, RetryPolicy};

use super::{
    challenge,
    progress::{self, FailureRecord, OrderMarker},
    record::CertRecord,
    sealed::Keyring,
    AcmeError,
};
use crate::{
    config::model::Acme,
    control::store::{keys::Keys, Lease, Op, Store, Txn},
    data::plane::{Plane, Snapshot},
};

/// How long an order waits for this replica to serve a challenge answer it wrote (its own
/// watch delivered it) before telling the CA anyway.
const SERVED_WITHIN: Duration = Duration::from_secs(5);
/// Then how long it gives the other replicas' watches of the same store, which deliver the
/// same event at about the same time, before the CA may ask any of them.
const PROPAGATION: Duration = Duration::from_millis(250);
/// With no plane to look at (`pylon acme renew`), how long to wait instead.
const UNSEEN_PROPAGATION: Duration = Duration::from_secs(1);

/// Everything an order needs.
pub struct Context<'a> {
    pub store: &'a Store,
    pub keys: &'a Keys,
    pub acme: &'a Acme,
    pub account: &'a Account,
    pub keyring: &'a Keyring,
    /// This replica's name, written into lock keys.
    pub holder: &'a str,
    /// This replica's data plane, when it serves: an answer is handed to the CA once served.
    pub plane: Option<&'a Plane>,
    /// The replica's lease: the lock and the challenge responses are bound to it, so they go
    /// when the replica stops or dies.
    pub lease: &'a Lease,
}

/// Why a certificate is ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The configuration wants it: ordered unless a valid certificate not yet due is stored.
    Wanted,
    /// A handshake asked for it (onDemand); the record is marked so that it is renewed.
    OnDemand,
    /// Ordered even when a valid certificate is stored (`pylon acme renew`).
    Forced,
}

/// What an attempt to order came to.
#[derive(Debug)]
pub enum Outcome {
    /// Ordered and stored by this replica; `took_over` names a previous holder that died
    /// mid-order; `cleanup` says why the lock or lease could not be released afterwards (they
    /// run out with the lease; the certificate stands).
    Issued { record: CertRecord, took_over: Option<String>, cleanup: Option<String> },
    /// This replica held the lock and the order failed; the failure is recorded in the store.
    Failed { error: AcmeError, retry_in: Duration, took_over: Option<String> },
    /// The store already had a valid certificate for these names (ordered by someone else).
    AlreadyStored,
    /// Another replica holds the lock: it is ordering.
    Busy,
    /// The cluster's backoff after failed orders has not run out.
    BackingOff,
    /// This replica lost the lock mid-order (paused past its lease): nothing was written, and
    /// the holder that took over orders.
    LockLost,
}

/// A test hook: `PYLON_TEST_PANIC_ORDER=<main domain>` makes the first order of that name in
/// this process panic, to check that the manager reports it and retries.
fn test_panic(main: &str) {
    static PANICKED: AtomicBool = AtomicBool::new(false);
    if std::env::var("PYLON_TEST_PANIC_ORDER").is_ok_and(|name| name == main) && !PANICKED.swap(true, Ordering::Relaxed)
    {
        panic!("PYLON_TEST_PANIC_ORDER: a forced panic in the order of {main}");
    }
}

/// Orders a certificate for `names` (the first is the main domain). Under the lock, the store is
/// read again: unless `mode` forces the order, a certificate that covers the names and is not
/// the one being renewed (`replacing`: its notAfter) means another replica just finished. `Err`
/// is for failures before the order could start (the store unreachable), and only those.
pub async fn obtain(
    ctx: &Context<'_>,
    names: &[String],
    mode: Mode,
    replacing: Option<i64>,
) -> Result<Outcome, AcmeError> {
    let main = &names[0];
    test_panic(main);
    let cert_key = ctx.keys.acme_cert(main);
    let Some(guard) = ctx.store.try_lock(&ctx.keys.acme_lock(&format!("cert/{main}")), ctx.holder, ctx.lease).await?
    else {
        return Ok(Outcome::Busy);
    };
    let existing = match ctx.store.get(&cert_key).await? {
        Some(kv) => CertRecord::decode(&cert_key, &kv.value).ok(),
        None => None,
    };
    let now = super::now();
    let fresh = |r: &CertRecord| r.covers(names, now) && replacing.is_none_or(|seen| r.not_after != seen);
    if mode != Mode::Forced && existing.as_ref().is_some_and(fresh) {
        guard.release().await?;
        return Ok(Outcome::AlreadyStored);
    }
    let on_demand = mode == Mode::OnDemand || (mode == Mode::Forced && existing.is_some_and(|r| r.on_demand));
    let (order_key, failure_key) = (ctx.keys.acme_order(main), ctx.keys.acme_failure(main));
    let previous_failure = match ctx.store.get(&failure_key).await? {
        Some(kv) => progress::decode::<FailureRecord>(&failure_key, &kv.value).ok(),
        None => None,
    };
    // The scheduler's view may predate another replica's failure: the backoff is checked here.
    if mode != Mode::Forced && previous_failure.as_ref().is_some_and(|f| !f.wait().is_zero()) {
        guard.release().await?;
        return Ok(Outcome::BackingOff);
    }
    let took_over = match ctx.store.get(&order_key).await? {
        Some(kv) => progress::decode::<OrderMarker>(&order_key, &kv.value).ok().map(|m| m.holder),
        None => None,
    };
    if let Some(previous) = &took_over {
        tracing::warn!(domain = %main, previous, "taking over an order whose holder stopped (its lease expired)");
    }
    let marker = OrderMarker { holder: ctx.holder.to_string(), started: super::now(), stage: "ordering".into() };
    if !guard.fenced(vec![Op::put(order_key.clone(), progress::encode(&marker))]).await?.succeeded {
        return Ok(Outcome::LockLost);
    }

    let mut responses = Vec::new();
    let (ordered, acme_order) = order(ctx, names, &mut responses, &marker).await;
    let written = responses.clone();
    let settled = async {
        let outcome = match ordered {
            Ok(mut record) => {
                record.on_demand = on_demand;
                let mut ops = vec![
                    Op::put(cert_key.clone(), record.encode()),
                    Op::Delete { key: order_key },
                    Op::Delete { key: failure_key },
                ];
                ops.extend(responses.into_iter().map(|key| Op::Delete { key }));
                if !guard.fenced(ops).await?.succeeded {
                    return Ok(Outcome::LockLost);
                }
                // Stored: what follows is clean-up, and cannot make this a failure.
                let cleanup = guard.release().await.err().map(|e| e.to_string());
                Outcome::Issued { record, took_over, cleanup }
            }
            Err(error) => {
                let failure = FailureRecord::next(
                    previous_failure.as_ref(),
                    ctx.acme.failure_backoff,
                    error.to_string(),
                    ctx.holder,
                );
                let retry_in = failure.wait();
                let mut ops = vec![Op::put(failure_key, progress::encode(&failure)), Op::Delete { key: order_key }];
                ops.extend(responses.into_iter().map(|key| Op::Delete { key }));
                match guard.fenced(ops).await {
                    // Whether and when the name failed is the new holder's to record.
                    Ok(written) if !written.succeeded => return Ok(Outcome::LockLost),
                    Ok(_) => {}
                    Err(err) => tracing::warn!(domain = %main, "recording the failed order: {err}"),
                }
                if let Err(err) = guard.release().await {
                    tracing::warn!(domain = %main, "releasing the lock after a failed order: {err}");
                }
                Outcome::Failed { error, retry_in, took_over }
            }
        };
        Ok(outcome)
    }
    .await;
    // Bound to the replica's lease, which outlives the order: when the fenced writes that
    // delete them did not happen, they are deleted here.
    if !matches!(settled, Ok(Outcome::Issued { .. } | Outcome::Failed { .. })) && !written.is_empty() {
        let ops = written.into_iter().map(|key| Op::Delete { key }).collect();
        if let Err(err) = ctx.store.txn(Txn { compares: Vec::new(), ops }).await {
            tracing::warn!(domain = %main, "deleting the order's challenge responses: {err}");
        }
    }
    // Whatever happened, no authorization of the order stays valid: a failed multi-name order
    // must not leave the names that passed authorized for the next one.
    if let Some(mut acme_order) = acme_order {
        deactivate(&mut acme_order, main).await;
    }
    settled
}

/// Deactivates the authorizations of an order once it has ended, issued or not (RFC 8555
/// §7.5.2), so that every issuance proves control of its names anew: the CA cannot hand a
/// later order a cached authorization (a name that changed hands is not renewed on its old
/// owner's proof). Best effort: a failure is logged, the outcome stands.
async fn deactivate(order: &mut instant_acme::Order, main: &str) {
    let work = async {
        let mut deactivated = 0;
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            // One authorization that cannot be read or deactivated does not keep the others valid.
            // The states held are the ones fetched before the challenges were answered, so the
            // status is not looked at: every authorization is deactivated.
            let result = match authz {
                Ok(mut authz) => patiently!(authz.deactivate().await).map(drop),
                Err(err) => Err(err),
            };
            match result {
                Ok(()) => deactivated += 1,
                Err(err) => tracing::warn!(domain = main, "could not deactivate an authorization of the order: {err}"),
            }
        }
        deactivated
    };
    match tokio::time::timeout(Duration::from_secs(30), work).await {
        Ok(deactivated) => tracing::info!(domain = main, deactivated, "the order's authorizations are deactivated"),
        Err(_) => tracing::warn!(domain = main, "deactivating the order's authorizations timed out"),
    }
}

/// The order itself, and the CA's order object when one was created (to deactivate its
/// authorizations whatever the outcome).
async fn order(
    ctx: &Context<'_>,
    names: &[String],
    responses: &mut Vec<String>,
    marker: &OrderMarker,
) -> (Result<CertRecord, AcmeError>, Option<instant_acme::Order>) {
    let identifiers: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
    let order = patiently!(ctx.account.new_order(&NewOrder::new(&identifiers)).await);
    match order {
        Ok(mut order) => (complete(ctx, names, responses, &mut order, marker).await, Some(order)),
        Err(err) => (Err(AcmeError::from_acme(&names[0], err)), None),
    }
}

/// Answers the order's challenges, waits for the CA and finalizes: the record to store. The
/// challenge responses written go to `responses`, to be deleted whatever the outcome.
async fn complete(
    ctx: &Context<'_>,
    names: &[String],
    responses: &mut Vec<String>,
    order: &mut instant_acme::Order,
    marker: &OrderMarker,
) -> Result<CertRecord, AcmeError> {
    let main = &names[0];
    advance(ctx, main, marker, "validating").await;
    let problem = |e| AcmeError::from_acme(main, e);
    let kind = if ctx.acme.http_challenge.is_some() { ChallengeType::Http01 } else { ChallengeType::TlsAlpn01 };
    let mut answered = std::collections::HashSet::new();
    // Authorizations are fetched one by one; a rejected nonce restarts the pass, and those
    // already fetched or answered are skipped.
    let mut restarts = 0;
    'pass: loop {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = match authz {
                Ok(authz) => authz,
                Err(err) if super::bad_nonce(&err) && restarts < 10 => {
                    restarts += 1;
                    continue 'pass;
                }
                Err(err) => return Err(problem(err)),
            };
            let Identifier::Dns(name) = authz.identifier().identifier.clone() else {
                return Err(AcmeError::Order { domain: main.clone(), detail: "a non-DNS identifier".into() });
            };
            match authz.status {
                AuthorizationStatus::Pending if !answered.contains(&name) => {}
                AuthorizationStatus::Pending | AuthorizationStatus::Valid => continue,
                other => {
                    return Err(AcmeError::Order { domain: main.clone(), detail: format!("authorization {other:?}") })
                }
            }
            let mut challenge = authz.challenge(kind.clone()).ok_or_else(|| AcmeError::Order {
                domain: main.clone(),
                detail: format!("the CA offers no {kind:?} challenge"),
            })?;
            let key_authorization = challenge.key_authorization();
            let (key, value) = match kind {
                ChallengeType::Http01 => {
                    (ctx.keys.acme_challenge(&challenge.token), key_authorization.as_str().as_bytes().to_vec())
                }
                _ => (ctx.keys.acme_alpn(&name), challenge::alpn_response(&name, key_authorization.digest().as_ref())?),
            };
            ctx.store.put_with_lease(&key, value, ctx.lease).await?;
            responses.push(key);
            served(ctx, &kind, &challenge.token, &name).await;
            patiently!(challenge.set_ready().await).map_err(problem)?;
            answered.insert(name);
        }
        break;
    }

    let patience =
        RetryPolicy::new().initial_delay(Duration::from_millis(250)).backoff(1.5).timeout(Duration::from_secs(90));
    let status = patiently!(order.poll_ready(&patience).await).map_err(problem)?;
    if status != OrderStatus::Ready {
        let detail = failure_detail(order).await.unwrap_or_else(|| format!("order {status:?}"));
        return Err(AcmeError::Order { domain: main.clone(), detail });
    }
    advance(ctx, main, marker, "finalizing").await;
    let (csr, key_pem) = csr(names, &ctx.acme.key_type)?;
    patiently!(order.finalize_csr(&csr).await).map_err(problem)?;
    let chain = patiently!(order.poll_certificate(&patience).await).map_err(problem)?;
    let cert_key = ctx.keys.acme_cert(main);
    let record = CertRecord::new(main, names.to_vec(), chain, &key_pem, &ctx.acme.ca_server, ctx.keyring, &cert_key)
        .ok_or_else(|| AcmeError::Order {
            domain: main.clone(),
            detail: "the CA sent an unreadable certificate".into(),
        })?;
    Ok(record)
}

/// Records the order's stage in its marker, for the cluster view. Not fenced: a stale write by
/// a holder that lost its lock shows a wrong stage until the new holder's next one.
async fn advance(ctx: &Context<'_>, main: &str, marker: &OrderMarker, stage: &str) {
    let marker = OrderMarker { stage: stage.to_string(), ..marker.clone() };
    let key = ctx.keys.acme_order(main);
    if let Err(err) = ctx.store.put(&key, progress::encode(&marker)).await {
        tracing::debug!(key, "recording the order's stage: {err}");
    }
}

/// Waits until the challenge answer just written is served: by this replica's own snapshot
/// (its watch delivered it), then [`PROPAGATION`] for the other replicas' watches, so that the
/// CA's request finds the answer in memory wherever the load balancer sends it.
async fn served(ctx: &Context<'_>, kind: &ChallengeType, token: &str, name: &str) {
    let Some(plane) = ctx.plane else {
        return tokio::time::sleep(UNSEEN_PROPAGATION).await;
    };
    let seen = |snapshot: &Snapshot| match kind {
        ChallengeType::Http01 => snapshot.answers.token(token).is_some(),
        _ => snapshot.answers.alpn(name).is_some(),
    };
    if !plane.wait_until(SERVED_WITHIN, seen).await {
        tracing::warn!(
            domain = name,
            "the challenge answer is not served here after {SERVED_WITHIN:?}; asking the CA anyway"
        );
    }
    tokio::time::sleep(PROPAGATION).await;
}

/// The first failed challenge's problem, for the event and the log.
async fn failure_detail(order: &mut instant_acme::Order) -> Option<String> {
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        let state = authz.refresh().await.ok()?;
        for challenge in &state.challenges {
            if let Some(problem) = &challenge.error {
                return Some(format!(
                    "{}: {}",
                    problem.r#type.as_deref().unwrap_or("problem"),
                    problem.detail.as_deref().unwrap_or("")
                ));
            }
        }
    }
    None
}

/// A CSR for `names` with a fresh key of `key_type` (Traefik's names), and that key's PEM.
fn csr(names: &[String], key_type: &str) -> Result<(Vec<u8>, String), AcmeError> {
    let algorithm = match key_type {
        "EC384" => &rcgen::PKCS_ECDSA_P384_SHA384,
        _ => &rcgen::PKCS_ECDSA_P256_SHA256,
    };
    let failed = |e: rcgen::Error| AcmeError::Setup(format!("generating the certificate key: {e}"));
    let key = rcgen::KeyPair::generate_for(algorithm).map_err(failed)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(failed)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let request = params.serialize_request(&key).map_err(failed)?;
    Ok((request.der().to_vec(), key.serialize_pem()))
}
