//! Stream replies decoded entry by entry, from raw bytes.
//!
//! Anyone who can write to the stream can write any bytes: a field name that is not UTF-8, a
//! binary envelope, an entry with no envelope at all. The redis crate's typed stream replies
//! decode a whole `XREADGROUP` or `XAUTOCLAIM` reply at once, so one such entry failed the whole
//! reply, and with it every good entry beside it, for ever (issue 14, defect 1). Here a reply
//! is read as a [`redis::Value`] and each entry is decoded on its own: an entry whose bytes are
//! not an envelope becomes a [`RawEntry`] that the consumer dead-letters with its bytes intact,
//! and its neighbours go on.

use redis::Value;

use super::redis_streams::ENVELOPE_FIELD;

/// One stream entry as Redis sent it: its id and its fields, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawEntry {
    /// The entry id (`1700000000000-0`).
    pub(crate) id: String,
    /// The fields in order, as bytes (names and values).
    pub(crate) fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl RawEntry {
    /// The value of the field `name`, if the entry has it.
    pub(crate) fn field(&self, name: &[u8]) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(n, _)| n.as_slice() == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The envelope's JSON text, or why the entry holds none: the one field the producer
    /// writes, `envelope`, as UTF-8. Any field name that is not UTF-8 makes the entry foreign.
    pub(crate) fn envelope_text(&self) -> Result<&str, String> {
        if let Some((name, _)) = self
            .fields
            .iter()
            .find(|(n, _)| std::str::from_utf8(n).is_err())
        {
            return Err(format!(
                "a field name is not UTF-8 ({} bytes); not written by a producer",
                name.len()
            ));
        }
        let raw = self
            .field(ENVELOPE_FIELD.as_bytes())
            .ok_or_else(|| "no envelope field".to_owned())?;
        std::str::from_utf8(raw).map_err(|e| {
            format!(
                "the envelope is not UTF-8 ({} bytes; invalid at byte {})",
                raw.len(),
                e.valid_up_to()
            )
        })
    }
}

/// Text of a bulk or simple string.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// Bytes of a bulk or simple string.
fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.clone().into_bytes()),
        _ => None,
    }
}

/// The elements of an array (RESP2) or set.
fn items(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) | Value::Set(a) => a,
        _ => &[],
    }
}

/// What one entry of a reply decoded to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// An entry with an id (its fields may still hold no envelope).
    Entry(RawEntry),
    /// Something that is not an entry at all (no id can be read): it cannot be acknowledged or
    /// dead-lettered, only reported.
    Unreadable(String),
}

/// One `[id, [field, value, ...]]` element. An entry deleted from the stream while pending has
/// no fields (`nil`): it decodes with none.
fn entry(v: &Value) -> Decoded {
    let parts = items(v);
    let Some(id) = parts.first().and_then(text) else {
        return Decoded::Unreadable(format!("an entry without a readable id: {v:?}"));
    };
    let flat = parts.get(1).map(items).unwrap_or(&[]);
    let mut fields = Vec::with_capacity(flat.len() / 2);
    for pair in flat.chunks(2) {
        match (pair.first().and_then(bytes), pair.get(1).and_then(bytes)) {
            (Some(n), Some(v)) => fields.push((n, v)),
            // An odd or non-string element: kept as an empty-named field so the entry is
            // dead-lettered as foreign, not silently cut.
            (n, v) => fields.push((n.unwrap_or_else(|| b"\xff".to_vec()), v.unwrap_or_default())),
        }
    }
    Decoded::Entry(RawEntry { id, fields })
}

/// The entries of an `XREADGROUP ... STREAMS key >` reply (`nil` when the block timed out).
pub(crate) fn read_reply(v: &Value) -> Vec<Decoded> {
    let streams: Vec<&Value> = match v {
        Value::Nil => return Vec::new(),
        // RESP3: a map of stream key to entries.
        Value::Map(m) => m.iter().map(|(_, entries)| entries).collect(),
        // RESP2: [[key, entries], ...].
        other => items(other)
            .iter()
            .filter_map(|s| items(s).get(1))
            .collect(),
    };
    streams
        .into_iter()
        .flat_map(|entries| items(entries).iter().map(entry))
        .collect()
}

