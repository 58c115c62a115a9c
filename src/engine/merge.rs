//! The merge core: pure, no I/O. Given the base (the canonical record as
//! last synchronised) and the current canonical record on each side, it
//! decides field by field what the synchronised record becomes and which
//! fields must be written to which side:
//!
//! - changed on one side only → that value, if it may flow to the other
//!   side (direction policy and field ownership); otherwise the sides stay
//!   apart and the base keeps the old value;
//! - changed on both sides to the same value → nothing to write;
//! - changed on both sides differently → a conflict: the side that alone
//!   may send wins, else the newer side; recorded for the journal.
//!
//! Records are JSON objects keyed by canonical field name; an absent key
//! and `null` are the same value.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::model::Direction;

/// One side of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Hellohq,
    Exchange,
}

/// Which way a field may ever flow (SPEC: e.g. an appointment's subject
/// only from helloHQ), before the per-tenant/per-user direction applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Both,
    /// helloHQ → Exchange only (helloHQ owns it).
    FromHellohq,
    /// Exchange → helloHQ only.
    FromExchange,
}

/// A field and the way it may flow.
#[derive(Debug, Clone, Copy)]
pub struct FieldRule {
    pub name: &'static str,
    pub flow: Flow,
}

impl FieldRule {
    pub const fn both(name: &'static str) -> FieldRule {
        FieldRule { name, flow: Flow::Both }
    }
}

/// A field changed differently on both sides.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conflict {
    pub field: String,
    pub hellohq: Value,
    pub exchange: Value,
    pub winner: Side,
}

/// A change that may not flow (direction or ownership) and was left where it is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Blocked {
    pub field: String,
    pub from: Side,
}

/// What a merge decided.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Merge {
    /// The new base: stored on the link once the writes below succeeded.
    pub merged: Map<String, Value>,
    /// Fields to write into Exchange (their values are in `merged`).
    pub to_exchange: Vec<String>,
    /// Fields to write into helloHQ.
    pub to_hellohq: Vec<String>,
    pub conflicts: Vec<Conflict>,
    pub blocked: Vec<Blocked>,
}

impl Merge {
    pub fn is_noop(&self) -> bool {
        self.to_exchange.is_empty() && self.to_hellohq.is_empty()
    }
}

fn get<'a>(m: &'a Map<String, Value>, f: &str) -> &'a Value {
    m.get(f).unwrap_or(&Value::Null)
}

/// Merges field by field. `hq` or `ex` is `None` when that side was not
/// read (treated as unchanged since the base). With no base (a first
/// pairing) every difference counts as a change on both sides, so fields
/// empty on one side are filled from the other and real differences go
/// to `newer`.
pub fn merge(
    base: Option<&Map<String, Value>>,
    hq: Option<&Map<String, Value>>,
    ex: Option<&Map<String, Value>>,
    rules: &[FieldRule],
    direction: Direction,
    newer: Side,
) -> Merge {
    let empty = Map::new();
    let base_map = base.unwrap_or(&empty);
    let to_ex_allowed = matches!(direction, Direction::Both | Direction::ToExchange);
    let to_hq_allowed = matches!(direction, Direction::Both | Direction::ToHellohq);
    let mut out = Merge::default();
    for rule in rules {
        let f = rule.name;
        let b = get(base_map, f);
        let h = hq.map(|m| get(m, f)).unwrap_or(b);
        let e = ex.map(|m| get(m, f)).unwrap_or(b);
        let (hc, ec) = if base.is_none() { (!h.is_null(), !e.is_null()) } else { (h != b, e != b) };
        let can_to_ex = to_ex_allowed && rule.flow != Flow::FromExchange;
        let can_to_hq = to_hq_allowed && rule.flow != Flow::FromHellohq;
        let value = match (hc, ec) {
            (false, false) => b.clone(),
            (true, false) => {
                if can_to_ex && h != e {
                    out.to_exchange.push(f.to_string());
                    h.clone()
                } else if h == e {
                    h.clone()
                } else {
                    out.blocked.push(Blocked { field: f.to_string(), from: Side::Hellohq });
                    b.clone()
                }
            }
            (false, true) => {
                if can_to_hq && h != e {
                    out.to_hellohq.push(f.to_string());
                    e.clone()
                } else if h == e {
                    e.clone()
                } else {
                    out.blocked.push(Blocked { field: f.to_string(), from: Side::Exchange });
                    b.clone()
                }
            }
            (true, true) if h == e => h.clone(),
            (true, true) => {
                let winner = match (can_to_ex, can_to_hq) {
                    (true, false) => Some(Side::Hellohq),
                    (false, true) => Some(Side::Exchange),
                    (true, true) => Some(newer),
                    (false, false) => None,
                };
                match winner {
                    Some(w) => {
                        out.conflicts.push(Conflict {
                            field: f.to_string(),
                            hellohq: h.clone(),
                            exchange: e.clone(),
                            winner: w,
                        });
                        if w == Side::Hellohq {
                            out.to_exchange.push(f.to_string());
                            h.clone()
                        } else {
                            out.to_hellohq.push(f.to_string());
                            e.clone()
                        }
                    }
                    None => {
                        out.blocked.push(Blocked { field: f.to_string(), from: newer });
                        b.clone()
                    }
                }
            }
        };
        if !value.is_null() {
            out.merged.insert(f.to_string(), value);
        }
    }
    out
}

