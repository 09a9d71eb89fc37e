//! One watch over several parts of a listed prefix: each part is watched on its own (on
//! Consul, a blocking query each, so that a write elsewhere under the prefix wakes none of
//! them) and their events arrive through one [`Watch`]. It ends when any part ends, and is
//! live once every part is.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use tokio_util::sync::CancellationToken;

use super::{Listing, Result, Store, Watch};

impl Store {
    /// Events since `listed` for the keys under each of `prefixes`, which `listed` covers.
    pub async fn watch_parts(&self, prefixes: &[String], listed: &Listing) -> Result<Watch> {
        let mut parts = Vec::with_capacity(prefixes.len());
        for prefix in prefixes {
            parts.push(self.backend.watch_listed(prefix, listed).await?);
        }
        Ok(merge(parts))
    }
}

/// The events of every watch in `parts`, as they come.
fn merge(parts: Vec<Watch>) -> Watch {
    let (tx, live, merged) = Watch::channel_reporting_live();
    let (done, waiting) = (CancellationToken::new(), Arc::new(AtomicUsize::new(parts.len())));
    let live = Arc::new(live);
    for mut part in parts {
        let (tx, done, waiting, live) = (tx.clone(), done.clone(), waiting.clone(), live.clone());
        tokio::spawn(async move {
            let forward = async {
                part.live().await;
                // `live` also resolves when the part's backend went away before going live.
                if part.is_live() && waiting.fetch_sub(1, Ordering::AcqRel) == 1 {
                    live.send_replace(true);
                }
                while let Some(event) = part.next().await {
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
            };
            tokio::select! {
                _ = forward => {}
                _ = done.cancelled() => {}
                _ = tx.closed() => {}
            }
            // One part ended (its store closed) or the consumer left: every part stops, and
            // the merged watch ends once all senders are gone.
            done.cancel();
        });
    }
    merged
}