/// The entries a bounded read script returned (a plain array of entries).
pub(crate) fn bounded_reply(v: &Value) -> Vec<Decoded> {
    items(v).iter().map(entry).collect()
}

/// An `XAUTOCLAIM` reply: the cursor to go on from, the claimed entries, and the ids of
/// entries that were pending but no longer exist (Redis 7 removes them from the pending list).
pub(crate) fn autoclaim_reply(v: &Value) -> (Option<String>, Vec<Decoded>, Vec<String>) {
    let parts = items(v);
    let cursor = parts.first().and_then(text);
    let claimed = parts
        .get(1)
        .map(|e| items(e).iter().map(entry).collect())
        .unwrap_or_default();
    let deleted = parts
        .get(2)
        .map(|d| items(d).iter().filter_map(text).collect())
        .unwrap_or_default();
    (cursor, claimed, deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(b: &[u8]) -> Value {
        Value::BulkString(b.to_vec())
    }

    fn raw(id: &str, fields: &[(&[u8], &[u8])]) -> Value {
        let mut flat = Vec::new();
        for (n, v) in fields {
            flat.push(bulk(n));
            flat.push(bulk(v));
        }
        Value::Array(vec![bulk(id.as_bytes()), Value::Array(flat)])
    }

    #[test]
    fn one_foreign_entry_does_not_fail_its_neighbours() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk(b"s"),
            Value::Array(vec![
                raw("1-0", &[(b"envelope", b"{}")]),
                raw("2-0", &[(b"\xff\xfe", b"x")]),
                raw("3-0", &[(b"envelope", b"\xc3\x28")]),
                raw("4-0", &[(b"envelope", b"{\"a\":1}")]),
            ]),
        ])]);
        let entries: Vec<RawEntry> = read_reply(&reply)
            .into_iter()
            .map(|d| match d {
                Decoded::Entry(e) => e,
                Decoded::Unreadable(why) => panic!("{why}"),
            })
            .collect();
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[0].envelope_text(), Ok("{}"));
        assert!(entries[1]
            .envelope_text()
            .unwrap_err()
            .contains("not UTF-8"));
        assert_eq!(entries[1].field(b"\xff\xfe"), Some(&b"x"[..]), "bytes kept");
        assert!(entries[2]
            .envelope_text()
            .unwrap_err()
            .contains("not UTF-8"));
        assert_eq!(entries[3].envelope_text(), Ok("{\"a\":1}"));
    }

    #[test]
    fn resp3_maps_timeouts_and_autoclaim_replies_decode() {
        let map = Value::Map(vec![(
            bulk(b"s"),
            Value::Array(vec![raw("5-0", &[(b"envelope", b"{}")])]),
        )]);
        assert_eq!(read_reply(&map).len(), 1);
        assert!(read_reply(&Value::Nil).is_empty());
        let claim = Value::Array(vec![
            bulk(b"0-0"),
            Value::Array(vec![
                raw("6-0", &[(b"envelope", b"{}")]),
                Value::Array(vec![bulk(b"7-0"), Value::Nil]),
            ]),
            Value::Array(vec![bulk(b"8-0")]),
        ]);
        let (cursor, claimed, deleted) = autoclaim_reply(&claim);
        assert_eq!(cursor.as_deref(), Some("0-0"));
        assert_eq!(claimed.len(), 2);
        assert_eq!(deleted, vec!["8-0".to_owned()]);
        let Decoded::Entry(gone) = &claimed[1] else {
            panic!("an entry")
        };
        assert_eq!(gone.envelope_text().unwrap_err(), "no envelope field");
        assert!(matches!(entry(&Value::Int(3)), Decoded::Unreadable(_)));
    }
}
