//! IANA ⇄ Windows time-zone names. Graph names zones the Windows way
//! (`W. Europe Standard Time`) in `originalStartTimeZone` and
//! `recurrenceTimeZone`; helloHQ's recurrence text (C1) and chrono-tz use IANA
//! names. The table follows CLDR `windowsZones.xml`: the first IANA name of
//! each Windows zone is its "001" (golden) zone, the one `iana_name` returns;
//! the other IANA names of the same Windows zone map to it one way only.
//! Pure lookups: no I/O, no clock.

use std::str::FromStr;

use chrono_tz::Tz;

/// Windows name → its golden IANA zone (CLDR territory "001").
const GOLDEN: &[(&str, &str)] = &[
    ("UTC", "UTC"),
    ("GMT Standard Time", "Europe/London"),
    ("Greenwich Standard Time", "Atlantic/Reykjavik"),
    ("W. Europe Standard Time", "Europe/Berlin"),
    ("Romance Standard Time", "Europe/Paris"),
    ("Central Europe Standard Time", "Europe/Budapest"),
    ("Central European Standard Time", "Europe/Warsaw"),
    ("E. Europe Standard Time", "Europe/Chisinau"),
    ("FLE Standard Time", "Europe/Kiev"),
    ("GTB Standard Time", "Europe/Bucharest"),
    ("Kaliningrad Standard Time", "Europe/Kaliningrad"),
    ("Belarus Standard Time", "Europe/Minsk"),
    ("Russian Standard Time", "Europe/Moscow"),
    ("Turkey Standard Time", "Europe/Istanbul"),
    ("Astrakhan Standard Time", "Europe/Astrakhan"),
    ("Saratov Standard Time", "Europe/Saratov"),
    ("Volgograd Standard Time", "Europe/Volgograd"),
    ("Russia Time Zone 3", "Europe/Samara"),
    ("Eastern Standard Time", "America/New_York"),
    ("US Eastern Standard Time", "America/Indianapolis"),
    ("Central Standard Time", "America/Chicago"),
    ("Mountain Standard Time", "America/Denver"),
    ("US Mountain Standard Time", "America/Phoenix"),
    ("Pacific Standard Time", "America/Los_Angeles"),
    ("Alaskan Standard Time", "America/Anchorage"),
    ("Aleutian Standard Time", "America/Adak"),
    ("Hawaiian Standard Time", "Pacific/Honolulu"),
    ("Tokyo Standard Time", "Asia/Tokyo"),
    ("China Standard Time", "Asia/Shanghai"),
    ("Singapore Standard Time", "Asia/Singapore"),
    ("India Standard Time", "Asia/Calcutta"),
    ("Arabian Standard Time", "Asia/Dubai"),
    ("AUS Eastern Standard Time", "Australia/Sydney"),
];

/// Further IANA names and the Windows zone they belong to (CLDR territory rows).
const ALIASES: &[(&str, &str)] = &[
    ("Etc/UTC", "UTC"),
    ("Etc/GMT", "UTC"),
    ("GMT", "UTC"),
    ("Europe/Dublin", "GMT Standard Time"),
    ("Europe/Lisbon", "GMT Standard Time"),
    ("Europe/Guernsey", "GMT Standard Time"),
    ("Europe/Isle_of_Man", "GMT Standard Time"),
    ("Europe/Jersey", "GMT Standard Time"),
    ("Atlantic/Canary", "GMT Standard Time"),
    ("Atlantic/Faroe", "GMT Standard Time"),
    ("Atlantic/Madeira", "GMT Standard Time"),
    ("Europe/Amsterdam", "W. Europe Standard Time"),
    ("Europe/Andorra", "W. Europe Standard Time"),
    ("Europe/Busingen", "W. Europe Standard Time"),
    ("Europe/Gibraltar", "W. Europe Standard Time"),
    ("Europe/Luxembourg", "W. Europe Standard Time"),
    ("Europe/Malta", "W. Europe Standard Time"),
    ("Europe/Monaco", "W. Europe Standard Time"),
    ("Europe/Oslo", "W. Europe Standard Time"),
    ("Europe/Rome", "W. Europe Standard Time"),
    ("Europe/San_Marino", "W. Europe Standard Time"),
    ("Europe/Stockholm", "W. Europe Standard Time"),
    ("Europe/Vaduz", "W. Europe Standard Time"),
    ("Europe/Vatican", "W. Europe Standard Time"),
    ("Europe/Vienna", "W. Europe Standard Time"),
    ("Europe/Zurich", "W. Europe Standard Time"),
    ("Arctic/Longyearbyen", "W. Europe Standard Time"),
    ("Europe/Brussels", "Romance Standard Time"),
    ("Europe/Copenhagen", "Romance Standard Time"),
    ("Europe/Madrid", "Romance Standard Time"),
    ("Europe/Belgrade", "Central Europe Standard Time"),
    ("Europe/Bratislava", "Central Europe Standard Time"),
    ("Europe/Ljubljana", "Central Europe Standard Time"),
    ("Europe/Podgorica", "Central Europe Standard Time"),
    ("Europe/Prague", "Central Europe Standard Time"),
    ("Europe/Tirane", "Central Europe Standard Time"),
    ("Europe/Sarajevo", "Central European Standard Time"),
    ("Europe/Skopje", "Central European Standard Time"),
    ("Europe/Zagreb", "Central European Standard Time"),
    ("Europe/Kyiv", "FLE Standard Time"),
    ("Europe/Helsinki", "FLE Standard Time"),
    ("Europe/Mariehamn", "FLE Standard Time"),
    ("Europe/Riga", "FLE Standard Time"),
    ("Europe/Sofia", "FLE Standard Time"),
    ("Europe/Tallinn", "FLE Standard Time"),
    ("Europe/Vilnius", "FLE Standard Time"),
    ("Europe/Athens", "GTB Standard Time"),
    ("Europe/Nicosia", "GTB Standard Time"),
    ("Europe/Kirov", "Russian Standard Time"),
    ("Europe/Simferopol", "Russian Standard Time"),
    ("Europe/Ulyanovsk", "Astrakhan Standard Time"),
    ("America/Detroit", "Eastern Standard Time"),
    ("America/Toronto", "Eastern Standard Time"),
    ("America/Indiana/Indianapolis", "US Eastern Standard Time"),
    ("America/Boise", "Mountain Standard Time"),
    ("Asia/Kolkata", "India Standard Time"),
    ("Australia/Melbourne", "AUS Eastern Standard Time"),
];

