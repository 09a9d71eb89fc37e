//! How the embedded store lays out bytes: a key's record (revisions, lease, value) and an entry
//! of the event log (a put or a delete of one key).

use crate::control::store::{KeyValue, LeaseId, WatchEvent};

/// A stored key's metadata and value: create, mod and lease as little-endian u64, then the value.
pub(super) struct Record<'a> {
    pub create: u64,
    pub modified: u64,
    pub lease: u64,
    pub value: &'a [u8],
}

impl<'a> Record<'a> {
    /// `None` when the bytes are too short to be a record (a damaged file).
    pub fn decode(bytes: &'a [u8]) -> Option<Record<'a>> {
        let n = |i: usize| Some(u64::from_le_bytes(bytes.get(i * 8..i * 8 + 8)?.try_into().ok()?));
        Some(Record { create: n(0)?, modified: n(1)?, lease: n(2)?, value: bytes.get(24..)? })
    }
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.value.len());
        for n in [self.create, self.modified, self.lease] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(self.value);
        out
    }
    pub fn to_kv(&self, key: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: self.value.to_vec(),
            create_revision: self.create,
            mod_revision: self.modified,
            lease: (self.lease != 0).then(|| LeaseId(self.lease.to_string())),
        }
    }
}

/// A log entry: `0` + a record (a put) or `1` (a delete), then the key's length and the key.
pub(super) fn encode_event(event: &WatchEvent) -> Vec<u8> {
    let (tag, record, key) = match event {
        WatchEvent::Put(kv) => {
            let lease = kv.lease.as_ref().map_or(0, |l| l.0.parse().unwrap_or(0));
            let record = Record { create: kv.create_revision, modified: kv.mod_revision, lease, value: &kv.value };
            (0u8, record.encode(), &kv.key)
        }
        WatchEvent::Delete { key, .. } => (1u8, Vec::new(), key),
        WatchEvent::Compacted { .. } => unreachable!("compaction is never logged"),
    };
    let mut out = vec![tag];
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(&record);
    out
}

/// `None` when the bytes are not a log entry (a damaged file).
pub(super) fn decode_event(revision: u64, bytes: &[u8]) -> Option<WatchEvent> {
    let len = u32::from_le_bytes(bytes.get(1..5)?.try_into().ok()?) as usize;
    let key = String::from_utf8_lossy(bytes.get(5..5 + len)?).into_owned();
    Some(match bytes[0] {
        0 => WatchEvent::Put(Record::decode(bytes.get(5 + len..)?)?.to_kv(&key)),
        _ => WatchEvent::Delete { key, revision },
    })
}

pub(super) fn event_key(event: &WatchEvent) -> &str {
    match event {
        WatchEvent::Put(kv) => &kv.key,
        WatchEvent::Delete { key, .. } => key,
        WatchEvent::Compacted { .. } => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_entries_round_trip() {
        let kv = KeyValue {
            key: "a/b".into(),
            value: b"v".to_vec(),
            create_revision: 3,
            mod_revision: 9,
            lease: Some(LeaseId("7".into())),
        };
        assert_eq!(decode_event(9, &encode_event(&WatchEvent::Put(kv.clone()))), Some(WatchEvent::Put(kv)));
        let delete = WatchEvent::Delete { key: "a/c".into(), revision: 10 };
        assert_eq!(decode_event(10, &encode_event(&delete)), Some(delete));
    }

    #[test]
    fn damaged_bytes_are_refused_not_a_panic() {
        assert!(Record::decode(&[0; 23]).is_none());
        assert!(decode_event(1, &[0, 9, 0, 0, 0, b'a']).is_none());
        assert!(decode_event(1, &[]).is_none());
    }
}