/// Applies the writes of a merge to a side's record (what that side holds
/// once the writes succeed).
pub fn apply(side: &Map<String, Value>, m: &Merge, fields: &[String]) -> Map<String, Value> {
    let mut out = side.clone();
    for f in fields {
        match m.merged.get(f) {
            Some(v) => {
                out.insert(f.clone(), v.clone());
            }
            None => {
                out.remove(f);
            }
        }
    }
    out.retain(|_, v| !v.is_null());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const RULES: [FieldRule; 3] =
        [FieldRule::both("a"), FieldRule { name: "owned", flow: Flow::FromHellohq }, FieldRule::both("c")];

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn table() {
        struct Case {
            name: &'static str,
            base: Value,
            hq: Value,
            ex: Value,
            dir: Direction,
            to_ex: &'static [&'static str],
            to_hq: &'static [&'static str],
            conflicts: usize,
        }
        let cases = [
            Case {
                name: "helloHQ edit flows out",
                base: json!({"a": 1}),
                hq: json!({"a": 2}),
                ex: json!({"a": 1}),
                dir: Direction::Both,
                to_ex: &["a"],
                to_hq: &[],
                conflicts: 0,
            },
            Case {
                name: "Exchange edit flows in",
                base: json!({"a": 1}),
                hq: json!({"a": 1}),
                ex: json!({"a": 3}),
                dir: Direction::Both,
                to_ex: &[],
                to_hq: &["a"],
                conflicts: 0,
            },
            Case {
                name: "echo: both equal, nothing to do",
                base: json!({"a": 1}),
                hq: json!({"a": 2}),
                ex: json!({"a": 2}),
                dir: Direction::Both,
                to_ex: &[],
                to_hq: &[],
                conflicts: 0,
            },
            Case {
                name: "to_exchange blocks an Exchange edit",
                base: json!({"a": 1}),
                hq: json!({"a": 1}),
                ex: json!({"a": 3}),
                dir: Direction::ToExchange,
                to_ex: &[],
                to_hq: &[],
                conflicts: 0,
            },
            Case {
                name: "owned field never flows from Exchange",
                base: json!({"owned": "x"}),
                hq: json!({"owned": "x"}),
                ex: json!({"owned": "y"}),
                dir: Direction::Both,
                to_ex: &[],
                to_hq: &[],
                conflicts: 0,
            },
            Case {
                name: "both changed: newer (Exchange) wins",
                base: json!({"a": 1}),
                hq: json!({"a": 2}),
                ex: json!({"a": 3}),
                dir: Direction::Both,
                to_ex: &[],
                to_hq: &["a"],
                conflicts: 1,
            },
            Case {
                name: "both changed an owned field: the owner wins",
                base: json!({"owned": 1}),
                hq: json!({"owned": 2}),
                ex: json!({"owned": 3}),
                dir: Direction::Both,
                to_ex: &["owned"],
                to_hq: &[],
                conflicts: 1,
            },
            Case {
                name: "off writes nothing",
                base: json!({"a": 1, "c": 1}),
                hq: json!({"a": 2, "c": 1}),
                ex: json!({"a": 1, "c": 5}),
                dir: Direction::Off,
                to_ex: &[],
                to_hq: &[],
                conflicts: 0,
            },
        ];
        for c in cases {
            let m = merge(Some(&obj(c.base)), Some(&obj(c.hq)), Some(&obj(c.ex)), &RULES, c.dir, Side::Exchange);
            assert_eq!(m.to_exchange, c.to_ex, "{}", c.name);
            assert_eq!(m.to_hellohq, c.to_hq, "{}", c.name);
            assert_eq!(m.conflicts.len(), c.conflicts, "{}", c.name);
        }
    }

    #[test]
    fn first_pairing_fills_gaps_from_either_side() {
        let m = merge(
            None,
            Some(&obj(json!({"a": 1}))),
            Some(&obj(json!({"c": 2}))),
            &RULES,
            Direction::Both,
            Side::Hellohq,
        );
        assert_eq!(m.to_exchange, ["a"]);
        assert_eq!(m.to_hellohq, ["c"]);
        assert!(m.conflicts.is_empty());
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![Just(Value::Null), (0..4i64).prop_map(Value::from)]
    }

    fn record() -> impl Strategy<Value = Map<String, Value>> {
        (value(), value(), value()).prop_map(|(a, o, c)| {
            let mut m = Map::new();
            for (k, v) in [("a", a), ("owned", o), ("c", c)] {
                if !v.is_null() {
                    m.insert(k.into(), v);
                }
            }
            m
        })
    }

    fn direction() -> impl Strategy<Value = Direction> {
        prop_oneof![
            Just(Direction::Both),
            Just(Direction::ToExchange),
            Just(Direction::ToHellohq),
            Just(Direction::Off)
        ]
    }

    /// One sync step of a link: merge, apply the writes, store the base.
    fn step(
        base: &mut Option<Map<String, Value>>,
        hq: &mut Map<String, Value>,
        ex: &mut Map<String, Value>,
        dir: Direction,
        newer: Side,
    ) -> Merge {
        let m = merge(base.as_ref(), Some(hq), Some(ex), &RULES, dir, newer);
        *hq = apply(hq, &m, &m.to_hellohq);
        *ex = apply(ex, &m, &m.to_exchange);
        *base = Some(m.merged.clone());
        m
    }

    proptest! {
        /// Random interleavings of edits on both sides, each followed by a
        /// sync at random moments, end in one state on both sides (with
        /// every field allowed to flow somewhere), and a second sync writes
        /// nothing (no echo).
        #[test]
        fn interleaved_edits_converge(
            start in record(),
            edits in proptest::collection::vec((any::<bool>(), record(), any::<bool>()), 1..12),
        ) {
            let (mut hq, mut ex) = (start.clone(), Map::new());
            let mut base = None;
            for (on_hq, change, sync_now) in edits {
                let target = if on_hq { &mut hq } else { &mut ex };
                for (k, v) in change {
                    // The owned field is edited on both sides too: Exchange edits must not win.
                    target.insert(k, v);
                }
                if sync_now {
                    step(&mut base, &mut hq, &mut ex, Direction::Both, if on_hq { Side::Hellohq } else { Side::Exchange });
                }
            }
            step(&mut base, &mut hq, &mut ex, Direction::Both, Side::Exchange);
            // Exchange-only edits of the owned field stay apart by design;
            // compare the freely flowing fields.
            for f in ["a", "c"] {
                prop_assert_eq!(hq.get(f), ex.get(f), "field {} diverged", f);
            }
            let again = step(&mut base, &mut hq, &mut ex, Direction::Both, Side::Exchange);
            prop_assert!(again.is_noop(), "a second sync wrote {:?}", again);
        }

        /// Whatever the records, no field is written against its direction
        /// or its ownership.
        #[test]
        fn every_field_obeys_its_direction(
            base in proptest::option::of(record()), hq in record(), ex in record(), dir in direction(), hq_newer in any::<bool>(),
        ) {
            let newer = if hq_newer { Side::Hellohq } else { Side::Exchange };
            let m = merge(base.as_ref(), Some(&hq), Some(&ex), &RULES, dir, newer);
            if matches!(dir, Direction::Off | Direction::ToHellohq) {
                prop_assert!(m.to_exchange.is_empty());
            }
            if matches!(dir, Direction::Off | Direction::ToExchange) {
                prop_assert!(m.to_hellohq.is_empty());
            }
            prop_assert!(!m.to_hellohq.iter().any(|f| f == "owned"), "owned field written into helloHQ");
            // A side is only written where it differs from the merged value.
            for f in &m.to_exchange {
                prop_assert_ne!(ex.get(f), m.merged.get(f));
            }
            for f in &m.to_hellohq {
                prop_assert_ne!(hq.get(f), m.merged.get(f));
            }
        }
    }
}
