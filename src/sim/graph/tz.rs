//! Time zones as Graph speaks them: `dateTimeTimeZone` values with 7
//! fractional digits, Windows zone names and IANA names on input, and a small
//! Windows↔IANA table (CLDR windowsZones.xml, European and US zones + UTC).

use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::{json, Value};

use super::error::{GResult, GraphError};

/// Windows name → IANA zone (CLDR "001" territory mapping).
const WINDOWS_IANA: &[(&str, &str)] = &[
    ("UTC", "Etc/UTC"),
    ("W. Europe Standard Time", "Europe/Berlin"),
    ("Romance Standard Time", "Europe/Paris"),
    ("Central Europe Standard Time", "Europe/Budapest"),
    ("Central European Standard Time", "Europe/Warsaw"),
    ("GMT Standard Time", "Europe/London"),
    ("Greenwich Standard Time", "Atlantic/Reykjavik"),
    ("E. Europe Standard Time", "Europe/Chisinau"),
    ("FLE Standard Time", "Europe/Kiev"),
    ("GTB Standard Time", "Europe/Bucharest"),
    ("Russian Standard Time", "Europe/Moscow"),
    ("Turkey Standard Time", "Europe/Istanbul"),
    ("Eastern Standard Time", "America/New_York"),
    ("Central Standard Time", "America/Chicago"),
    ("Mountain Standard Time", "America/Denver"),
    ("US Mountain Standard Time", "America/Phoenix"),
    ("Pacific Standard Time", "America/Los_Angeles"),
    ("Alaskan Standard Time", "America/Anchorage"),
    ("Hawaiian Standard Time", "Pacific/Honolulu"),
];

/// Further IANA zones of the same Windows zones (CLDR territory mappings).
const IANA_ALIASES: &[(&str, &str)] = &[
    ("Etc/GMT", "UTC"),
    ("UTC", "UTC"),
    ("Europe/Amsterdam", "W. Europe Standard Time"),
    ("Europe/Vienna", "W. Europe Standard Time"),
    ("Europe/Zurich", "W. Europe Standard Time"),
    ("Europe/Rome", "W. Europe Standard Time"),
    ("Europe/Stockholm", "W. Europe Standard Time"),
    ("Europe/Oslo", "W. Europe Standard Time"),
    ("Europe/Luxembourg", "W. Europe Standard Time"),
    ("Europe/Brussels", "Romance Standard Time"),
    ("Europe/Madrid", "Romance Standard Time"),
    ("Europe/Copenhagen", "Romance Standard Time"),
    ("Europe/Prague", "Central Europe Standard Time"),
    ("Europe/Belgrade", "Central Europe Standard Time"),
    ("Europe/Zagreb", "Central European Standard Time"),
    ("Europe/Dublin", "GMT Standard Time"),
    ("Europe/Lisbon", "GMT Standard Time"),
    ("Europe/Kyiv", "FLE Standard Time"),
    ("Europe/Helsinki", "FLE Standard Time"),
    ("Europe/Athens", "GTB Standard Time"),
    ("America/Detroit", "Eastern Standard Time"),
    ("America/Toronto", "Eastern Standard Time"),
];

/// A zone a client named, resolved: the tz rules and the Windows name Graph reports.
pub(crate) struct Zone {
    pub tz: Tz,
    pub windows: String,
}

pub(crate) fn resolve(name: &str) -> Option<Zone> {
    let name = name.trim();
    if let Some((w, iana)) = WINDOWS_IANA.iter().find(|(w, _)| w.eq_ignore_ascii_case(name)) {
        return Some(Zone { tz: Tz::from_str(iana).ok()?, windows: (*w).to_string() });
    }
    let tz = Tz::from_str(name).ok()?;
    let windows = WINDOWS_IANA
        .iter()
        .find(|(_, i)| *i == name)
        .map(|(w, _)| *w)
        .or_else(|| IANA_ALIASES.iter().find(|(i, _)| *i == name).map(|(_, w)| *w))
        .unwrap_or("tzone://Microsoft/Custom");
    Some(Zone { tz, windows: windows.to_string() })
}

