//! The one ACME account of the cluster, per CA: read from `<prefix>/acme/account/<CA id>` when a
//! replica already created it; otherwise created by whichever replica first holds the account
//! lock, and stored (sealed when storage keys are set) before the lock is released, so two
//! replicas never register two accounts. instant-acme talks to the CA through Pylon's own
//! hyper-util + rustls client, trusting the system's roots plus `acme.caCertificates`.

use std::{future::Future, pin::Pin, time::Duration};

use bytes::Bytes;
use http_body_util::BodyExt;
use instant_acme::{Account, AccountCredentials, BodyWrapper, BytesResponse, HttpClient, NewAccount};

use super::{sealed::Keyring, AcmeError};
use crate::{
    config::{model::Acme, transport::Transport},
    control::store::{keys::Keys, Op, Store},
    data::upstream::Upstream,
};

/// instant-acme's HTTP client: Pylon's upstream client with the CA's trust roots.
struct Http(Upstream);

impl HttpClient for Http {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let req = req.map(|body| body.map_err(|never| match never {}).boxed_unsync());
        let sent = self.0.client.request(req);
        Box::pin(async move {
            match tokio::time::timeout(Duration::from_secs(30), sent).await {
                Ok(Ok(response)) => Ok(BytesResponse::from(response)),
                Ok(Err(err)) => Err(instant_acme::Error::Other(crate::data::upstream::error_chain(&err).into())),
                Err(_) => Err(instant_acme::Error::Other("the ACME server did not answer within 30s".into())),
            }
        })
    }
}

/// A short, key-safe name for a CA: its directory URL's host and port.
pub fn ca_id(directory: &str) -> String {
    let authority = directory.parse::<http::Uri>().ok().and_then(|u| u.authority().map(|a| a.to_string()));
    authority.unwrap_or_else(|| directory.to_string()).replace(['/', ' '], "_")
}

/// The client for the CA: the system's roots plus `acme.caCertificates` (read once).
fn client(acme: &Acme) -> Result<Upstream, AcmeError> {
    let transport = Transport { root_cas: acme.ca_certificates.clone(), ..Transport::default() };
    Upstream::new(&transport).map_err(|e| AcmeError::Setup(e.to_string()))
}

/// The cluster's account for `acme.caServer`, created once.
pub async fn account(
    store: &Store,
    keys: &Keys,
    acme: &Acme,
    keyring: &Keyring,
    holder: &str,
) -> Result<Account, AcmeError> {
    let key = keys.acme_account(&ca_id(&acme.ca_server));
    let client = client(acme)?;
    if let Some(account) = stored(store, &key, acme, keyring, &client).await? {
        return Ok(account);
    }
    let lease = store.lease(acme.lease_ttl).await?;
    let guard = store.lock(&keys.acme_lock(&format!("account/{}", ca_id(&acme.ca_server))), holder, &lease).await?;
    if let Some(account) = stored(store, &key, acme, keyring, &client).await? {
        guard.release().await?;
        return Ok(account);
    }
    let contact = format!("mailto:{}", acme.email);
    let contacts: Vec<&str> = if acme.email.is_empty() { vec![] } else { vec![contact.as_str()] };
    let new = NewAccount { contact: &contacts, terms_of_service_agreed: true, only_return_existing: false };
    let eab = acme.eab.as_ref().map(|(kid, hmac)| instant_acme::ExternalAccountKey::new(kid.clone(), hmac));
    let (account, credentials) = patiently!(
        Account::builder_with_http(Box::new(Http(client.clone())))
            .create(&new, acme.ca_server.clone(), eab.as_ref())
            .await
    )
    .map_err(|e| AcmeError::from_acme(&acme.ca_server, e))?;
    let json = serde_json::to_string(&credentials).map_err(|e| AcmeError::Setup(e.to_string()))?;
    let written = guard.fenced(vec![Op::put(key.clone(), keyring.seal(&key, &json))]).await?;
    if !written.succeeded {
        return Err(AcmeError::LockLost(key));
    }
    guard.release().await?;
    tracing::info!(ca = %acme.ca_server, key = %key, "ACME account created and stored");
    Ok(account)
}

async fn stored(
    store: &Store,
    key: &str,
    acme: &Acme,
    keyring: &Keyring,
    client: &Upstream,
) -> Result<Option<Account>, AcmeError> {
    let Some(kv) = store.get(key).await? else { return Ok(None) };
    let text = String::from_utf8_lossy(&kv.value);
    let json =
        keyring.open(key, &text).map_err(|e| AcmeError::Stored { key: key.to_string(), reason: e.to_string() })?;
    let credentials: AccountCredentials = serde_json::from_str(&json)
        .map_err(|e| AcmeError::Stored { key: key.to_string(), reason: format!("not account credentials: {e}") })?;
    let account = Account::builder_with_http(Box::new(Http(client.clone())))
        .from_credentials(credentials)
        .await
        .map_err(|e| AcmeError::from_acme(&acme.ca_server, e))?;
    Ok(Some(account))
}
