//! `pylon acme list | renew NAME | revoke NAME`: the operator's view of the cluster's
//! certificates, run from anywhere that reaches the store (a Kubernetes Job, a shell in a pod).
//! `renew` goes through the same locked path as the replicas; `revoke` revokes at the CA and
//! deletes the stored certificate under its lock, so replicas that still want the name order a
//! new one.

use std::{collections::BTreeMap, io::Write};

use instant_acme::RevocationRequest;
use rustls_pki_types::{pem::PemObject as _, CertificateDer};

use super::{
    account,
    order::{self, Mode, Outcome},
    progress::{self, FailureRecord, OrderMarker},
    record::CertRecord,
    AcmeError,
};
use crate::{config::model::Acme, control::store::keys::Keys, control::store::Op, control::store::Store};

#[derive(Clone, Debug, PartialEq, Eq, clap::Subcommand)]
pub enum Action {
    /// Every stored certificate: names, expiry, issuer, lock holder, failures
    List,
    /// Order a new certificate for NAME now, through the same lock as the replicas
    Renew { name: String },
    /// Revoke NAME's certificate at the CA and delete it from the store
    Revoke { name: String },
}

pub async fn run(
    store: &Store,
    keys: &Keys,
    resolvers: &[Acme],
    action: &Action,
    out: &mut dyn Write,
) -> Result<(), AcmeError> {
    match action {
        Action::List => list(store, keys, out).await,
        Action::Renew { name } => renew(store, keys, resolvers, name, out).await,
        Action::Revoke { name } => revoke(store, keys, resolvers, name, out).await,
    }
}

/// The resolver whose CA issued `record`; for a renewal, else the first (the CA moved).
fn issuer<'a>(resolvers: &'a [Acme], record: &CertRecord, renewing: bool) -> Result<&'a Acme, AcmeError> {
    let by_ca = resolvers.iter().find(|a| a.ca_server == record.ca);
    match (by_ca, resolvers.first()) {
        (Some(acme), _) => Ok(acme),
        (None, Some(first)) if renewing => Ok(first),
        _ => Err(AcmeError::Setup(format!(
            "{} was issued by {}, which no certificate resolver of this configuration uses",
            record.main, record.ca
        ))),
    }
}

/// Every stored certificate, with its lock holder, order in progress and failures: a table.
pub async fn list(store: &Store, keys: &Keys, out: &mut dyn Write) -> Result<(), AcmeError> {
    Listing::read(store, keys).await?.certificates(out);
    Ok(())
}

/// The ACME state as stored, for `pylon acme list` and `pylon cluster`.
pub struct Listing {
    certs: BTreeMap<String, Result<CertRecord, String>>,
    /// Held locks (`acme/locks/`), by their name after the root: `cert/<main>`, `account/<ca>`.
    locks: BTreeMap<String, String>,
    failures: BTreeMap<String, Result<FailureRecord, String>>,
    orders: BTreeMap<String, Result<OrderMarker, String>>,
}

impl Listing {
    pub async fn read(store: &Store, keys: &Keys) -> Result<Listing, AcmeError> {
        let listing = store.list(&keys.acme_root()).await?;
        let mut read = Listing {
            certs: BTreeMap::new(),
            locks: BTreeMap::new(),
            failures: BTreeMap::new(),
            orders: BTreeMap::new(),
        };
        let lock_root = keys.acme_lock("");
        for kv in &listing.kvs {
            if let Some(main) = kv.key.strip_prefix(&keys.acme_certs()) {
                read.certs.insert(main.to_string(), CertRecord::decode(&kv.key, &kv.value).map_err(|e| e.to_string()));
            } else if let Some(name) = kv.key.strip_prefix(&lock_root) {
                read.locks.insert(name.to_string(), String::from_utf8_lossy(&kv.value).into_owned());
            } else if let Some(main) = kv.key.strip_prefix(&keys.acme_failures()) {
                let failure = progress::decode::<FailureRecord>(&kv.key, &kv.value).map_err(|e| e.to_string());
                read.failures.insert(main.to_string(), failure);
            } else if let Some(main) = kv.key.strip_prefix(&keys.acme_orders()) {
                let order = progress::decode::<OrderMarker>(&kv.key, &kv.value).map_err(|e| e.to_string());
                read.orders.insert(main.to_string(), order);
            }
        }
        Ok(read)
    }

