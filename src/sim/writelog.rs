//! `/_sim/writes`: a log of item writes with the item as written, for
//! benchmarks that must tell which write carried which value (`bench e2e`
//! matches every edit to its own counterpart writes by a tag it sets).
//! Off until `POST /_sim/writes {"record": true}`; bounded (the oldest
//! entries go first). Simulator-only: neither Graph nor helloHQ has it.

use std::collections::VecDeque;

use chrono::{SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

/// Entries kept at most; older ones are dropped (and `dropped` counts them).
pub const CAPACITY: usize = 100_000;

#[derive(Debug, Default)]
pub struct WriteLog {
    recording: bool,
    next: u64,
    dropped: u64,
    entries: VecDeque<Value>,
}

/// `POST /_sim/writes` body.
#[derive(Debug, Default, Deserialize)]
pub struct Control {
    pub record: bool,
}

impl WriteLog {
    /// Starts (clearing what was recorded) or stops recording.
    pub fn set(&mut self, c: &Control) {
        if c.record {
            self.entries.clear();
            self.dropped = 0;
        }
        self.recording = c.record;
    }

    pub fn recording(&self) -> bool {
        self.recording
    }

    /// Records one item write: `kind` (`contact`, `contactPerson`, …), the
    /// mailbox it was made in (Graph) and the item after the write.
    pub fn record(&mut self, kind: &str, mailbox: Option<&str>, id: &str, item: &Value) {
        if !self.recording {
            return;
        }
        self.next += 1;
        if self.entries.len() >= CAPACITY {
            self.entries.pop_front();
            self.dropped += 1;
        }
        self.entries.push_back(json!({
            "seq": self.next,
            "at": Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
            "kind": kind,
            "mailbox": mailbox,
            "id": id,
            "item": item,
        }));
    }

    /// `GET /_sim/writes?after=N`: the entries with a `seq` above `after`, oldest first.
    pub fn page(&self, after: u64, limit: usize) -> Value {
        let writes: Vec<&Value> =
            self.entries.iter().filter(|e| e["seq"].as_u64().unwrap_or(0) > after).take(limit).collect();
        json!({"recording": self.recording, "dropped": self.dropped, "writes": writes})
    }
}

/// `after` and `limit` of `GET /_sim/writes`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PageQuery {
    pub after: u64,
    pub limit: Option<usize>,
}

impl PageQuery {
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(1000).clamp(1, 10_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_only_while_on_and_pages_by_seq() {
        let mut log = WriteLog::default();
        log.record("contact", Some("a@x"), "1", &json!({"jobTitle": "x"}));
        assert_eq!(log.page(0, 10)["writes"].as_array().unwrap().len(), 0);
        log.set(&Control { record: true });
        for i in 0..3 {
            log.record("contact", Some("a@x"), &i.to_string(), &json!({"jobTitle": i}));
        }
        let p = log.page(1, 10);
        let w = p["writes"].as_array().unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(w[0]["seq"], 2);
        assert_eq!(w[1]["item"]["jobTitle"], 2);
        assert_eq!(log.page(0, 1)["writes"].as_array().unwrap().len(), 1);
    }
}
