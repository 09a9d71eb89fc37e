//! How Pylon talks to clients and to upstream servers: timeouts, limits, the upstream pool and
//! the CAs it trusts. Read from Traefik 1.x's top-level `[respondingTimeouts]`,
//! `[forwardingTimeouts]`, `insecureSkipVerify`, `maxIdleConnsPerHost`, `rootCAs`, and Pylon's
//! `[limits]`.

use std::time::Duration;

use super::{file::RawConfig, Checker};

#[derive(Clone, Debug, PartialEq)]
pub struct Transport {
    /// How long a client may take to send a request's head (slowloris defence).
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may sit idle between requests.
    pub idle_timeout: Duration,
    /// How long a write to a client may make no progress (the client reads nothing) before the
    /// connection is closed; `None` waits as long as `idle_timeout` allows.
    pub write_stall_timeout: Option<Duration>,
    /// The largest request head accepted; larger ones get 431 (HTTP/1.1) or a stream reset (h2).
    pub max_header_bytes: usize,
    /// Connections beyond this wait in the kernel's accept queue; `None` is unbounded.
    pub max_connections: Option<usize>,
    /// How long connecting to an upstream server may take before it counts as down.
    pub dial_timeout: Duration,
    /// How long an upstream server may take to answer with its head; `None` waits forever.
    pub response_header_timeout: Option<Duration>,
    pub insecure_skip_verify: bool,
    pub max_idle_per_host: usize,
    /// PEM file paths or PEM contents of CAs trusted for upstream HTTPS.
    pub root_cas: Vec<String>,
}

impl Default for Transport {
    fn default() -> Self {
        Transport {
            header_read_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(180),
            write_stall_timeout: None,
            max_header_bytes: 64 * 1024,
            max_connections: None,
            dial_timeout: Duration::from_secs(30),
            response_header_timeout: None,
            insecure_skip_verify: false,
            max_idle_per_host: 200,
            root_cas: Vec::new(),
        }
    }
}

/// hyper refuses read buffers under 8 KiB.
const MIN_HEADER_BYTES: u64 = 8 * 1024;

pub(super) fn build(raw: &RawConfig, c: &mut Checker) -> Transport {
    let d = Transport::default();
    let responding = raw.respondingtimeouts.as_ref();
    let forwarding = raw.forwardingtimeouts.as_ref();
    let limits = raw.limits.as_ref();
    let positive = |c: &mut Checker, path: &str, v: Option<Duration>| match v {
        Some(v) if v.is_zero() => {
            c.error(path, "must be more than 0s");
            None
        }
        v => v,
    };
    let max_header_bytes = match limits.and_then(|l| l.maxheaderbytes) {
        Some(n) if n < MIN_HEADER_BYTES => {
            c.error("limits.maxheaderbytes", format!("must be at least {MIN_HEADER_BYTES}"));
            d.max_header_bytes
        }
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        None => d.max_header_bytes,
    };
    Transport {
        header_read_timeout: positive(c, "respondingtimeouts.readtimeout", responding.and_then(|r| r.readtimeout))
            .unwrap_or(d.header_read_timeout),
        idle_timeout: positive(c, "respondingtimeouts.idletimeout", responding.and_then(|r| r.idletimeout))
            .unwrap_or(d.idle_timeout),
        // Traefik's 0 means no limit.
        write_stall_timeout: responding.and_then(|r| r.writetimeout).filter(|t| !t.is_zero()),
        max_header_bytes,
        max_connections: limits
            .and_then(|l| l.maxconnections)
            .filter(|n| *n > 0)
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        dial_timeout: positive(c, "forwardingtimeouts.dialtimeout", forwarding.and_then(|f| f.dialtimeout))
            .unwrap_or(d.dial_timeout),
        response_header_timeout: forwarding.and_then(|f| f.responseheadertimeout).filter(|t| !t.is_zero()),
        insecure_skip_verify: raw.insecureskipverify.unwrap_or(false),
        max_idle_per_host: raw.maxidleconnsperhost.map_or(d.max_idle_per_host, |n| n as usize),
        root_cas: raw.rootcas.clone().unwrap_or_default(),
    }
}