    /// One row per name that has a certificate, a lock, an order in progress or failures.
    pub fn certificates(&self, out: &mut dyn Write) {
        let locked = |main: &str| self.locks.get(&format!("cert/{main}"));
        let cert_locks = self.locks.keys().filter_map(|name| name.strip_prefix("cert/"));
        let mut mains: Vec<&str> = self
            .certs
            .keys()
            .chain(self.failures.keys())
            .chain(self.orders.keys())
            .map(String::as_str)
            .chain(cert_locks)
            .collect();
        mains.sort_unstable();
        mains.dedup();
        let now = super::now();
        let _ = writeln!(out, "{:<32} {:<20} {:>9}  {:<28} STATE", "NAME", "EXPIRES (UTC)", "LEFT", "ISSUER");
        for main in mains {
            let (expires, left, issuer, mut state) = match self.certs.get(main) {
                Some(Ok(r)) => {
                    let sans = r.names.iter().skip(1).cloned().collect::<Vec<_>>().join(",");
                    let state = if sans.is_empty() { "ok".to_string() } else { format!("ok, also {sans}") };
                    (date(r.not_after), span(r.not_after - now), r.issuer.clone(), state)
                }
                Some(Err(err)) => ("-".into(), "-".into(), "-".into(), format!("unreadable: {err}")),
                None => ("-".into(), "-".into(), "-".into(), "none stored".into()),
            };
            if let Some(holder) = locked(main) {
                state.push_str(&format!("; locked by {holder}"));
            }
            match self.orders.get(main) {
                Some(Ok(order)) => {
                    let stage = if order.stage.is_empty() { "ordering" } else { &order.stage };
                    state.push_str(&format!("; {stage} by {} for {}", order.holder, span(now - order.started)));
                }
                Some(Err(err)) => state.push_str(&format!("; order marker unreadable: {err}")),
                None => {}
            }
            match self.failures.get(main) {
                Some(Ok(failure)) => {
                    let retry = span(failure.wait().as_secs() as i64);
                    state
                        .push_str(&format!("; {} failed orders, next in {retry}: {}", failure.failures, failure.error));
                }
                Some(Err(err)) => state.push_str(&format!("; failure record unreadable: {err}")),
                None => {}
            }
            let _ = writeln!(out, "{main:<32} {expires:<20} {left:>9}  {issuer:<28} {state}");
        }
    }

    /// Every held lock and its holder.
    pub fn locks(&self, out: &mut dyn Write) {
        let _ = writeln!(out, "{:<44} HOLDER", "LOCK");
        for (name, holder) in &self.locks {
            let _ = writeln!(out, "{name:<44} {holder}");
        }
        if self.locks.is_empty() {
            let _ = writeln!(out, "(no lock is held)");
        }
    }
}

/// The stored certificate whose main domain, or one of whose names, is `name`.
async fn find(store: &Store, keys: &Keys, name: &str) -> Result<CertRecord, AcmeError> {
    let name = name.trim().to_ascii_lowercase();
    let listing = store.list(&keys.acme_certs()).await?;
    let records: Vec<CertRecord> =
        listing.kvs.iter().filter_map(|kv| CertRecord::decode(&kv.key, &kv.value).ok()).collect();
    records
        .iter()
        .find(|r| r.main == name)
        .or_else(|| records.iter().find(|r| r.names.contains(&name)))
        .cloned()
        .ok_or_else(|| AcmeError::Setup(format!("no stored certificate covers {name} (see `pylon acme list`)")))
}

fn holder() -> String {
    format!("pylon-acme-cli/{}", std::process::id())
}

