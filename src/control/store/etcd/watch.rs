//! etcd watches that follow one member at a time and leave it when it goes quiet. A watch asks
//! its member for progress once a second when nothing else arrived; a member that answers
//! nothing for three seconds (hung, SIGSTOPped, cut off) or has no leader (the watch is made
//! with etcd's `require_leader`) is left for the next one, and the watch resumes there after the
//! last delivered revision. HTTP/2 keepalive alone took 10–15 s to notice a hung member, and a
//! partitioned member that still answers would have kept the watch silent for good.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use etcd_client::{Client, EventType, WatchOptions};
use tokio::sync::mpsc;

use super::{to_kv, Members, Seen};
use crate::control::store::{Revision, WatchEvent};

/// Silence after which the member is asked for progress.
const PROBE_AFTER: Duration = Duration::from_secs(1);
/// Silence after which the member is given up.
const SILENT: Duration = Duration::from_secs(3);

/// Why following one member stopped.
enum Stop {
    /// The consumer is gone, or it was told to re-list: the task ends.
    Done,
    /// The member failed or went quiet: try the next one.
    Member(String),
}

/// Runs a watch of `prefix` after revision `after`, feeding `tx` until it is closed.
pub(super) async fn run(
    members: Arc<Members>,
    prefix: String,
    after: Revision,
    tx: mpsc::Sender<WatchEvent>,
    live: tokio::sync::watch::Sender<bool>,
) {
    let mut last = after;
    let mut seen = Seen { cluster: None, term: 0, revision: after };
    let mut at = members.preferred();
    let mut backoff = Duration::from_millis(100);
    let task = Task { members: &members, prefix: &prefix, tx: &tx, live: &live };
    loop {
        let endpoint = members.endpoints[at].clone();
        let heard = std::sync::atomic::AtomicBool::new(false);
        let stop = tokio::select! {
            _ = tx.closed() => return,
            stop = follow(&task, at, &mut last, &mut seen, &heard) => stop,
        };
        match stop {
            Stop::Done => return,
            Stop::Member(why) => {
                if heard.into_inner() {
                    backoff = Duration::from_millis(100);
                }
                let next = (at + 1) % members.endpoints.len();
                let to = &members.endpoints[next];
                tracing::warn!(%endpoint, "etcd watch: {why}; resuming after revision {last} on {to} in {backoff:?}");
                at = next;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// What following any member needs: where to connect, what to watch, where events go.
struct Task<'a> {
    members: &'a Members,
    prefix: &'a str,
    tx: &'a mpsc::Sender<WatchEvent>,
    /// Set once a watch is established.
    live: &'a tokio::sync::watch::Sender<bool>,
}

/// Follows the watch on member `at` until it fails, goes quiet, or the task is done.
async fn follow(
    task: &Task<'_>,
    at: usize,
    last: &mut Revision,
    seen: &mut Seen,
    heard: &std::sync::atomic::AtomicBool,
) -> Stop {
    let Task { members, prefix, tx, live } = *task;
    let endpoint = &members.endpoints[at];
    let connect = Client::connect([endpoint], Some(members.options.clone().with_require_leader(true)));
    let mut client = match tokio::time::timeout(SILENT, connect).await {
        Ok(Ok(client)) => client,
        Ok(Err(err)) => return Stop::Member(format!("cannot connect: {err}")),
        Err(_) => return Stop::Member(format!("no connection within {SILENT:?}")),
    };
    // A linearizable read through this member first: it answers only once the member has
    // caught up with the leader, so a follower that lags a little is not taken for a store
    // whose history went backwards (a restore) when its watch headers arrive.
    let caught_up = client.get("pylon-ping", Some(etcd_client::GetOptions::new().with_count_only()));
    match tokio::time::timeout(SILENT, caught_up).await {
        Ok(Ok(resp)) => {
            if let Some(header) = resp.header() {
                if !seen.same_store(header) {
                    tracing::warn!(%endpoint, "etcd was restored or replaced (its history went backwards); re-listing");
                    let _ = tx.send(WatchEvent::Compacted { revision: header.revision() as u64 }).await;
                    return Stop::Done;
                }
            }
        }
        Ok(Err(err)) => return Stop::Member(format!("cannot read: {err}")),
        Err(_) => return Stop::Member(format!("no answer to a read within {SILENT:?}")),
    }
    let options = WatchOptions::new().with_prefix().with_start_revision(*last as i64 + 1);
    let stream = match tokio::time::timeout(SILENT, client.watch(prefix, Some(options))).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return Stop::Member(format!("cannot watch: {err}")),
        Err(_) => return Stop::Member(format!("no answer to the watch within {SILENT:?}")),
    };
    live.send_replace(true);
    let (mut requests, mut responses) = stream.split();
    let mut heard_at = Instant::now();
    let mut probe = tokio::time::interval(PROBE_AFTER / 2);
    loop {
        let message = tokio::select! {
            message = responses.message() => message,
            _ = probe.tick() => {
                let quiet = heard_at.elapsed();
                if quiet >= SILENT {
                    return Stop::Member(format!("the member answered nothing for {quiet:?}"));
                }
                if quiet >= PROBE_AFTER {
                    let _ = requests.request_progress().await;
                }
                continue;
            }
        };
        let resp = match message {
            Ok(Some(resp)) => resp,
            Ok(None) => return Stop::Member("the member closed the stream".into()),
            Err(err) => return Stop::Member(format!("the stream broke: {err}")),
        };
        heard.store(true, std::sync::atomic::Ordering::Relaxed);
        members.prefer(at);
        if let Some(header) = resp.header() {
            if !seen.same_store(header) {
                tracing::warn!(%endpoint, "etcd was restored or replaced (its history went backwards); re-listing");
                let _ = tx.send(WatchEvent::Compacted { revision: header.revision() as u64 }).await;
                return Stop::Done;
            }
        }
        if resp.compact_revision() > 0 {
            let _ = tx.send(WatchEvent::Compacted { revision: resp.compact_revision() as u64 }).await;
            return Stop::Done;
        }
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            let revision = kv.mod_revision() as u64;
            let event = match event.event_type() {
                EventType::Put => WatchEvent::Put(to_kv(kv)),
                EventType::Delete => {
                    WatchEvent::Delete { key: String::from_utf8_lossy(kv.key()).into_owned(), revision }
                }
            };
            *last = revision;
            if tx.send(event).await.is_err() {
                return Stop::Done;
            }
        }
        // A slow consumer is not a quiet member.
        heard_at = Instant::now();
        if resp.canceled() {
            let reason = resp.cancel_reason();
            return Stop::Member(format!("the member cancelled the watch ({reason})"));
        }
    }
}
