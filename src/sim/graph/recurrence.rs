//! `patternedRecurrence`: validation as Graph does it (400 for missing or
//! foreign values), the wire form with Outlook's defaults (the `noEnd` quirk:
//! `endDate` `0001-01-01`, `numberOfOccurrences` 0, `month`/`dayOfMonth` 0,
//! `index` `first`), and expansion into occurrence dates.

use chrono::{Datelike, Duration, NaiveDate, Weekday};
use serde_json::{json, Value};

use super::error::{GResult, GraphError};
use super::tz;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatternType {
    Daily,
    Weekly,
    AbsoluteMonthly,
    RelativeMonthly,
    AbsoluteYearly,
    RelativeYearly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeType {
    EndDate,
    NoEnd,
    Numbered,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Recurrence {
    pub ty: PatternType,
    pub interval: u32,
    pub month: u32,
    pub day_of_month: u32,
    pub days_of_week: Vec<Weekday>,
    pub first_day_of_week: Weekday,
    /// 0..=3 = first..fourth, 4 = last.
    pub index: u8,
    pub range: RangeType,
    pub start_date: NaiveDate,
    pub end_date: Option<NaiveDate>,
    pub count: u32,
    /// The zone occurrences are computed in (Windows name or as given).
    pub time_zone: String,
}

const NO_DATE: &str = "0001-01-01";
const INDEXES: [&str; 5] = ["first", "second", "third", "fourth", "last"];
const DAYS: [(&str, Weekday); 7] = [
    ("sunday", Weekday::Sun),
    ("monday", Weekday::Mon),
    ("tuesday", Weekday::Tue),
    ("wednesday", Weekday::Wed),
    ("thursday", Weekday::Thu),
    ("friday", Weekday::Fri),
    ("saturday", Weekday::Sat),
];

fn invalid(msg: impl Into<String>) -> GraphError {
    GraphError::bad_request("ErrorInvalidRequest", msg)
}

fn day_name(d: Weekday) -> &'static str {
    DAYS.iter().find(|(_, w)| *w == d).map(|(n, _)| *n).unwrap_or("sunday")
}

fn parse_day(v: &Value) -> GResult<Weekday> {
    let s = v.as_str().unwrap_or_default();
    DAYS.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(s))
        .map(|(_, d)| *d)
        .ok_or_else(|| invalid(format!("'{v}' is not a valid day of the week.")))
}

fn parse_date(field: &str, v: Option<&Value>) -> GResult<Option<NaiveDate>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s == NO_DATE => Ok(None),
        Some(Value::String(s)) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map(Some)
            .map_err(|_| invalid(format!("'{s}' is not a valid {field}."))),
        Some(other) => Err(invalid(format!("'{other}' is not a valid {field}."))),
    }
}

fn uint(field: &str, v: Option<&Value>) -> GResult<u32> {
    match v {
        None | Some(Value::Null) => Ok(0),
        Some(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| invalid(format!("'{n}' is not a valid {field}."))),
    }
}