async fn renew(
    store: &Store,
    keys: &Keys,
    resolvers: &[Acme],
    name: &str,
    out: &mut dyn Write,
) -> Result<(), AcmeError> {
    let record = find(store, keys, name).await?;
    let acme = issuer(resolvers, &record, true)?;
    let keyring = super::keyring(acme).map_err(AcmeError::Setup)?;
    let holder = holder();
    let account = account::account(store, keys, acme, &keyring, &holder).await?;
    let lease = store.lease(acme.lease_ttl).await?;
    let ctx = order::Context {
        store,
        keys,
        acme,
        account: &account,
        keyring: &keyring,
        holder: &holder,
        plane: None,
        lease: &lease,
    };
    let outcome = order::obtain(&ctx, &record.names, Mode::Forced, Some(record.not_after)).await;
    if let Err(err) = lease.revoke().await {
        let _ = writeln!(out, "note: revoking the lease failed ({err}); it runs out by itself");
    }
    match outcome? {
        Outcome::Issued { record: new, cleanup, .. } => {
            let _ =
                writeln!(out, "renewed {}: expires {} (was {})", new.main, date(new.not_after), date(record.not_after));
            if let Some(error) = cleanup {
                let _ =
                    writeln!(out, "note: releasing the lock afterwards failed ({error}); it runs out with its lease");
            }
            Ok(())
        }
        Outcome::LockLost => Err(AcmeError::Setup(format!(
            "renewing {}: lost the lock mid-order (paused past the lease); a replica orders it",
            record.main
        ))),
        Outcome::Failed { error, retry_in, .. } => Err(AcmeError::Setup(format!(
            "renewing {}: {error}; the previous certificate stays; replicas retry in {}",
            record.main,
            span(retry_in.as_secs() as i64)
        ))),
        Outcome::Busy => Err(AcmeError::Setup(format!("{} is being ordered by a replica right now", record.main))),
        Outcome::AlreadyStored | Outcome::BackingOff => {
            unreachable!("a forced order neither finds the certificate stored nor waits for the backoff")
        }
    }
}

async fn revoke(
    store: &Store,
    keys: &Keys,
    resolvers: &[Acme],
    name: &str,
    out: &mut dyn Write,
) -> Result<(), AcmeError> {
    let record = find(store, keys, name).await?;
    let acme = issuer(resolvers, &record, false)?;
    let keyring = super::keyring(acme).map_err(AcmeError::Setup)?;
    let holder = holder();
    let account = account::account(store, keys, acme, &keyring, &holder).await?;
    let leaf = CertificateDer::from_pem_slice(record.chain.as_bytes())
        .map_err(|e| AcmeError::Setup(format!("{}: the stored chain: {e}", record.main)))?;
    let lease = store.lease(acme.lease_ttl).await?;
    let guard = store.lock(&keys.acme_lock(&format!("cert/{}", record.main)), &holder, &lease).await?;
    patiently!(account.revoke(&RevocationRequest { certificate: &leaf, reason: None }).await)
        .map_err(|e| AcmeError::from_acme(&record.main, e))?;
    let cert_key = keys.acme_cert(&record.main);
    guard.fenced(vec![Op::Delete { key: cert_key.clone() }]).await?;
    guard.release().await?;
    lease.revoke().await?;
    let _ = writeln!(out, "revoked {} and deleted {cert_key}; replicas that want it order a new one", record.main);
    Ok(())
}

/// `YYYY-MM-DD HH:MM:SS` of Unix seconds, UTC.
fn date(unix: i64) -> String {
    let (year, month, day, hour, minute, second) = crate::calendar::from_unix(unix);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}")
}

/// A short duration: `12d 3h`, `4h 10m`, `5m 2s`, `9s`; negative is `expired`.
fn span(seconds: i64) -> String {
    match seconds {
        s if s < 0 => "expired".into(),
        s if s >= 86_400 => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_spans_read_as_operators_expect() {
        assert_eq!(date(0), "1970-01-01 00:00:00");
        assert_eq!(date(1_772_323_200), "2026-03-01 00:00:00");
        assert_eq!(date(2_569_104_000 + 3_661), "2051-05-31 01:01:01");
        assert_eq!(span(90 * 86_400 + 7_200), "90d 2h");
        assert_eq!(span(3_725), "1h 2m");
        assert_eq!(span(59), "59s");
        assert_eq!(span(-1), "expired");
    }
}
