//! A thin client for the parts of Consul's HTTP API that Pylon uses (KV, transactions, sessions),
//! on hyper-util's pooled client. It knows URLs, headers and JSON shapes, nothing of semantics.

use std::time::Duration;

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use serde::{Deserialize, Serialize};

use crate::control::store::{tls::StoreTls, KeyValue, LeaseId, StoreError};

/// How long an ordinary request may take before the agent is reported unreachable.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One answer: the status, `X-Consul-Index` (0 when absent) and the body.
pub struct Answer {
    pub status: StatusCode,
    pub index: u64,
    pub body: Bytes,
}

#[derive(Clone)]
pub struct Api {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// `http://host:port`, without a trailing slash.
    base: String,
    token: Option<String>,
}

/// A KV entry as Consul's JSON has it.
#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Entry {
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub create_index: u64,
    #[serde(default)]
    pub modify_index: u64,
    #[serde(default)]
    pub session: Option<String>,
}

impl Entry {
    /// The entry as a key-value; an error (naming the key) when its value is not base64.
    pub fn into_kv(self) -> Result<KeyValue, String> {
        let value = match self.value.as_deref() {
            Some(v) => B64.decode(v).map_err(|e| format!("the value of {:?} is not base64: {e}", self.key))?,
            None => Vec::new(),
        };
        Ok(KeyValue {
            key: self.key,
            value,
            create_revision: self.create_index,
            mod_revision: self.modify_index,
            lease: self.session.filter(|s| !s.is_empty()).map(LeaseId),
        })
    }
}

/// One operation of `/v1/txn`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TxnKv {
    pub verb: &'static str,
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

impl TxnKv {
    pub fn new(verb: &'static str, key: &str) -> TxnKv {
        TxnKv { verb, key: key.to_string(), value: None, index: None, session: None }
    }
    pub fn with_value(mut self, value: &[u8]) -> TxnKv {
        self.value = Some(B64.encode(value));
        self
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TxnAnswer {
    #[serde(default)]
    pub results: Option<Vec<TxnResultEntry>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TxnResultEntry {
    #[serde(rename = "KV")]
    pub kv: Option<Entry>,
}

impl Api {
    /// `endpoint` is `host:port`, `http://host:port` or `https://host:port`; with `tls`, a bare
    /// `host:port` is spoken to over HTTPS, and `http://` is refused (the settings say TLS).
    pub fn new(endpoint: &str, token: Option<String>, tls: Option<&StoreTls>) -> Result<Api, StoreError> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base = if endpoint.contains("://") { endpoint.to_string() } else { format!("{scheme}://{endpoint}") };
        if tls.is_some() && base.starts_with("http://") {
            return Err(StoreError::Tls { detail: format!("Consul endpoint {base} is plain HTTP while tls is set") });
        }
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(REQUEST_TIMEOUT));
        http.set_nodelay(true);
        http.enforce_http(false);
        let config = match tls {
            Some(tls) => tls.client_config()?,
            None => StoreTls::default().client_config()?,
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        Ok(Api { client, base: base.trim_end_matches('/').to_string(), token })
    }

    pub fn endpoint(&self) -> &str {
        &self.base
    }

    /// Sends one request; `timeout` bounds the whole exchange, body included.
    pub async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Answer, StoreError> {
        let unreachable =
            |detail: String| StoreError::Unreachable { backend: "Consul", endpoint: self.base.clone(), detail };
        let mut request = Request::builder().method(method).uri(format!("{}{}", self.base, path_and_query));
        if let Some(token) = &self.token {
            request = request.header("X-Consul-Token", token);
        }
        let request = request.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(|e| {
            StoreError::Rejected { backend: "Consul", request: path_and_query.to_string(), detail: e.to_string() }
        })?;
        let exchange = async {
            let response =
                self.client.request(request).await.map_err(|e| unreachable(crate::data::upstream::error_chain(&e)))?;
            let status = response.status();
            let index = response
                .headers()
                .get("X-Consul-Index")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let body = response.into_body().collect().await.map_err(|e| unreachable(e.to_string()))?.to_bytes();
            Ok(Answer { status, index, body })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer within {timeout:?}")))?
    }

    /// Like [`Api::call`] with the ordinary timeout, turning 5xx and 403 answers into errors.
    pub async fn request(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, StoreError> {
        let answer = self.call(method.clone(), path_and_query, body, REQUEST_TIMEOUT).await?;
        check(&format!("{method} {path_and_query}"), answer)
    }
}

/// 5xx, 400 and 403 are failures whose body Consul fills with a readable reason; `request` is
/// the method and path that got `answer`.
pub fn check(request: &str, answer: Answer) -> Result<Answer, StoreError> {
    let s = answer.status;
    if s.is_server_error() || s == StatusCode::FORBIDDEN || s == StatusCode::BAD_REQUEST {
        let text = String::from_utf8_lossy(&answer.body).trim().to_string();
        return Err(StoreError::Rejected {
            backend: "Consul",
            request: request.to_string(),
            detail: format!("{s}: {text}"),
        });
    }
    Ok(answer)
}

/// Percent-encodes a key for a URL path, keeping `/` as the separator.
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_escaped_but_slashes_kept() {
        assert_eq!(encode_key("traefik/a b?c#d%"), "traefik/a%20b%3Fc%23d%25");
    }

    #[test]
    fn entries_decode_base64_values_and_sessions() {
        let entry: Entry = serde_json::from_str(
            r#"{"Key":"k","Value":"aGVsbG8=","CreateIndex":3,"ModifyIndex":7,"LockIndex":1,"Flags":0,"Session":"s-1"}"#,
        )
        .unwrap();
        let kv = entry.into_kv().unwrap();
        assert_eq!((kv.value.as_slice(), kv.create_revision, kv.mod_revision), (&b"hello"[..], 3, 7));
        assert_eq!(kv.lease, Some(LeaseId("s-1".into())));
        let bad: Entry = serde_json::from_str(r#"{"Key":"k","Value":"not base64!"}"#).unwrap();
        assert!(bad.into_kv().unwrap_err().contains("\"k\""), "a bad value names its key");
    }
}