/// Parses and validates a `patternedRecurrence`; `default_tz` is the master's start zone.
pub(crate) fn parse(v: &Value, default_tz: &str) -> GResult<Recurrence> {
    let pattern =
        v.get("pattern").filter(|p| p.is_object()).ok_or_else(|| invalid("recurrence.pattern is required."))?;
    let range = v.get("range").filter(|p| p.is_object()).ok_or_else(|| invalid("recurrence.range is required."))?;
    // Enum members compare without regard to case, as Graph reads them (`Weekly` = `weekly`).
    let lower = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_ascii_lowercase);
    let ty = match lower(pattern.get("type")).as_deref() {
        Some("daily") => PatternType::Daily,
        Some("weekly") => PatternType::Weekly,
        Some("absolutemonthly") => PatternType::AbsoluteMonthly,
        Some("relativemonthly") => PatternType::RelativeMonthly,
        Some("absoluteyearly") => PatternType::AbsoluteYearly,
        Some("relativeyearly") => PatternType::RelativeYearly,
        _ => return Err(invalid("recurrence.pattern.type is missing or not valid.")),
    };
    let interval = uint("interval", pattern.get("interval"))?;
    if interval == 0 || interval > 99 {
        return Err(invalid("recurrence.pattern.interval must be between 1 and 99."));
    }
    let month = uint("month", pattern.get("month"))?;
    let day_of_month = uint("dayOfMonth", pattern.get("dayOfMonth"))?;
    let days_of_week = match pattern.get("daysOfWeek") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.iter().map(parse_day).collect::<GResult<Vec<_>>>()?,
        Some(_) => return Err(invalid("recurrence.pattern.daysOfWeek must be an array.")),
    };
    let first_day = pattern.get("firstDayOfWeek").filter(|v| !v.is_null());
    let first_day_of_week = first_day.map(parse_day).transpose()?.unwrap_or(Weekday::Sun);
    let index = match pattern.get("index") {
        None | Some(Value::Null) => 0,
        Some(v) => INDEXES
            .iter()
            .position(|i| v.as_str().is_some_and(|s| i.eq_ignore_ascii_case(s)))
            .ok_or_else(|| invalid(format!("'{v}' is not a valid index.")))? as u8,
    };

    use PatternType::*;
    let needs_days = matches!(ty, Weekly | RelativeMonthly | RelativeYearly);
    let needs_dom = matches!(ty, AbsoluteMonthly | AbsoluteYearly);
    let needs_month = matches!(ty, AbsoluteYearly | RelativeYearly);
    let relative = matches!(ty, RelativeMonthly | RelativeYearly);
    if needs_days && days_of_week.is_empty() {
        return Err(invalid("recurrence.pattern.daysOfWeek is required for this pattern type."));
    }
    if !needs_days && !days_of_week.is_empty() {
        return Err(invalid("recurrence.pattern.daysOfWeek is not valid for this pattern type."));
    }
    // A weekly pattern without `firstDayOfWeek` is accepted and answered with `sunday`
    // (user-post-events, Request 3 and its response).
    if needs_dom && !(1..=31).contains(&day_of_month) {
        return Err(invalid("recurrence.pattern.dayOfMonth must be between 1 and 31."));
    }
    if !needs_dom && day_of_month != 0 {
        return Err(invalid("recurrence.pattern.dayOfMonth is not valid for this pattern type."));
    }
    if needs_month && !(1..=12).contains(&month) {
        return Err(invalid("recurrence.pattern.month must be between 1 and 12."));
    }
    if !needs_month && month != 0 {
        return Err(invalid("recurrence.pattern.month is not valid for this pattern type."));
    }
    if !relative && index != 0 {
        return Err(invalid("recurrence.pattern.index is not valid for this pattern type."));
    }

    let range_ty = match lower(range.get("type")).as_deref() {
        Some("enddate") => RangeType::EndDate,
        Some("noend") => RangeType::NoEnd,
        Some("numbered") => RangeType::Numbered,
        _ => return Err(invalid("recurrence.range.type is missing or not valid.")),
    };
    let start_date = parse_date("startDate", range.get("startDate"))?
        .ok_or_else(|| invalid("recurrence.range.startDate is required."))?;
    let end_date = parse_date("endDate", range.get("endDate"))?;
    let count = uint("numberOfOccurrences", range.get("numberOfOccurrences"))?;
    match range_ty {
        RangeType::EndDate => match end_date {
            Some(e) if e >= start_date => {}
            Some(_) => return Err(invalid("recurrence.range.endDate must not be before startDate.")),
            None => return Err(invalid("recurrence.range.endDate is required for an endDate range.")),
        },
        _ if end_date.is_some() => return Err(invalid("recurrence.range.endDate is only valid for an endDate range.")),
        _ => {}
    }
    match range_ty {
        RangeType::Numbered if count == 0 => {
            return Err(invalid("recurrence.range.numberOfOccurrences must be greater than 0."))
        }
        RangeType::Numbered => {}
        _ if count != 0 => {
            return Err(invalid("recurrence.range.numberOfOccurrences is only valid for a numbered range."))
        }
        _ => {}
    }
    let time_zone = match range.get("recurrenceTimeZone").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        Some(z) if tz::known(z) => z.to_string(),
        Some(z) => return Err(invalid(format!("'{z}' is not a supported recurrenceTimeZone."))),
        None => default_tz.to_string(),
    };
    Ok(Recurrence {
        ty,
        interval,
        month,
        day_of_month,
        days_of_week,
        first_day_of_week,
        index,
        range: range_ty,
        start_date,
        end_date,
        count,
        time_zone,
    })
}

