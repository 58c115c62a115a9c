//! The one fingerprint function (STYLE 10): a SHA-256 over a record's
//! canonical JSON with object keys sorted, so the same record always gives
//! the same hex string whatever the field order of the struct or of
//! serde_json's map. The engine compares fingerprints to spot its own echoes.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Lower-case SHA-256 hex of `value`'s canonical JSON (sorted keys, no spaces).
pub fn fingerprint_of<T: Serialize>(value: &T) -> String {
    // Serialising plain data structs cannot fail; a failure would mean a
    // non-string map key, which the model never uses: hash the error text so
    // the result is still deterministic.
    let text = match serde_json::to_value(value) {
        Ok(v) => canonical_json(&v),
        Err(e) => format!("unserialisable: {e}"),
    };
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// JSON text with every object's keys in sorted order.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_does_not_change_the_fingerprint() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":[1,2],"x":"s"}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":"s","y":[1,2]},"b":1}"#).unwrap();
        assert_eq!(fingerprint_of(&a), fingerprint_of(&b));
        assert_eq!(canonical_json(&a), r#"{"a":{"x":"s","y":[1,2]},"b":1}"#);
    }

    #[test]
    fn any_change_changes_the_fingerprint() {
        let f = fingerprint_of(&json!({"a": 1}));
        assert_eq!(f.len(), 64);
        assert_ne!(f, fingerprint_of(&json!({"a": 2})));
        assert_ne!(fingerprint_of(&json!([1, 2])), fingerprint_of(&json!([2, 1])));
    }

    #[test]
    fn known_vector() {
        // sha256("{}")
        assert_eq!(fingerprint_of(&json!({})), "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a");
    }
}
