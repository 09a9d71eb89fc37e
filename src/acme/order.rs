//! One certificate order, under that certificate's lock: take the lock (held through a lease
//! that a background task keeps alive), look at the store again (another replica may have just
//! finished), order, publish each HTTP-01 key authorization under `acme/challenges/<token>`
//! bound to the lease so that any replica can answer, wait for the CA, finalize with a fresh key,
//! and write the certificate fenced on the lock: a holder that lost its lock (paused past its
//! lease) can never overwrite a newer certificate.

use std::time::Duration;

use instant_acme::{Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus, RetryPolicy};

use super::{record::CertRecord, sealed::Keyring, AcmeError};
use crate::{
    config::model::Acme,
    store::{keys::Keys, Op, Store},
};

/// Everything an order needs.
pub struct Context<'a> {
    pub store: &'a Store,
    pub keys: &'a Keys,
    pub acme: &'a Acme,
    pub account: &'a Account,
    pub keyring: &'a Keyring,
    /// This replica's name, written into lock keys.
    pub holder: &'a str,
}

/// What an attempt to order came to.
#[derive(Debug)]
pub enum Outcome {
    /// Ordered and stored by this replica.
    Issued(CertRecord),
    /// The store already had a valid certificate for these names (ordered by someone else).
    AlreadyStored,
    /// Another replica holds the lock: it is ordering.
    Busy,
}

/// Orders a certificate for `names` (the first is the main domain) unless the store has one
/// that covers them and is not due; `force` orders anyway (renewal, `pylon acme renew`).
pub async fn obtain(ctx: &Context<'_>, names: &[String], force: bool) -> Result<Outcome, AcmeError> {
    let main = &names[0];
    let cert_key = ctx.keys.acme_cert(main);
    let lease = ctx.store.lease(ctx.acme.lease_ttl).await?;
    let Some(guard) = ctx.store.try_lock(&ctx.keys.acme_lock(&format!("cert/{main}")), ctx.holder, &lease).await?
    else {
        return Ok(Outcome::Busy);
    };
    if !force {
        if let Some(kv) = ctx.store.get(&cert_key).await? {
            if let Ok(record) = CertRecord::decode(&cert_key, &kv.value) {
                if record.covers(names, super::now()) && super::now() < record.renew_at() {
                    guard.release().await?;
                    return Ok(Outcome::AlreadyStored);
                }
            }
        }
    }

    let identifiers: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
    let problem = |e| AcmeError::from_acme(main, e);
    let mut order = ctx.account.new_order(&NewOrder::new(&identifiers)).await.map_err(problem)?;
    let mut tokens = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.map_err(problem)?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(AcmeError::Order { domain: main.clone(), detail: format!("authorization {other:?}") }),
        }
        let mut challenge = authz.challenge(ChallengeType::Http01).ok_or_else(|| AcmeError::Order {
            domain: main.clone(),
            detail: "the CA offers no http-01 challenge".into(),
        })?;
        let token_key = ctx.keys.acme_challenge(&challenge.token);
        let key_authorization = challenge.key_authorization().as_str().to_string();
        ctx.store.put_with_lease(&token_key, key_authorization, &lease).await?;
        tokens.push(token_key);
        challenge.set_ready().await.map_err(problem)?;
    }

    let patience =
        RetryPolicy::new().initial_delay(Duration::from_millis(250)).backoff(1.5).timeout(Duration::from_secs(90));
    let status = order.poll_ready(&patience).await.map_err(problem)?;
    if status != OrderStatus::Ready {
        // The tokens go with the lease, revoked when this returns.
        let detail = failure_detail(&mut order).await.unwrap_or_else(|| format!("order {status:?}"));
        return Err(AcmeError::Order { domain: main.clone(), detail });
    }
    let (csr, key_pem) = csr(names, &ctx.acme.key_type)?;
    order.finalize_csr(&csr).await.map_err(problem)?;
    let chain = order.poll_certificate(&patience).await.map_err(problem)?;
    let record = CertRecord::new(main, names.to_vec(), chain, &key_pem, &ctx.acme.ca_server, ctx.keyring, &cert_key)
        .ok_or_else(|| AcmeError::Order {
            domain: main.clone(),
            detail: "the CA sent an unreadable certificate".into(),
        })?;

    let mut ops = vec![Op::put(cert_key.clone(), record.encode())];
    ops.extend(tokens.iter().map(|k| Op::Delete { key: k.clone() }));
    let written = guard.fenced(ops).await?;
    if !written.succeeded {
        return Err(AcmeError::LockLost(cert_key));
    }
    guard.release().await?;
    lease.revoke().await?;
    Ok(Outcome::Issued(record))
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
        "RSA2048" | "RSA4096" | "RSA8192" => {
            return Err(AcmeError::Setup(format!(
                "acme.keyType {key_type}: RSA keys are not supported yet; use EC256 or EC384"
            )))
        }
        _ => &rcgen::PKCS_ECDSA_P256_SHA256,
    };
    let failed = |e: rcgen::Error| AcmeError::Setup(format!("generating the certificate key: {e}"));
    let key = rcgen::KeyPair::generate_for(algorithm).map_err(failed)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(failed)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let request = params.serialize_request(&key).map_err(failed)?;
    Ok((request.der().to_vec(), key.serialize_pem()))
}