impl Recurrence {
    /// Wire form with Outlook's defaults for the members that don't apply.
    pub fn to_wire(&self) -> Value {
        let ty = match self.ty {
            PatternType::Daily => "daily",
            PatternType::Weekly => "weekly",
            PatternType::AbsoluteMonthly => "absoluteMonthly",
            PatternType::RelativeMonthly => "relativeMonthly",
            PatternType::AbsoluteYearly => "absoluteYearly",
            PatternType::RelativeYearly => "relativeYearly",
        };
        let range = match self.range {
            RangeType::EndDate => "endDate",
            RangeType::NoEnd => "noEnd",
            RangeType::Numbered => "numbered",
        };
        json!({
            "pattern": {
                "type": ty,
                "interval": self.interval,
                "month": self.month,
                "dayOfMonth": self.day_of_month,
                "daysOfWeek": self.days_of_week.iter().map(|d| day_name(*d)).collect::<Vec<_>>(),
                "firstDayOfWeek": day_name(self.first_day_of_week),
                "index": INDEXES[self.index as usize],
            },
            "range": {
                "type": range,
                "startDate": self.start_date.format("%Y-%m-%d").to_string(),
                "endDate": self.end_date.map(|d| d.format("%Y-%m-%d").to_string()).unwrap_or_else(|| NO_DATE.to_string()),
                "recurrenceTimeZone": self.time_zone,
                "numberOfOccurrences": self.count,
            },
        })
    }

    /// Occurrence dates in order, from `startDate` up to `until` (inclusive)
    /// and within the range. Cancelled dates are the caller's business.
    pub fn dates(&self, until: NaiveDate) -> Vec<NaiveDate> {
        let last = match self.end_date {
            Some(e) if self.range == RangeType::EndDate => e.min(until),
            _ => until,
        };
        let limit = if self.range == RangeType::Numbered { self.count as usize } else { usize::MAX };
        let mut out = Vec::new();
        let interval = i64::from(self.interval);
        // A generous bound on periods keeps a pathological pattern from spinning.
        for k in 0..20_000i64 {
            let candidates = self.period(k * interval);
            let Some(first) = candidates.first().copied().or_else(|| self.period_start(k * interval)) else { break };
            if first > last {
                break;
            }
            for d in candidates {
                if d < self.start_date {
                    continue;
                }
                if d > last || out.len() >= limit {
                    return out;
                }
                out.push(d);
            }
            if out.len() >= limit {
                break;
            }
        }
        out
    }

    /// The first day of period `k` (for the stop test when a period is empty).
    fn period_start(&self, k: i64) -> Option<NaiveDate> {
        let s = self.start_date;
        match self.ty {
            PatternType::Daily => s.checked_add_signed(Duration::days(k)),
            PatternType::Weekly => week_start(s, self.first_day_of_week).checked_add_signed(Duration::days(7 * k)),
            PatternType::AbsoluteMonthly | PatternType::RelativeMonthly => add_months(s.with_day(1)?, k),
            PatternType::AbsoluteYearly | PatternType::RelativeYearly => {
                NaiveDate::from_ymd_opt(s.year() + k as i32, 1, 1)
            }
        }
    }

    /// Candidate dates of period `k` (days, weeks, months or years after the start).
    fn period(&self, k: i64) -> Vec<NaiveDate> {
        let s = self.start_date;
        match self.ty {
            PatternType::Daily => s.checked_add_signed(Duration::days(k)).into_iter().collect(),
            PatternType::Weekly => {
                let ws = week_start(s, self.first_day_of_week) + Duration::days(7 * k);
                (0..7).map(|o| ws + Duration::days(o)).filter(|d| self.days_of_week.contains(&d.weekday())).collect()
            }
            PatternType::AbsoluteMonthly => {
                let Some(m) = s.with_day(1).and_then(|d| add_months(d, k)) else { return Vec::new() };
                clamp_day(m.year(), m.month(), self.day_of_month).into_iter().collect()
            }
            PatternType::RelativeMonthly => {
                let Some(m) = s.with_day(1).and_then(|d| add_months(d, k)) else { return Vec::new() };
                self.relative_day(m.year(), m.month()).into_iter().collect()
            }
            PatternType::AbsoluteYearly => {
                clamp_day(s.year() + k as i32, self.month, self.day_of_month).into_iter().collect()
            }
            PatternType::RelativeYearly => self.relative_day(s.year() + k as i32, self.month).into_iter().collect(),
        }
    }