/// The Windows zone Graph uses for an IANA zone (`Europe/Vienna` → `W. Europe Standard Time`).
pub fn windows_name(iana: &str) -> Option<&'static str> {
    let iana = iana.trim();
    GOLDEN
        .iter()
        .find(|(_, i)| *i == iana)
        .map(|(w, _)| *w)
        .or_else(|| ALIASES.iter().find(|(i, _)| *i == iana).map(|(_, w)| *w))
}

/// The golden IANA zone of a Windows zone (any case), e.g. `W. Europe Standard Time` → `Europe/Berlin`.
pub fn iana_name(windows: &str) -> Option<&'static str> {
    let windows = windows.trim();
    GOLDEN.iter().find(|(w, _)| w.eq_ignore_ascii_case(windows)).map(|(_, i)| *i)
}

/// Resolves a zone named either way (Graph accepts both on input) to an
/// IANA name chrono-tz knows; `None` for Graph's `tzone://Microsoft/Custom`
/// and anything else without rules.
pub fn to_iana(name: &str) -> Option<&'static str> {
    if let Some(i) = iana_name(name) {
        return Some(i);
    }
    if name.trim().eq_ignore_ascii_case("tzone://Microsoft/Utc") {
        return Some("UTC");
    }
    Tz::from_str(name.trim()).ok().map(|tz| tz.name())
}

/// The chrono-tz rules for a zone named either way.
pub fn to_tz(name: &str) -> Option<Tz> {
    to_iana(name).and_then(|i| Tz::from_str(i).ok())
}

/// The name to give Graph for an IANA zone: its Windows name, else the IANA
/// name itself (Graph accepts IANA names on input).
pub fn graph_name(iana: &str) -> String {
    windows_name(iana).map(str::to_string).unwrap_or_else(|| iana.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_iana_name_in_the_table_has_tz_rules() {
        for iana in GOLDEN.iter().map(|(_, i)| *i).chain(ALIASES.iter().map(|(i, _)| *i)) {
            assert!(Tz::from_str(iana).is_ok(), "{iana} unknown to chrono-tz");
        }
    }

    #[test]
    fn golden_zones_round_trip_both_ways() {
        for (w, i) in GOLDEN {
            assert_eq!(windows_name(i), Some(*w), "{i}");
            assert_eq!(iana_name(w), Some(*i), "{w}");
        }
    }

    #[test]
    fn aliases_point_at_a_known_windows_zone() {
        for (i, w) in ALIASES {
            assert!(iana_name(w).is_some(), "{i} → {w} has no golden zone");
            assert_eq!(windows_name(i), Some(*w));
        }
    }

    #[test]
    fn the_zones_the_product_meets_are_covered() {
        assert_eq!(windows_name("Europe/Berlin"), Some("W. Europe Standard Time"));
        assert_eq!(windows_name("Europe/Vienna"), Some("W. Europe Standard Time"));
        assert_eq!(windows_name("Europe/London"), Some("GMT Standard Time"));
        assert_eq!(windows_name("UTC"), Some("UTC"));
        assert_eq!(windows_name("America/New_York"), Some("Eastern Standard Time"));
        assert_eq!(windows_name("America/Los_Angeles"), Some("Pacific Standard Time"));
        assert_eq!(windows_name("Asia/Tokyo"), Some("Tokyo Standard Time"));
        assert_eq!(windows_name("Australia/Sydney"), Some("AUS Eastern Standard Time"));
        assert_eq!(iana_name("w. europe standard time"), Some("Europe/Berlin"));
        assert_eq!(windows_name("Mars/Olympus"), None);
        assert_eq!(iana_name("Mars Standard Time"), None);
    }

    #[test]
    fn to_iana_accepts_either_spelling_and_refuses_custom_zones() {
        assert_eq!(to_iana("W. Europe Standard Time"), Some("Europe/Berlin"));
        assert_eq!(to_iana("Europe/Vienna"), Some("Europe/Vienna"));
        assert_eq!(to_iana("tzone://Microsoft/Utc"), Some("UTC"));
        assert_eq!(to_iana("tzone://Microsoft/Custom"), None);
        assert_eq!(graph_name("Asia/Kathmandu"), "Asia/Kathmandu");
        assert_eq!(graph_name("Europe/Paris"), "Romance Standard Time");
    }
}