fn invalid(msg: impl Into<String>) -> GraphError {
    GraphError::bad_request("ErrorInvalidRequest", msg)
}

fn parse_wall(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim_end_matches('Z');
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M"))
        .ok()
}

/// Parses a `dateTimeTimeZone` into an instant and the Windows zone name.
pub(crate) fn parse_dttz(field: &str, v: &Value) -> GResult<(DateTime<Utc>, String)> {
    let dt =
        v.get("dateTime").and_then(Value::as_str).ok_or_else(|| invalid(format!("{field}.dateTime is required.")))?;
    let zone_name = v.get("timeZone").and_then(Value::as_str).unwrap_or("UTC");
    let zone = resolve(zone_name).ok_or_else(|| {
        invalid(format!(
            "A valid TimeZone value must be specified. The following TimeZone value is not supported: '{zone_name}'."
        ))
    })?;
    let wall = parse_wall(dt)
        .ok_or_else(|| invalid(format!("Cannot convert the literal '{dt}' to the expected type 'Edm.DateTime'.")))?;
    let local = zone
        .tz
        .from_local_datetime(&wall)
        .earliest()
        // A wall time inside a DST gap: Exchange moves it forward by the gap.
        .or_else(|| zone.tz.from_local_datetime(&(wall + chrono::Duration::hours(1))).earliest())
        .ok_or_else(|| invalid(format!("{field} is not a valid local time.")))?;
    Ok((local.with_timezone(&Utc), zone.windows))
}

/// `2026-05-04T10:00:00.0000000`.
pub(crate) fn wall7(t: NaiveDateTime) -> String {
    format!("{}{:07}", t.format("%Y-%m-%dT%H:%M:%S."), t.and_utc().timestamp_subsec_nanos() / 100)
}

/// Renders an instant as `dateTimeTimeZone`, in UTC or the `Prefer: outlook.timezone` zone.
pub(crate) fn format_dttz(t: DateTime<Utc>, prefer: Option<&str>) -> Value {
    match prefer.and_then(|p| resolve(p).map(|z| (p, z))) {
        Some((name, z)) => json!({"dateTime": wall7(t.with_timezone(&z.tz).naive_local()), "timeZone": name}),
        None => json!({"dateTime": wall7(t.naive_utc()), "timeZone": "UTC"}),
    }
}

/// Whether `name` is a zone the simulator understands (for `Preference-Applied`).
pub(crate) fn known(name: &str) -> bool {
    resolve(name).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_iana_names_give_the_same_instant() {
        let (a, wa) =
            parse_dttz("start", &json!({"dateTime": "2026-05-04T10:00:00", "timeZone": "W. Europe Standard Time"}))
                .unwrap();
        let (b, wb) =
            parse_dttz("start", &json!({"dateTime": "2026-05-04T10:00:00.0000000", "timeZone": "Europe/Berlin"}))
                .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_rfc3339(), "2026-05-04T08:00:00+00:00");
        assert_eq!(wa, "W. Europe Standard Time");
        assert_eq!(wb, "W. Europe Standard Time");
    }

    #[test]
    fn output_has_seven_fractional_digits_in_the_preferred_zone() {
        let t = DateTime::parse_from_rfc3339("2026-01-15T08:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(format_dttz(t, None), json!({"dateTime": "2026-01-15T08:00:00.0000000", "timeZone": "UTC"}));
        assert_eq!(
            format_dttz(t, Some("Pacific Standard Time")),
            json!({"dateTime": "2026-01-15T00:00:00.0000000", "timeZone": "Pacific Standard Time"})
        );
    }

    #[test]
    fn unknown_zones_are_rejected() {
        assert!(parse_dttz("start", &json!({"dateTime": "2026-05-04T10:00:00", "timeZone": "Mars/Olympus"})).is_err());
    }
}