    fn relative_day(&self, year: i32, month: u32) -> Option<NaiveDate> {
        let first = NaiveDate::from_ymd_opt(year, month, 1)?;
        let days: Vec<NaiveDate> = first
            .iter_days()
            .take_while(|d| d.month() == month)
            .filter(|d| self.days_of_week.contains(&d.weekday()))
            .collect();
        if self.index == 4 {
            days.last().copied()
        } else {
            days.get(self.index as usize).copied()
        }
    }
}

fn week_start(d: NaiveDate, first: Weekday) -> NaiveDate {
    let back = (7 + d.weekday().num_days_from_sunday() - first.num_days_from_sunday()) % 7;
    d - Duration::days(i64::from(back))
}

fn add_months(d: NaiveDate, k: i64) -> Option<NaiveDate> {
    let total = i64::from(d.year()) * 12 + i64::from(d.month0()) + k;
    NaiveDate::from_ymd_opt(i32::try_from(total.div_euclid(12)).ok()?, (total.rem_euclid(12) + 1) as u32, 1)
}

/// Day `dom` of the month, or its last day when the month is shorter (as Outlook does).
fn clamp_day(year: i32, month: u32, dom: u32) -> Option<NaiveDate> {
    (1..=dom).rev().find_map(|d| NaiveDate::from_ymd_opt(year, month, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn weekly_series_from_graph_md_expands_on_mondays_and_wednesdays() {
        let r = parse(
            &json!({"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday", "wednesday"], "firstDayOfWeek": "monday"},
                    "range": {"type": "endDate", "startDate": "2026-05-04", "endDate": "2026-05-13"}}),
            "UTC",
        )
        .unwrap();
        assert_eq!(r.dates(d("2027-01-01")), vec![d("2026-05-04"), d("2026-05-06"), d("2026-05-11"), d("2026-05-13")]);
    }

    #[test]
    fn no_end_series_renders_outlooks_defaults() {
        let r = parse(
            &json!({"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"], "firstDayOfWeek": "sunday"},
                    "range": {"type": "noEnd", "startDate": "2026-05-04"}}),
            "W. Europe Standard Time",
        )
        .unwrap();
        let w = r.to_wire();
        assert_eq!(w["range"]["endDate"], "0001-01-01");
        assert_eq!(w["range"]["numberOfOccurrences"], 0);
        assert_eq!(w["pattern"]["month"], 0);
        assert_eq!(w["pattern"]["dayOfMonth"], 0);
        assert_eq!(w["pattern"]["index"], "first");
        // The defaults read back are accepted again.
        assert_eq!(parse(&w, "UTC").unwrap(), r);
    }

    #[test]
    fn missing_and_foreign_values_are_rejected() {
        let base = |pattern: Value, range: Value| parse(&json!({"pattern": pattern, "range": range}), "UTC");
        let range = json!({"type": "noEnd", "startDate": "2026-05-04"});
        assert!(base(json!({"type": "weekly", "interval": 1, "firstDayOfWeek": "monday"}), range.clone()).is_err());
        assert!(base(json!({"type": "daily", "interval": 1, "dayOfMonth": 4}), range.clone()).is_err());
        assert!(base(json!({"type": "absoluteMonthly", "interval": 1}), range.clone()).is_err());
        assert!(base(json!({"type": "daily", "interval": 0}), range.clone()).is_err());
        assert!(base(json!({"type": "daily", "interval": 1}), json!({"type": "numbered", "startDate": "2026-05-04"}))
            .is_err());
        assert!(base(json!({"type": "daily", "interval": 1}), json!({"type": "endDate", "startDate": "2026-05-04"}))
            .is_err());
    }

    #[test]
    fn relative_monthly_picks_the_indexed_weekday_and_last() {
        let r = parse(
            &json!({"pattern": {"type": "relativeMonthly", "interval": 1, "daysOfWeek": ["friday"], "index": "last"},
                    "range": {"type": "numbered", "startDate": "2026-05-01", "numberOfOccurrences": 2}}),
            "UTC",
        )
        .unwrap();
        assert_eq!(r.dates(d("2030-01-01")), vec![d("2026-05-29"), d("2026-06-26")]);
    }

    #[test]
    fn day_31_falls_on_the_last_day_of_shorter_months() {
        let r = parse(
            &json!({"pattern": {"type": "absoluteMonthly", "interval": 1, "dayOfMonth": 31},
                    "range": {"type": "numbered", "startDate": "2026-01-31", "numberOfOccurrences": 3}}),
            "UTC",
        )
        .unwrap();
        assert_eq!(r.dates(d("2030-01-01")), vec![d("2026-01-31"), d("2026-02-28"), d("2026-03-31")]);
    }

    mod against_rrule {
        use super::*;
        use proptest::prelude::*;

        const RFC_DAYS: [&str; 7] = ["SU", "MO", "TU", "WE", "TH", "FR", "SA"];

        fn rrule_dates(start: NaiveDate, rule: &str) -> Vec<NaiveDate> {
            let text = format!("DTSTART:{}T090000Z\nRRULE:{rule}", start.format("%Y%m%d"));
            let set: rrule::RRuleSet = text.parse().unwrap();
            set.all(500).dates.into_iter().map(|d| d.date_naive()).collect()
        }

        fn ours(pattern: Value, start: NaiveDate, count: u32) -> Vec<NaiveDate> {
            let r = parse(
                &json!({"pattern": pattern, "range": {"type": "numbered", "startDate": start.format("%Y-%m-%d").to_string(), "numberOfOccurrences": count}}),
                "UTC",
            )
            .unwrap();
            r.dates(NaiveDate::from_ymd_opt(2100, 1, 1).unwrap())
        }

        proptest! {
            #[test]
            fn weekly_series_expand_like_rfc5545(
                interval in 1u32..=3,
                mask in 1u8..=127,
                first in 0usize..7,
                offset in 0i64..365,
                count in 1u32..=25,
            ) {
                let days: Vec<usize> = (0..7).filter(|d| mask & (1 << d) != 0).collect();
                let base = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + Duration::days(offset);
                // Graph's startDate is the master's date, which falls on a pattern day.
                let start = base.iter_days().find(|d| days.contains(&(d.weekday().num_days_from_sunday() as usize))).unwrap();
                let names: Vec<&str> = days.iter().map(|d| DAYS[*d].0).collect();
                let got = ours(
                    json!({"type": "weekly", "interval": interval, "daysOfWeek": names, "firstDayOfWeek": DAYS[first].0}),
                    start,
                    count,
                );
                let byday: Vec<&str> = days.iter().map(|d| RFC_DAYS[*d]).collect();
                let want = rrule_dates(
                    start,
                    &format!("FREQ=WEEKLY;INTERVAL={interval};BYDAY={};WKST={};COUNT={count}", byday.join(","), RFC_DAYS[first]),
                );
                prop_assert_eq!(got, want);
            }

            #[test]
            fn absolute_monthly_series_expand_like_rfc5545(
                interval in 1u32..=3,
                dom in 1u32..=28,
                month in 1u32..=12,
                count in 1u32..=25,
            ) {
                let start = NaiveDate::from_ymd_opt(2026, month, dom).unwrap();
                let got = ours(json!({"type": "absoluteMonthly", "interval": interval, "dayOfMonth": dom}), start, count);
                let want = rrule_dates(start, &format!("FREQ=MONTHLY;INTERVAL={interval};BYMONTHDAY={dom};COUNT={count}"));
                prop_assert_eq!(got, want);
            }

            #[test]
            fn relative_monthly_series_expand_like_rfc5545(
                interval in 1u32..=3,
                day in 0usize..7,
                index in 0usize..5,
                month in 1u32..=12,
                count in 1u32..=25,
            ) {
                let pos = if index == 4 { -1 } else { index as i32 + 1 };
                let want_all = rrule_dates(
                    NaiveDate::from_ymd_opt(2026, month, 1).unwrap(),
                    &format!("FREQ=MONTHLY;INTERVAL={interval};BYDAY={pos}{};COUNT={count}", RFC_DAYS[day]),
                );
                // Start the series on its first occurrence, as Graph requires.
                let start = want_all[0];
                let got = ours(
                    json!({"type": "relativeMonthly", "interval": interval, "daysOfWeek": [DAYS[day].0], "index": INDEXES[index]}),
                    start,
                    count,
                );
                prop_assert_eq!(got, want_all);
            }
        }
    }
}
