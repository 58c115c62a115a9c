//! Wire-format helpers: Outlook-style opaque ids and change keys, Graph's
//! timestamp spellings, and path-segment encoding. One place, so that every
//! resource looks the same on the wire.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use rand::RngCore;

fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut b);
    b
}

/// An Outlook item id: long, opaque, case-sensitive, URL-safe base64 with `=`.
pub(crate) fn item_id() -> String {
    format!("AAMkAG{}AAA=", URL_SAFE_NO_PAD.encode(random_bytes(48)))
}

/// A folder id, shaped like an item id but shorter.
pub(crate) fn folder_id() -> String {
    format!("AAMkAG{}AAA=", URL_SAFE_NO_PAD.encode(random_bytes(30)))
}

/// A change key (standard base64, may contain `/` and `+`), new on every write.
pub(crate) fn change_key() -> String {
    STANDARD.encode(random_bytes(30))
}

/// An opaque delta/skip token.
pub(crate) fn opaque_token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes(36))
}

pub(crate) fn etag(change_key: &str) -> String {
    format!("W/\"{change_key}\"")
}

/// `2017-09-04T15:54:01Z`: item timestamps (createdDateTime, lastModifiedDateTime).
pub(crate) fn ts_seconds(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `2022-01-01T21:42:18.2257768Z`: subscription expiry, 7 fractional digits.
pub(crate) fn ts_7(t: DateTime<Utc>) -> String {
    format!("{}{:07}Z", t.format("%Y-%m-%dT%H:%M:%S."), t.timestamp_subsec_nanos() / 100)
}

/// `2021-11-16T03:07:35`: innerError.date.
pub(crate) fn ts_inner(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// Characters escaped in a query value (the validation token has spaces and colons).
const QUERY_VALUE: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

pub(crate) fn enc_query(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, QUERY_VALUE).to_string()
}

/// A random fractional `Retry-After` value such as `2.128`.
pub(crate) fn fractional_seconds(min: f64, max: f64) -> String {
    use rand::Rng;
    format!("{:.3}", rand::thread_rng().gen_range(min..max))
}

/// The annotations an Outlook item's JSON starts with: `@odata.context`
/// (when answering for a single item), `@odata.type` (in collections that
/// mix types, e.g. delta), the etag of its change key, and its id.
pub(crate) fn item_head(
    context: Option<&str>,
    odata_type: Option<&str>,
    change_key: &str,
    id: &str,
) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    if let Some(c) = context {
        m.insert("@odata.context".into(), c.into());
    }
    if let Some(t) = odata_type {
        m.insert("@odata.type".into(), t.into());
    }
    m.insert("@odata.etag".into(), etag(change_key).into());
    m.insert("id".into(), id.into());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seven_digit_timestamps_keep_hundreds_of_nanoseconds() {
        let t = DateTime::parse_from_rfc3339("2022-01-01T21:42:18.2257768Z").unwrap().with_timezone(&Utc);
        assert_eq!(ts_7(t), "2022-01-01T21:42:18.2257768Z");
    }

    #[test]
    fn validation_token_is_percent_encoded_without_plus() {
        assert_eq!(enc_query("Validation: a b"), "Validation%3A%20a%20b");
    }
}
