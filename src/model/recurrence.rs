//! The canonical recurrence of an appointment series and its two wire forms:
//! Graph's `patternedRecurrence` (GRAPH.md §6.1) and the RFC 5545 text helloHQ
//! keeps in `recurrencyStorage` (HELLOHQ.md C1). Only what both sides can
//! hold is canonical: daily/weekly/monthly/yearly patterns, an end date or no
//! end, cancelled occurrences. A series that ends after N occurrences is
//! turned into the equivalent end date (helloHQ cannot store counts, SPEC §3).
//! Anything else is refused with [`Unsupported`] naming what does not fit:
//! a half-converted series would silently move meetings.
//!
//! Occurrences are expanded in the series' own time zone, so a weekly 09:00
//! stays 09:00 local across daylight-saving changes. Monthly and yearly days
//! past the end of a shorter month fall on its last day, as Outlook does;
//! the RFC 5545 form spells that `BYMONTHDAY=28,…,d;BYSETPOS=-1`.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::timezone;

/// A recurrence that one side cannot hold; `reason` names the part and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("recurrence cannot be represented: {reason}")]
pub struct Unsupported {
    pub reason: String,
}

fn unsupported(reason: impl Into<String>) -> Unsupported {
    Unsupported { reason: reason.into() }
}

/// Which of the matching weekdays of a month a relative pattern takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeekIndex {
    First,
    Second,
    Third,
    Fourth,
    Last,
}

impl WeekIndex {
    const ALL: [WeekIndex; 5] =
        [WeekIndex::First, WeekIndex::Second, WeekIndex::Third, WeekIndex::Fourth, WeekIndex::Last];

    fn graph_name(self) -> &'static str {
        match self {
            WeekIndex::First => "first",
            WeekIndex::Second => "second",
            WeekIndex::Third => "third",
            WeekIndex::Fourth => "fourth",
            WeekIndex::Last => "last",
        }
    }

    /// The RFC 5545 ordinal (`1MO` … `4MO`, `-1MO`) / `BYSETPOS` value.
    fn position(self) -> i32 {
        match self {
            WeekIndex::Last => -1,
            other => WeekIndex::ALL.iter().position(|i| *i == other).map_or(1, |p| p as i32 + 1),
        }
    }

    fn from_position(p: i32) -> Option<WeekIndex> {
        match p {
            1..=4 => Some(WeekIndex::ALL[(p - 1) as usize]),
            -1 => Some(WeekIndex::Last),
            _ => None,
        }
    }
}

/// The repeating rule, in Graph's vocabulary (the narrower of the two sides).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Pattern {
    Daily,
    Weekly {
        days: Vec<Weekday>,
        first_day_of_week: Weekday,
    },
    /// `day` 1–31; past the end of a shorter month it falls on the last day.
    AbsoluteMonthly {
        day: u32,
    },
    RelativeMonthly {
        days: Vec<Weekday>,
        index: WeekIndex,
    },
    AbsoluteYearly {
        day: u32,
        month: u32,
    },
    RelativeYearly {
        days: Vec<Weekday>,
        index: WeekIndex,
        month: u32,
    },
}

/// How a series ends. `Until` is the last local date that may hold an
/// occurrence (inclusive), as Graph's `endDate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "type", content = "date", rename_all = "snake_case")]
pub enum End {
    #[default]
    Never,
    Until(NaiveDate),
}

/// A canonical appointment series.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recurrence {
    pub pattern: Pattern,
    /// Every `interval` days/weeks/months/years; 1–99 (Outlook's range).
    pub interval: u32,
    /// Wall-clock start of the first occurrence in `time_zone` (midnight for all-day series).
    pub start: NaiveDateTime,
    /// All-day series are floating dates: no zone, occurrences at 00:00 UTC.
    pub all_day: bool,
    pub end: End,
    /// IANA name of the zone the series repeats in (`UTC` for all-day series).
    pub time_zone: String,
    /// Starts (UTC) of cancelled occurrences, sorted, without duplicates.
    pub exdates: Vec<DateTime<Utc>>,
}

const RFC_DAYS: [(&str, Weekday); 7] = [
    ("MO", Weekday::Mon),
    ("TU", Weekday::Tue),
    ("WE", Weekday::Wed),
    ("TH", Weekday::Thu),
    ("FR", Weekday::Fri),
    ("SA", Weekday::Sat),
    ("SU", Weekday::Sun),
];

fn rfc_day(d: Weekday) -> &'static str {
    RFC_DAYS[d.num_days_from_monday() as usize].0
}

fn graph_day(d: Weekday) -> &'static str {
    ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"][d.num_days_from_monday() as usize]
}

fn parse_graph_day(v: &Value) -> Result<Weekday, Unsupported> {
    let s = v.as_str().unwrap_or_default();
    (0..7)
        .map(|i| RFC_DAYS[i].1)
        .find(|d| graph_day(*d).eq_ignore_ascii_case(s))
        .ok_or_else(|| unsupported(format!("pattern.daysOfWeek: {v} is not a day of the week")))
}

/// Sorted Monday first, without duplicates: one spelling per set of days.
fn normalize_days(mut days: Vec<Weekday>) -> Vec<Weekday> {
    days.sort_by_key(|d| d.num_days_from_monday());
    days.dedup();
    days
}

/// Days of the shortest instance of a month (February counts 28), for deciding
/// when a day-of-month needs Outlook's "last day" clamp.
fn min_days(month: u32) -> u32 {
    match month {
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days of the longest instance of a month (February counts 29).
fn max_days(month: u32) -> u32 {
    if month == 2 {
        29
    } else {
        min_days(month)
    }
}

/// A local wall time in `tz` as an instant. In the spring-forward gap the
/// time moves forward by the gap (as Exchange does); in the autumn overlap
/// the first (daylight) instant is taken.
pub fn local_to_utc(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    tz.from_local_datetime(&local)
        .earliest()
        .or_else(|| tz.from_local_datetime(&(local + Duration::hours(1))).earliest())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| local.and_utc())
}

fn zone(name: &str) -> Result<Tz, Unsupported> {
    timezone::to_tz(name)
        .ok_or_else(|| unsupported(format!("time zone {name:?} has no IANA rules; give the series a named zone")))
}

impl Recurrence {
    /// Sorts and de-duplicates days and cancelled dates, so equal series are
    /// equal values (and give equal fingerprints).
    pub fn normalized(mut self) -> Recurrence {
        self.pattern = match self.pattern {
            Pattern::Weekly { days, first_day_of_week } => {
                Pattern::Weekly { days: normalize_days(days), first_day_of_week }
            }
            Pattern::RelativeMonthly { days, index } => Pattern::RelativeMonthly { days: normalize_days(days), index },
            Pattern::RelativeYearly { days, index, month } => {
                Pattern::RelativeYearly { days: normalize_days(days), index, month }
            }
            other => other,
        };
        if self.all_day {
            self.start = self.start.date().and_time(NaiveTime::MIN);
            self.time_zone = "UTC".into();
            for x in &mut self.exdates {
                *x = x.date_naive().and_time(NaiveTime::MIN).and_utc();
            }
        }
        self.exdates.sort();
        self.exdates.dedup();
        self
    }

    /// Checks the series against what both sides can hold.
    pub fn validate(&self) -> Result<(), Unsupported> {
        if !(1..=99).contains(&self.interval) {
            return Err(unsupported(format!("interval {} is outside Outlook's 1–99", self.interval)));
        }
        let days_ok = |days: &Vec<Weekday>, what: &str| {
            if days.is_empty() {
                Err(unsupported(format!("{what} pattern without days of the week")))
            } else {
                Ok(())
            }
        };
        let month_ok = |m: u32| {
            if (1..=12).contains(&m) {
                Ok(())
            } else {
                Err(unsupported(format!("month {m} is not 1–12")))
            }
        };
        match &self.pattern {
            Pattern::Daily => {}
            Pattern::Weekly { days, .. } => days_ok(days, "weekly")?,
            Pattern::AbsoluteMonthly { day } if !(1..=31).contains(day) => {
                return Err(unsupported(format!("day of month {day} is not 1–31")))
            }
            Pattern::AbsoluteMonthly { .. } => {}
            Pattern::RelativeMonthly { days, .. } => days_ok(days, "relative monthly")?,
            Pattern::AbsoluteYearly { day, month } => {
                month_ok(*month)?;
                if *day < 1 || *day > max_days(*month) {
                    return Err(unsupported(format!("day {day} does not exist in month {month}")));
                }
            }
            Pattern::RelativeYearly { days, month, .. } => {
                month_ok(*month)?;
                days_ok(days, "relative yearly")?;
            }
        }
        if !self.all_day {
            zone(&self.time_zone)?;
        }
        if let End::Until(d) = self.end {
            if d < self.start.date() {
                return Err(unsupported(format!("end date {d} is before the series starts ({})", self.start.date())));
            }
        }
        Ok(())
    }

    fn tz(&self) -> Tz {
        if self.all_day {
            chrono_tz::UTC
        } else {
            timezone::to_tz(&self.time_zone).unwrap_or(chrono_tz::UTC)
        }
    }

    /// The instant an occurrence on local date `d` starts (the series' local
    /// start time on that date, or 00:00 UTC for all-day series).
    pub fn instant_on(&self, d: NaiveDate) -> DateTime<Utc> {
        if self.all_day {
            d.and_time(NaiveTime::MIN).and_utc()
        } else {
            local_to_utc(self.tz(), d.and_time(self.start.time()))
        }
    }

    /// Occurrence dates of the pattern in order (cancelled ones included),
    /// honouring the start and the end, stopping after `last` or `limit` dates.
    fn dates(&self, last: NaiveDate, limit: usize) -> Vec<NaiveDate> {
        let last = match self.end {
            End::Until(e) => e.min(last),
            End::Never => last,
        };
        let first = self.start.date();
        let step = i64::from(self.interval.max(1));
        let mut out = Vec::new();
        // Bound on periods so that a pattern that never matches cannot spin.
        for k in 0..200_000i64 {
            let Some(period_start) = self.period_start(k * step) else { break };
            if period_start > last {
                break;
            }
            for d in self.period(k * step) {
                if d < first {
                    continue;
                }
                if d > last || out.len() >= limit {
                    return out;
                }
                out.push(d);
            }
        }
        out
    }

    fn period_start(&self, k: i64) -> Option<NaiveDate> {
        let s = self.start.date();
        match &self.pattern {
            Pattern::Daily => s.checked_add_signed(Duration::days(k)),
            Pattern::Weekly { first_day_of_week, .. } => {
                week_start(s, *first_day_of_week).checked_add_signed(Duration::days(7 * k))
            }
            Pattern::AbsoluteMonthly { .. } | Pattern::RelativeMonthly { .. } => add_months(s.with_day(1)?, k),
            Pattern::AbsoluteYearly { .. } | Pattern::RelativeYearly { .. } => {
                NaiveDate::from_ymd_opt(s.year().checked_add(i32::try_from(k).ok()?)?, 1, 1)
            }
        }
    }

    fn period(&self, k: i64) -> Vec<NaiveDate> {
        let s = self.start.date();
        let year = || i32::try_from(k).ok().and_then(|k| s.year().checked_add(k));
        match &self.pattern {
            Pattern::Daily => s.checked_add_signed(Duration::days(k)).into_iter().collect(),
            Pattern::Weekly { days, first_day_of_week } => {
                let Some(ws) = week_start(s, *first_day_of_week).checked_add_signed(Duration::days(7 * k)) else {
                    return Vec::new();
                };
                (0..7).map(|o| ws + Duration::days(o)).filter(|d| days.contains(&d.weekday())).collect()
            }
            Pattern::AbsoluteMonthly { day } => s
                .with_day(1)
                .and_then(|m| add_months(m, k))
                .and_then(|m| clamp_day(m.year(), m.month(), *day))
                .into_iter()
                .collect(),
            Pattern::RelativeMonthly { days, index } => s
                .with_day(1)
                .and_then(|m| add_months(m, k))
                .and_then(|m| relative_day(m.year(), m.month(), days, *index))
                .into_iter()
                .collect(),
            Pattern::AbsoluteYearly { day, month } => {
                year().and_then(|y| clamp_day(y, *month, *day)).into_iter().collect()
            }
            Pattern::RelativeYearly { days, index, month } => {
                year().and_then(|y| relative_day(y, *month, days, *index)).into_iter().collect()
            }
        }
    }

    /// The start of the `n`th occurrence (1-based) of the pattern, cancelled
    /// ones counted (a count is a property of the rule, not of the exceptions).
    pub fn nth_occurrence(&self, n: u32) -> Option<DateTime<Utc>> {
        let idx = usize::try_from(n).ok()?.checked_sub(1)?;
        let far = NaiveDate::from_ymd_opt(9999, 12, 31)?;
        self.dates(far, idx + 1).get(idx).map(|d| self.instant_on(*d))
    }

    /// Starts of the occurrences in `[from, to)`, cancelled ones left out.
    pub fn occurrences(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        if to <= from {
            return Vec::new();
        }
        // A local date can start up to a day either side of its UTC date.
        let last = (to + Duration::days(2)).date_naive();
        self.dates(last, usize::MAX)
            .into_iter()
            .map(|d| self.instant_on(d))
            .filter(|t| *t >= from && *t < to && self.exdates.binary_search(t).is_err())
            .collect()
    }

    /// The last date an occurrence may fall on for a series that ends with
    /// its `count`th occurrence.
    fn end_for_count(&self, count: u32) -> Result<End, Unsupported> {
        if count == 0 {
            return Err(unsupported("a series of 0 occurrences"));
        }
        let far = NaiveDate::from_ymd_opt(9999, 12, 31).ok_or_else(|| unsupported("date range"))?;
        let dates = self.dates(far, count as usize);
        match dates.get(count as usize - 1) {
            Some(d) => Ok(End::Until(*d)),
            None => Err(unsupported(format!("the pattern has fewer than {count} occurrences"))),
        }
    }

    // ---- Graph ---------------------------------------------------------------

    /// Reads a Graph `patternedRecurrence`. `master_start` is the series
    /// master's start and `tz` its zone (Windows or IANA name), used when the
    /// range carries no `recurrenceTimeZone`. A `numbered` range becomes the
    /// date of its last occurrence; Graph's defaults for members that do not
    /// belong to the pattern type (the `noEnd` quirk) are ignored.
    pub fn from_graph(pr: &Value, master_start: DateTime<Utc>, tz: &str) -> Result<Recurrence, Unsupported> {
        let pattern = pr.get("pattern").filter(|p| p.is_object()).ok_or_else(|| unsupported("pattern is missing"))?;
        let range = pr.get("range").filter(|p| p.is_object()).ok_or_else(|| unsupported("range is missing"))?;
        let uint = |v: Option<&Value>, what: &str| -> Result<u32, Unsupported> {
            match v {
                None | Some(Value::Null) => Ok(0),
                Some(n) => n
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| unsupported(format!("{what} {n} is not a whole number"))),
            }
        };
        let days = || -> Result<Vec<Weekday>, Unsupported> {
            match pattern.get("daysOfWeek") {
                Some(Value::Array(a)) => a.iter().map(parse_graph_day).collect(),
                _ => Ok(Vec::new()),
            }
        };
        let index = || -> Result<WeekIndex, Unsupported> {
            match pattern.get("index").and_then(Value::as_str) {
                None => Ok(WeekIndex::First),
                Some(s) => WeekIndex::ALL
                    .into_iter()
                    .find(|i| i.graph_name().eq_ignore_ascii_case(s))
                    .ok_or_else(|| unsupported(format!("pattern.index {s:?}"))),
            }
        };
        let month = || uint(pattern.get("month"), "pattern.month");
        let dom = || uint(pattern.get("dayOfMonth"), "pattern.dayOfMonth");
        let ty = pattern.get("type").and_then(Value::as_str).unwrap_or_default();
        let pattern_v = match ty {
            "daily" => Pattern::Daily,
            "weekly" => {
                let first = match pattern.get("firstDayOfWeek").filter(|v| !v.is_null()) {
                    Some(v) => parse_graph_day(v)?,
                    None => Weekday::Sun,
                };
                Pattern::Weekly { days: days()?, first_day_of_week: first }
            }
            "absoluteMonthly" => Pattern::AbsoluteMonthly { day: dom()? },
            "relativeMonthly" => Pattern::RelativeMonthly { days: days()?, index: index()? },
            "absoluteYearly" => Pattern::AbsoluteYearly { day: dom()?, month: month()? },
            "relativeYearly" => Pattern::RelativeYearly { days: days()?, index: index()?, month: month()? },
            other => return Err(unsupported(format!("pattern.type {other:?} (only daily, weekly, monthly, yearly)"))),
        };
        let zone_name = range
            .get("recurrenceTimeZone")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or(tz);
        let iana = timezone::to_iana(zone_name)
            .ok_or_else(|| unsupported(format!("time zone {zone_name:?} has no IANA equivalent")))?;
        let local = master_start.with_timezone(&zone(iana)?).naive_local();
        let mut r = Recurrence {
            pattern: pattern_v,
            interval: uint(pattern.get("interval"), "pattern.interval")?,
            start: local,
            all_day: false,
            end: End::Never,
            time_zone: iana.to_string(),
            exdates: Vec::new(),
        }
        .normalized();
        r.end = match range.get("type").and_then(Value::as_str).unwrap_or_default() {
            "noEnd" => End::Never,
            "endDate" => {
                let s = range.get("endDate").and_then(Value::as_str).unwrap_or_default();
                End::Until(
                    NaiveDate::parse_from_str(s, "%Y-%m-%d")
                        .map_err(|_| unsupported(format!("range.endDate {s:?} is not a date")))?,
                )
            }
            "numbered" => {
                r.validate()?;
                r.end_for_count(uint(range.get("numberOfOccurrences"), "range.numberOfOccurrences")?)?
            }
            other => return Err(unsupported(format!("range.type {other:?}"))),
        };
        r.validate()?;
        Ok(r)
    }

    /// The `patternedRecurrence` to write: only the members the pattern type
    /// takes (Graph answers 400 to foreign ones), the range in the series'
    /// zone under its Windows name. Cancelled dates have no place in it: the
    /// caller cancels those occurrences (DELETE on each occurrence id).
    pub fn to_graph(&self) -> Value {
        let mut p = Map::new();
        let names = |days: &[Weekday]| days.iter().map(|d| graph_day(*d)).collect::<Vec<_>>();
        let ty = match &self.pattern {
            Pattern::Daily => "daily",
            Pattern::Weekly { days, first_day_of_week } => {
                p.insert("daysOfWeek".into(), json!(names(days)));
                p.insert("firstDayOfWeek".into(), json!(graph_day(*first_day_of_week)));
                "weekly"
            }
            Pattern::AbsoluteMonthly { day } => {
                p.insert("dayOfMonth".into(), json!(day));
                "absoluteMonthly"
            }
            Pattern::RelativeMonthly { days, index } => {
                p.insert("daysOfWeek".into(), json!(names(days)));
                p.insert("index".into(), json!(index.graph_name()));
                "relativeMonthly"
            }
            Pattern::AbsoluteYearly { day, month } => {
                p.insert("dayOfMonth".into(), json!(day));
                p.insert("month".into(), json!(month));
                "absoluteYearly"
            }
            Pattern::RelativeYearly { days, index, month } => {
                p.insert("daysOfWeek".into(), json!(names(days)));
                p.insert("index".into(), json!(index.graph_name()));
                p.insert("month".into(), json!(month));
                "relativeYearly"
            }
        };
        p.insert("type".into(), json!(ty));
        p.insert("interval".into(), json!(self.interval));
        let mut range = json!({
            "type": "noEnd",
            "startDate": self.start.date().format("%Y-%m-%d").to_string(),
            "recurrenceTimeZone": timezone::graph_name(&self.time_zone),
        });
        if let End::Until(d) = self.end {
            range["type"] = json!("endDate");
            range["endDate"] = json!(d.format("%Y-%m-%d").to_string());
        }
        json!({"pattern": Value::Object(p), "range": range})
    }

    // ---- RFC 5545 (helloHQ C1) -------------------------------------------------

    /// Reads C1 text: one `DTSTART` (with `TZID`, or `VALUE=DATE` for all-day),
    /// one `RRULE`, any number of `EXDATE` lines; CRLF or LF.
    pub fn from_rfc5545(text: &str) -> Result<Recurrence, Unsupported> {
        parse_rfc5545(text, None)
    }

    /// As [`from_rfc5545`](Self::from_rfc5545), for older storage without a
    /// `DTSTART` line (C1): the series starts at `first_start` (the row's
    /// `startOn`) in `default_tz` (the tenant's zone).
    pub fn from_rfc5545_or(
        text: &str,
        first_start: DateTime<Utc>,
        default_tz: &str,
    ) -> Result<Recurrence, Unsupported> {
        parse_rfc5545(text, Some((first_start, default_tz)))
    }

    /// Writes C1 text with CRLF line ends. `UNTIL` is the start of the last
    /// possible occurrence in UTC (C1), a date for all-day series; cancelled
    /// dates go on one `EXDATE` line in the series' zone.
    pub fn to_rfc5545(&self) -> String {
        let mut out = String::new();
        let tz = self.tz();
        if self.all_day {
            let _ = write!(out, "DTSTART;VALUE=DATE:{}\r\n", self.start.format("%Y%m%d"));
        } else {
            let _ = write!(out, "DTSTART;TZID={}:{}\r\n", self.time_zone, self.start.format("%Y%m%dT%H%M%S"));
        }
        out.push_str("RRULE:");
        out.push_str(&self.rrule_body());
        if let End::Until(d) = self.end {
            if self.all_day {
                let _ = write!(out, ";UNTIL={}", d.format("%Y%m%d"));
            } else {
                let _ = write!(out, ";UNTIL={}", self.instant_on(d).format("%Y%m%dT%H%M%SZ"));
            }
        }
        out.push_str("\r\n");
        if !self.exdates.is_empty() {
            let values: Vec<String> = self
                .exdates
                .iter()
                .map(|t| {
                    if self.all_day {
                        t.format("%Y%m%d").to_string()
                    } else {
                        t.with_timezone(&tz).naive_local().format("%Y%m%dT%H%M%S").to_string()
                    }
                })
                .collect();
            if self.all_day {
                let _ = write!(out, "EXDATE;VALUE=DATE:{}\r\n", values.join(","));
            } else {
                let _ = write!(out, "EXDATE;TZID={}:{}\r\n", self.time_zone, values.join(","));
            }
        }
        out
    }

    /// `FREQ=…` up to (not including) `UNTIL`.
    fn rrule_body(&self) -> String {
        let days = |days: &[Weekday]| days.iter().map(|d| rfc_day(*d)).collect::<Vec<_>>().join(",");
        let relative = |days_v: &[Weekday], index: WeekIndex| match days_v {
            [one] => format!("BYDAY={}{}", index.position(), rfc_day(*one)),
            many => format!("BYDAY={};BYSETPOS={}", days(many), index.position()),
        };
        let absolute = |day: u32, shortest: u32| {
            if day <= shortest {
                format!("BYMONTHDAY={day}")
            } else {
                let list: Vec<String> = (shortest..=day).map(|d| d.to_string()).collect();
                format!("BYMONTHDAY={};BYSETPOS=-1", list.join(","))
            }
        };
        let (freq, by) = match &self.pattern {
            Pattern::Daily => ("DAILY", String::new()),
            Pattern::Weekly { days: d, first_day_of_week } => {
                let wkst = if *first_day_of_week == Weekday::Mon {
                    String::new()
                } else {
                    format!(";WKST={}", rfc_day(*first_day_of_week))
                };
                ("WEEKLY", format!("BYDAY={}{wkst}", days(d)))
            }
            Pattern::AbsoluteMonthly { day } => ("MONTHLY", absolute(*day, 28)),
            Pattern::RelativeMonthly { days: d, index } => ("MONTHLY", relative(d, *index)),
            Pattern::AbsoluteYearly { day, month } => {
                ("YEARLY", format!("BYMONTH={month};{}", absolute(*day, min_days(*month))))
            }
            Pattern::RelativeYearly { days: d, index, month } => {
                ("YEARLY", format!("BYMONTH={month};{}", relative(d, *index)))
            }
        };
        if by.is_empty() {
            format!("FREQ={freq};INTERVAL={}", self.interval)
        } else {
            format!("FREQ={freq};INTERVAL={};{by}", self.interval)
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

/// Day `day` of the month, or its last day when the month is shorter (Outlook).
fn clamp_day(year: i32, month: u32, day: u32) -> Option<NaiveDate> {
    (1..=day).rev().find_map(|d| NaiveDate::from_ymd_opt(year, month, d))
}

fn relative_day(year: i32, month: u32, days: &[Weekday], index: WeekIndex) -> Option<NaiveDate> {
    let first = NaiveDate::from_ymd_opt(year, month, 1)?;
    let matching: Vec<NaiveDate> =
        first.iter_days().take_while(|d| d.month() == month).filter(|d| days.contains(&d.weekday())).collect();
    match index {
        WeekIndex::Last => matching.last().copied(),
        other => matching.get((other.position() - 1) as usize).copied(),
    }
}

// ---- RFC 5545 parsing ------------------------------------------------------------

/// One content line: name, parameters, value.
struct Line<'a> {
    name: String,
    params: Vec<(String, &'a str)>,
    value: &'a str,
}

impl Line<'_> {
    fn param(&self, key: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

fn split_line(line: &str) -> Result<Line<'_>, Unsupported> {
    let (head, value) =
        line.split_once(':').ok_or_else(|| unsupported(format!("line {line:?} has no ':' before its value")))?;
    let mut parts = head.split(';');
    let name = parts.next().unwrap_or_default().trim().to_ascii_uppercase();
    let params = parts
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_uppercase(), v.trim().trim_matches('"')))
        .collect();
    Ok(Line { name, params, value: value.trim() })
}

/// A DTSTART/EXDATE/UNTIL value as read: a date, a UTC instant or a local time.
#[derive(Clone, Copy)]
enum Stamp {
    Date(NaiveDate),
    Utc(DateTime<Utc>),
    Local(NaiveDateTime),
}

fn parse_stamp(s: &str) -> Result<Stamp, Unsupported> {
    let s = s.trim();
    if let Some(body) = s.strip_suffix('Z').or_else(|| s.strip_suffix('z')) {
        return NaiveDateTime::parse_from_str(body, "%Y%m%dT%H%M%S")
            .map(|n| Stamp::Utc(n.and_utc()))
            .map_err(|_| unsupported(format!("{s:?} is not a UTC date-time")));
    }
    if s.len() == 8 {
        return NaiveDate::parse_from_str(s, "%Y%m%d")
            .map(Stamp::Date)
            .map_err(|_| unsupported(format!("{s:?} is not a date")));
    }
    NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%S")
        .map(Stamp::Local)
        .map_err(|_| unsupported(format!("{s:?} is not a date-time")))
}

/// Unfolds continuation lines (RFC 5545 §3.1) and drops blank ones.
fn unfold(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for raw in text.split('\n') {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        match (raw.strip_prefix(' ').or_else(|| raw.strip_prefix('\t')), out.last_mut()) {
            (Some(rest), Some(prev)) => prev.push_str(rest),
            _ if raw.trim().is_empty() => {}
            _ => out.push(raw.trim().to_string()),
        }
    }
    out
}

fn parse_rfc5545(text: &str, fallback: Option<(DateTime<Utc>, &str)>) -> Result<Recurrence, Unsupported> {
    let lines = unfold(text);
    let mut dtstart: Option<(NaiveDateTime, bool, String)> = None;
    let mut rrule: Option<String> = None;
    let mut exdate_lines: Vec<(Option<String>, Vec<Stamp>)> = Vec::new();
    for raw in &lines {
        let line = split_line(raw)?;
        match line.name.as_str() {
            "DTSTART" => {
                if dtstart.is_some() {
                    return Err(unsupported("more than one DTSTART"));
                }
                dtstart = Some(match (parse_stamp(line.value)?, line.param("TZID")) {
                    (Stamp::Date(d), _) => (d.and_time(NaiveTime::MIN), true, "UTC".to_string()),
                    (Stamp::Local(n), Some(tzid)) => {
                        let iana = timezone::to_iana(tzid)
                            .ok_or_else(|| unsupported(format!("DTSTART TZID {tzid:?} is not a known zone")))?;
                        (n, false, iana.to_string())
                    }
                    (Stamp::Utc(t), _) => (t.naive_utc(), false, "UTC".to_string()),
                    (Stamp::Local(_), None) => {
                        return Err(unsupported("DTSTART is a floating time; C1 needs a TZID (or VALUE=DATE)"))
                    }
                });
            }
            "RRULE" => {
                if rrule.is_some() {
                    return Err(unsupported("more than one RRULE (Outlook holds one pattern per series)"));
                }
                rrule = Some(line.value.to_string());
            }
            "EXDATE" => {
                let stamps = line.value.split(',').filter(|v| !v.trim().is_empty()).map(parse_stamp);
                exdate_lines.push((line.param("TZID").map(str::to_string), stamps.collect::<Result<_, _>>()?));
            }
            "RDATE" => return Err(unsupported("RDATE (extra dates outside the pattern)")),
            "EXRULE" => return Err(unsupported("EXRULE (excluded patterns)")),
            other => return Err(unsupported(format!("unexpected line {other}"))),
        }
    }
    let (start, all_day, time_zone) = match (dtstart, fallback) {
        (Some(s), _) => s,
        (None, Some((first, tz_name))) => {
            let iana = timezone::to_iana(tz_name)
                .ok_or_else(|| unsupported(format!("default time zone {tz_name:?} is not a known zone")))?;
            (first.with_timezone(&zone(iana)?).naive_local(), false, iana.to_string())
        }
        (None, None) => return Err(unsupported("no DTSTART line")),
    };
    let rule = rrule.ok_or_else(|| unsupported("no RRULE line"))?;
    let mut r = Recurrence {
        pattern: Pattern::Daily,
        interval: 1,
        start,
        all_day,
        end: End::Never,
        time_zone,
        exdates: Vec::new(),
    };
    let limit = parse_rrule(&rule, &mut r)?;
    let tz = r.tz();
    for (tzid, stamps) in exdate_lines {
        let ex_tz = match tzid {
            Some(name) => timezone::to_tz(&name)
                .ok_or_else(|| unsupported(format!("EXDATE TZID {name:?} is not a known zone")))?,
            None => tz,
        };
        for s in stamps {
            r.exdates.push(match s {
                Stamp::Utc(t) => t,
                Stamp::Local(n) => local_to_utc(ex_tz, n),
                Stamp::Date(d) => r.instant_on(d),
            });
        }
    }
    r = r.normalized();
    r.validate()?;
    r.end = match limit {
        Limit::None => End::Never,
        Limit::Count(n) => r.end_for_count(n)?,
        Limit::Until(Stamp::Date(d)) => End::Until(d),
        Limit::Until(stamp) => {
            let until = match stamp {
                Stamp::Utc(t) => t,
                Stamp::Local(n) => local_to_utc(tz, n),
                Stamp::Date(d) => r.instant_on(d),
            };
            let local_day = until.with_timezone(&tz).date_naive();
            // The last local date whose occurrence would start no later than UNTIL.
            let day =
                if r.instant_on(local_day) <= until { local_day } else { local_day.pred_opt().unwrap_or(local_day) };
            End::Until(day)
        }
    };
    r.validate()?;
    Ok(r)
}

enum Limit {
    None,
    Count(u32),
    Until(Stamp),
}

/// One `BYDAY` item: optional ordinal and a weekday.
fn parse_byday(item: &str) -> Result<(Option<i32>, Weekday), Unsupported> {
    let item = item.trim().to_ascii_uppercase();
    let split = item.len().saturating_sub(2);
    let (Some(ord), Some(day)) = (item.get(..split), item.get(split..)) else {
        return Err(unsupported(format!("BYDAY {item:?} is not a weekday")));
    };
    let wd = RFC_DAYS
        .iter()
        .find(|(n, _)| *n == day)
        .map(|(_, d)| *d)
        .ok_or_else(|| unsupported(format!("BYDAY {item:?} is not a weekday")))?;
    if ord.is_empty() {
        return Ok((None, wd));
    }
    let n: i32 = ord.trim_start_matches('+').parse().map_err(|_| unsupported(format!("BYDAY ordinal in {item:?}")))?;
    Ok((Some(n), wd))
}

fn ints(key: &str, v: &str) -> Result<Vec<i32>, Unsupported> {
    v.split(',')
        .map(|x| x.trim().trim_start_matches('+').parse::<i32>().map_err(|_| unsupported(format!("{key}={v}"))))
        .collect()
}

/// The day of a monthly/yearly absolute pattern from `BYMONTHDAY` (+ `BYSETPOS`),
/// `shortest` being the days of the shortest month the rule meets.
fn absolute_day(bymonthday: &[i32], setpos: Option<i32>, shortest: u32, longest: u32) -> Result<u32, Unsupported> {
    match (bymonthday, setpos) {
        ([-1], None) => Ok(longest),
        ([d], None) if *d >= 1 && (*d as u32) <= shortest => Ok(*d as u32),
        ([d], None) if *d >= 1 && (*d as u32) <= longest => Err(unsupported(format!(
            "BYMONTHDAY={d} skips months that are shorter; Outlook moves it to the last day \
             (write BYMONTHDAY={shortest},…,{d};BYSETPOS=-1)"
        ))),
        (list, Some(-1))
            if list.len() >= 2
                && list[0] as u32 == shortest
                && list.windows(2).all(|w| w[1] == w[0] + 1)
                && (*list.last().unwrap_or(&0) as u32) <= longest =>
        {
            Ok(*list.last().unwrap_or(&0) as u32)
        }
        (list, pos) => Err(unsupported(format!(
            "BYMONTHDAY={}{} (Outlook repeats on one day of the month)",
            list.iter().map(i32::to_string).collect::<Vec<_>>().join(","),
            pos.map(|p| format!(";BYSETPOS={p}")).unwrap_or_default()
        ))),
    }
}

/// A relative pattern from `BYDAY` (+ `BYSETPOS`): one ordinal day, or plain days with one position.
fn relative(byday: &[(Option<i32>, Weekday)], setpos: Option<i32>) -> Result<(Vec<Weekday>, WeekIndex), Unsupported> {
    let index = |n: i32| {
        WeekIndex::from_position(n)
            .ok_or_else(|| unsupported(format!("position {n} (Outlook knows first–fourth and last)")))
    };
    match (byday, setpos) {
        ([(Some(n), d)], None) => Ok((vec![*d], index(*n)?)),
        (days, Some(p)) if days.iter().all(|(o, _)| o.is_none()) => {
            Ok((days.iter().map(|(_, d)| *d).collect(), index(p)?))
        }
        (days, None) if days.iter().all(|(o, _)| o.is_none()) => {
            Err(unsupported("BYDAY without a position in a monthly/yearly rule (every such weekday of the month)"))
        }
        _ => Err(unsupported("BYDAY with several ordinals, or an ordinal together with BYSETPOS")),
    }
}

/// Fills `r.pattern`/`r.interval` from an RRULE value; returns its end.
fn parse_rrule(rule: &str, r: &mut Recurrence) -> Result<Limit, Unsupported> {
    let mut freq = None;
    let mut count = None;
    let mut until = None;
    let mut byday: Option<Vec<(Option<i32>, Weekday)>> = None;
    let mut bymonthday: Option<Vec<i32>> = None;
    let mut bymonth: Option<Vec<i32>> = None;
    let mut setpos: Option<Vec<i32>> = None;
    let mut wkst = Weekday::Mon;
    for part in rule.split(';').filter(|p| !p.trim().is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(|| unsupported(format!("RRULE part {part:?}")))?;
        let (k, v) = (k.trim().to_ascii_uppercase(), v.trim());
        match k.as_str() {
            "FREQ" => freq = Some(v.to_ascii_uppercase()),
            "INTERVAL" => {
                r.interval = v.parse().map_err(|_| unsupported(format!("INTERVAL={v}")))?;
            }
            "COUNT" => count = Some(v.parse::<u32>().map_err(|_| unsupported(format!("COUNT={v}")))?),
            "UNTIL" => until = Some(parse_stamp(v)?),
            "BYDAY" => byday = Some(v.split(',').map(parse_byday).collect::<Result<_, _>>()?),
            "BYMONTHDAY" => bymonthday = Some(ints("BYMONTHDAY", v)?),
            "BYMONTH" => bymonth = Some(ints("BYMONTH", v)?),
            "BYSETPOS" => setpos = Some(ints("BYSETPOS", v)?),
            "WKST" => wkst = parse_byday(v)?.1,
            other => {
                return Err(unsupported(format!("RRULE {other} (Outlook series repeat by day, week, month or year)")))
            }
        }
    }
    let limit = match (count, until) {
        (Some(_), Some(_)) => return Err(unsupported("COUNT and UNTIL together (RFC 5545 allows only one)")),
        (Some(n), None) => Limit::Count(n),
        (None, Some(u)) => Limit::Until(u),
        (None, None) => Limit::None,
    };
    let setpos = match setpos.as_deref() {
        None => None,
        Some([p]) => Some(*p),
        Some(many) => return Err(unsupported(format!("BYSETPOS with {} positions", many.len()))),
    };
    let start = r.start.date();
    let month = match bymonth.as_deref() {
        None => None,
        Some([m]) if (1..=12).contains(m) => Some(*m as u32),
        Some(other) => return Err(unsupported(format!("BYMONTH={other:?} (Outlook repeats in one month)"))),
    };
    let plain_days = |what: &str| -> Result<Option<Vec<Weekday>>, Unsupported> {
        match &byday {
            None => Ok(None),
            Some(d) if d.iter().all(|(o, _)| o.is_none()) => Ok(Some(d.iter().map(|(_, w)| *w).collect())),
            Some(_) => Err(unsupported(format!("BYDAY with an ordinal in a {what} rule"))),
        }
    };
    let freq = freq.ok_or_else(|| unsupported("RRULE without FREQ"))?;
    let only = |allowed: &str| -> Result<(), Unsupported> {
        let present = [
            ("BYDAY", byday.is_some()),
            ("BYMONTHDAY", bymonthday.is_some()),
            ("BYMONTH", bymonth.is_some()),
            ("BYSETPOS", setpos.is_some()),
        ];
        match present.iter().find(|(k, p)| *p && !allowed.contains(k)) {
            Some((k, _)) => Err(unsupported(format!("{k} in a FREQ={freq} rule"))),
            None => Ok(()),
        }
    };
    r.pattern = match freq.as_str() {
        "DAILY" => {
            only("BYDAY")?;
            match plain_days("daily")? {
                None => Pattern::Daily,
                // "Every weekday": Outlook writes it as a weekly pattern.
                Some(days) if r.interval == 1 => Pattern::Weekly { days, first_day_of_week: wkst },
                Some(_) => return Err(unsupported("FREQ=DAILY with BYDAY and INTERVAL > 1")),
            }
        }
        "WEEKLY" => {
            only("BYDAY")?;
            let days = plain_days("weekly")?.unwrap_or_else(|| vec![start.weekday()]);
            Pattern::Weekly { days, first_day_of_week: wkst }
        }
        "MONTHLY" => {
            only("BYDAY BYMONTHDAY BYSETPOS")?;
            match (&byday, &bymonthday) {
                (Some(_), Some(_)) => return Err(unsupported("BYDAY together with BYMONTHDAY")),
                (Some(d), None) => {
                    let (days, index) = relative(d, setpos)?;
                    Pattern::RelativeMonthly { days, index }
                }
                (None, Some(md)) => Pattern::AbsoluteMonthly { day: absolute_day(md, setpos, 28, 31)? },
                (None, None) if setpos.is_some() => return Err(unsupported("BYSETPOS without BYDAY or BYMONTHDAY")),
                (None, None) => Pattern::AbsoluteMonthly { day: absolute_day(&[start.day() as i32], None, 28, 31)? },
            }
        }
        "YEARLY" => {
            let month = month.unwrap_or(start.month());
            match (&byday, &bymonthday) {
                (Some(_), Some(_)) => return Err(unsupported("BYDAY together with BYMONTHDAY")),
                (Some(d), None) => {
                    let (days, index) = relative(d, setpos)?;
                    Pattern::RelativeYearly { days, index, month }
                }
                (None, md) => {
                    if md.is_none() && setpos.is_some() {
                        return Err(unsupported("BYSETPOS without BYDAY or BYMONTHDAY"));
                    }
                    let md = md.clone().unwrap_or_else(|| vec![start.day() as i32]);
                    Pattern::AbsoluteYearly { day: absolute_day(&md, setpos, min_days(month), max_days(month))?, month }
                }
            }
        }
        other => return Err(unsupported(format!("FREQ={other} (only DAILY, WEEKLY, MONTHLY, YEARLY)"))),
    };
    Ok(limit)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn local(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M").unwrap()
    }

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    const C1_SAMPLE: &str = "DTSTART;TZID=Europe/Berlin:20260504T100000\r\n\
        RRULE:FREQ=WEEKLY;INTERVAL=1;BYDAY=MO,WE;UNTIL=20261231T225959Z\r\n\
        EXDATE;TZID=Europe/Berlin:20260511T100000,20260518T100000\r\n\
        EXDATE;TZID=Europe/Berlin:20260601T100000\r\n";

    #[test]
    fn the_c1_sample_reads_as_a_weekly_berlin_series() {
        let r = Recurrence::from_rfc5545(C1_SAMPLE).unwrap();
        assert_eq!(
            r.pattern,
            Pattern::Weekly { days: vec![Weekday::Mon, Weekday::Wed], first_day_of_week: Weekday::Mon }
        );
        assert_eq!(r.interval, 1);
        assert_eq!(r.start, local("2026-05-04T10:00"));
        assert_eq!(r.time_zone, "Europe/Berlin");
        assert_eq!(r.end, End::Until(date("2026-12-31")));
        assert_eq!(
            r.exdates,
            vec![utc("2026-05-11T08:00:00Z"), utc("2026-05-18T08:00:00Z"), utc("2026-06-01T08:00:00Z")]
        );
        let text = r.to_rfc5545();
        assert_eq!(
            text,
            "DTSTART;TZID=Europe/Berlin:20260504T100000\r\n\
             RRULE:FREQ=WEEKLY;INTERVAL=1;BYDAY=MO,WE;UNTIL=20261231T090000Z\r\n\
             EXDATE;TZID=Europe/Berlin:20260511T100000,20260518T100000,20260601T100000\r\n"
        );
        assert_eq!(Recurrence::from_rfc5545(&text).unwrap(), r);
        let may = r.occurrences(utc("2026-05-01T00:00:00Z"), utc("2026-05-22T00:00:00Z"));
        assert_eq!(
            may,
            vec![
                utc("2026-05-04T08:00:00Z"),
                utc("2026-05-06T08:00:00Z"),
                utc("2026-05-13T08:00:00Z"),
                utc("2026-05-20T08:00:00Z")
            ]
        );
    }

    #[test]
    fn the_simulator_seed_series_reads_with_lf_and_no_until() {
        let text = "DTSTART;TZID=Europe/Berlin:20260406T100000\nRRULE:FREQ=WEEKLY;INTERVAL=1;BYDAY=MO\nEXDATE;TZID=Europe/Berlin:20260413T100000";
        let r = Recurrence::from_rfc5545(text).unwrap();
        assert_eq!(r.end, End::Never);
        assert_eq!(r.exdates, vec![utc("2026-04-13T08:00:00Z")]);
        assert_eq!(
            r.occurrences(utc("2026-04-01T00:00:00Z"), utc("2026-04-21T00:00:00Z")),
            vec![utc("2026-04-06T08:00:00Z"), utc("2026-04-20T08:00:00Z")]
        );
    }

    #[test]
    fn storage_without_dtstart_uses_the_row_start_and_tenant_zone() {
        let r = Recurrence::from_rfc5545_or("RRULE:FREQ=DAILY;COUNT=3", utc("2026-05-04T08:00:00Z"), "Europe/Berlin")
            .unwrap();
        assert_eq!(r.start, local("2026-05-04T10:00"));
        assert_eq!(r.end, End::Until(date("2026-05-06")));
        assert!(Recurrence::from_rfc5545("RRULE:FREQ=DAILY").is_err());
    }

    #[test]
    fn all_day_series_use_dates() {
        let text = "DTSTART;VALUE=DATE:20260504\r\nRRULE:FREQ=YEARLY;INTERVAL=1;BYMONTH=5;BYMONTHDAY=4;UNTIL=20300504\r\nEXDATE;VALUE=DATE:20270504\r\n";
        let r = Recurrence::from_rfc5545(text).unwrap();
        assert!(r.all_day);
        assert_eq!(r.pattern, Pattern::AbsoluteYearly { day: 4, month: 5 });
        assert_eq!(r.end, End::Until(date("2030-05-04")));
        assert_eq!(r.to_rfc5545(), text);
        assert_eq!(
            r.occurrences(utc("2026-01-01T00:00:00Z"), utc("2031-01-01T00:00:00Z")),
            vec![
                utc("2026-05-04T00:00:00Z"),
                utc("2028-05-04T00:00:00Z"),
                utc("2029-05-04T00:00:00Z"),
                utc("2030-05-04T00:00:00Z")
            ]
        );
    }

    #[test]
    fn count_becomes_the_date_of_the_last_occurrence_and_until_its_start() {
        let text = "DTSTART;TZID=Europe/Berlin:20260504T100000\r\nRRULE:FREQ=WEEKLY;BYDAY=MO,WE;COUNT=5\r\n";
        let r = Recurrence::from_rfc5545(text).unwrap();
        assert_eq!(r.end, End::Until(date("2026-05-18")));
        assert!(r.to_rfc5545().contains("UNTIL=20260518T080000Z"));
        assert_eq!(r.occurrences(utc("2026-01-01T00:00:00Z"), utc("2027-01-01T00:00:00Z")).len(), 5);
    }

    #[test]
    fn unsupported_rules_say_what_does_not_fit() {
        let cases = [
            ("RRULE:FREQ=HOURLY", "FREQ=HOURLY"),
            ("RRULE:FREQ=DAILY;COUNT=3;UNTIL=20261231T000000Z", "COUNT and UNTIL"),
            ("RRULE:FREQ=MONTHLY;BYDAY=MO,TU;BYSETPOS=1,2", "BYSETPOS with 2"),
            ("RRULE:FREQ=MONTHLY;BYMONTHDAY=1,15", "one day of the month"),
            ("RRULE:FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29", "BYMONTHDAY=29 skips"),
            ("RRULE:FREQ=MONTHLY;BYDAY=2MO", ""),
            ("RRULE:FREQ=MONTHLY;BYDAY=5MO", "position 5"),
            ("RRULE:FREQ=MONTHLY;BYDAY=-2FR", "position -2"),
            ("RRULE:FREQ=MONTHLY;BYDAY=MO", "without a position"),
            ("RRULE:FREQ=WEEKLY;BYHOUR=9,10", "BYHOUR"),
            ("RRULE:FREQ=YEARLY;BYMONTH=1,7", "BYMONTH"),
            ("RRULE:FREQ=MONTHLY;BYMONTHDAY=31", "BYMONTHDAY=31 skips"),
            ("RRULE:FREQ=WEEKLY;BYSETPOS=1;BYDAY=MO", "BYSETPOS in a FREQ=WEEKLY"),
            ("RRULE:FREQ=DAILY\r\nRRULE:FREQ=WEEKLY", "more than one RRULE"),
            ("RRULE:FREQ=DAILY;INTERVAL=120", "interval 120"),
        ];
        for (rule, want) in cases {
            let text = format!("DTSTART;TZID=Europe/Berlin:20260504T100000\r\n{rule}\r\n");
            let got = Recurrence::from_rfc5545(&text);
            if want.is_empty() {
                assert!(got.is_ok(), "{rule}: {got:?}");
            } else {
                let err = got.expect_err(rule);
                assert!(err.reason.contains(want), "{rule}: {}", err.reason);
            }
        }
        let floating = Recurrence::from_rfc5545("DTSTART:20260504T100000\r\nRRULE:FREQ=DAILY").unwrap_err();
        assert!(floating.reason.contains("TZID"));
        let rdate =
            Recurrence::from_rfc5545("DTSTART;TZID=UTC:20260504T100000\r\nRRULE:FREQ=DAILY\r\nRDATE:20260601T100000Z");
        assert!(rdate.unwrap_err().reason.contains("RDATE"));
    }

    #[test]
    fn every_weekday_daily_rule_becomes_weekly() {
        let r = Recurrence::from_rfc5545("DTSTART;TZID=UTC:20260504T090000\r\nRRULE:FREQ=DAILY;BYDAY=MO,TU,WE,TH,FR")
            .unwrap();
        assert!(matches!(r.pattern, Pattern::Weekly { ref days, .. } if days.len() == 5));
    }

    #[test]
    fn day_31_falls_on_the_last_day_and_round_trips_through_bysetpos() {
        let text =
            "DTSTART;TZID=UTC:20260131T090000\r\nRRULE:FREQ=MONTHLY;INTERVAL=1;BYMONTHDAY=28,29,30,31;BYSETPOS=-1\r\n";
        let r = Recurrence::from_rfc5545(text).unwrap();
        assert_eq!(r.pattern, Pattern::AbsoluteMonthly { day: 31 });
        assert_eq!(r.to_rfc5545(), text);
        let got = r.occurrences(utc("2026-01-01T00:00:00Z"), utc("2026-05-01T00:00:00Z"));
        assert_eq!(
            got,
            vec![
                utc("2026-01-31T09:00:00Z"),
                utc("2026-02-28T09:00:00Z"),
                utc("2026-03-31T09:00:00Z"),
                utc("2026-04-30T09:00:00Z")
            ]
        );
        let last =
            Recurrence::from_rfc5545("DTSTART;TZID=UTC:20260131T090000\r\nRRULE:FREQ=MONTHLY;BYMONTHDAY=-1").unwrap();
        assert_eq!(last.pattern, Pattern::AbsoluteMonthly { day: 31 });
    }

    // ---- Graph

    #[test]
    fn graph_md_sample_reads_in_the_recurrence_zone() {
        let pr = json!({"pattern":{"type":"weekly","interval":1,"daysOfWeek":["monday","wednesday"],"firstDayOfWeek":"monday"},
              "range":{"type":"endDate","startDate":"2026-05-04","endDate":"2026-12-31","recurrenceTimeZone":"W. Europe Standard Time"}});
        let r = Recurrence::from_graph(&pr, utc("2026-05-04T08:00:00Z"), "UTC").unwrap();
        assert_eq!(r.time_zone, "Europe/Berlin");
        assert_eq!(r.start, local("2026-05-04T10:00"));
        assert_eq!(r.end, End::Until(date("2026-12-31")));
        assert_eq!(r.to_graph(), pr);
    }

    #[test]
    fn graph_no_end_quirk_defaults_are_ignored() {
        // As Graph (and our simulator) returns a noEnd weekly series.
        let pr = json!({"pattern":{"type":"weekly","interval":2,"month":0,"dayOfMonth":0,"daysOfWeek":["tuesday"],"firstDayOfWeek":"sunday","index":"first"},
              "range":{"type":"noEnd","startDate":"2026-03-03","endDate":"0001-01-01","recurrenceTimeZone":"Pacific Standard Time","numberOfOccurrences":0}});
        let r = Recurrence::from_graph(&pr, utc("2026-03-03T17:30:00Z"), "UTC").unwrap();
        assert_eq!(r.pattern, Pattern::Weekly { days: vec![Weekday::Tue], first_day_of_week: Weekday::Sun });
        assert_eq!(r.end, End::Never);
        assert_eq!(r.time_zone, "America/Los_Angeles");
        assert_eq!(r.start, local("2026-03-03T09:30"));
        assert_eq!(
            r.to_rfc5545(),
            "DTSTART;TZID=America/Los_Angeles:20260303T093000\r\nRRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=TU;WKST=SU\r\n"
        );
    }

    #[test]
    fn graph_numbered_relative_monthly_ends_on_its_last_occurrence() {
        let pr = json!({"pattern":{"type":"relativeMonthly","interval":1,"daysOfWeek":["friday"],"index":"last"},
              "range":{"type":"numbered","startDate":"2026-05-29","numberOfOccurrences":3}});
        let r = Recurrence::from_graph(&pr, utc("2026-05-29T12:00:00Z"), "W. Europe Standard Time").unwrap();
        assert_eq!(r.end, End::Until(date("2026-07-31")));
        assert_eq!(r.to_graph()["range"]["type"], "endDate");
        assert_eq!(r.to_rfc5545(), "DTSTART;TZID=Europe/Berlin:20260529T140000\r\nRRULE:FREQ=MONTHLY;INTERVAL=1;BYDAY=-1FR;UNTIL=20260731T120000Z\r\n");
    }

    #[test]
    fn graph_patterns_that_do_not_fit_are_refused() {
        let start = utc("2026-05-04T08:00:00Z");
        let bad = [
            (
                json!({"pattern":{"type":"hourly","interval":1},"range":{"type":"noEnd","startDate":"2026-05-04"}}),
                "hourly",
            ),
            (
                json!({"pattern":{"type":"weekly","interval":1,"daysOfWeek":[]},"range":{"type":"noEnd","startDate":"2026-05-04"}}),
                "without days",
            ),
            (
                json!({"pattern":{"type":"daily","interval":1},"range":{"type":"numbered","startDate":"2026-05-04","numberOfOccurrences":0}}),
                "0 occurrences",
            ),
            (
                json!({"pattern":{"type":"daily","interval":1},"range":{"type":"noEnd","startDate":"2026-05-04","recurrenceTimeZone":"tzone://Microsoft/Custom"}}),
                "IANA",
            ),
            (
                json!({"pattern":{"type":"daily","interval":1},"range":{"type":"endDate","startDate":"2026-05-04","endDate":"2026-05-01"}}),
                "before",
            ),
        ];
        for (pr, want) in bad {
            let err = Recurrence::from_graph(&pr, start, "UTC").expect_err(want);
            assert!(err.reason.contains(want), "{want}: {}", err.reason);
        }
    }

    #[test]
    fn weekly_0900_stays_0900_in_berlin_across_both_dst_changes() {
        // Mondays from March to November 2026: DST starts 29 March, ends 25 October.
        let r = Recurrence {
            pattern: Pattern::Weekly { days: vec![Weekday::Mon], first_day_of_week: Weekday::Mon },
            interval: 1,
            start: local("2026-03-16T09:00"),
            all_day: false,
            end: End::Until(date("2026-11-09")),
            time_zone: "Europe/Berlin".into(),
            exdates: vec![],
        };
        let all = r.occurrences(utc("2026-01-01T00:00:00Z"), utc("2027-01-01T00:00:00Z"));
        assert_eq!(all.first(), Some(&utc("2026-03-16T08:00:00Z")));
        assert!(all.contains(&utc("2026-03-23T08:00:00Z")), "last Monday of winter time");
        assert!(all.contains(&utc("2026-03-30T07:00:00Z")), "first Monday of summer time");
        assert!(all.contains(&utc("2026-10-19T07:00:00Z")), "last Monday of summer time");
        assert!(all.contains(&utc("2026-10-26T08:00:00Z")), "first Monday of winter time");
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        for t in &all {
            assert_eq!(t.with_timezone(&tz).format("%H:%M").to_string(), "09:00");
        }
        assert_eq!(all.len(), 35);
    }

    #[test]
    fn a_daily_0230_in_the_spring_gap_moves_forward_like_exchange() {
        let r =
            Recurrence::from_rfc5545("DTSTART;TZID=Europe/Berlin:20260328T023000\r\nRRULE:FREQ=DAILY;COUNT=3").unwrap();
        let all = r.occurrences(utc("2026-03-01T00:00:00Z"), utc("2026-04-01T00:00:00Z"));
        // 28 March 02:30 CET, 29 March 03:30 CEST (02:30 does not exist), 30 March 02:30 CEST.
        assert_eq!(all, vec![utc("2026-03-28T01:30:00Z"), utc("2026-03-29T01:30:00Z"), utc("2026-03-30T00:30:00Z")]);
        // The window is half-open.
        assert_eq!(r.occurrences(utc("2026-03-28T01:30:00Z"), utc("2026-03-29T01:30:00Z")).len(), 1);
    }

    // ---- properties

    fn weekday() -> impl Strategy<Value = Weekday> {
        (0usize..7).prop_map(|i| RFC_DAYS[i].1)
    }

    fn days() -> impl Strategy<Value = Vec<Weekday>> {
        prop::collection::vec(weekday(), 1..4)
    }

    fn index() -> impl Strategy<Value = WeekIndex> {
        (0usize..5).prop_map(|i| WeekIndex::ALL[i])
    }

    pub(crate) fn pattern() -> impl Strategy<Value = Pattern> {
        prop_oneof![
            Just(Pattern::Daily),
            (days(), weekday()).prop_map(|(days, first_day_of_week)| Pattern::Weekly { days, first_day_of_week }),
            (1u32..=31).prop_map(|day| Pattern::AbsoluteMonthly { day }),
            (days(), index()).prop_map(|(days, index)| Pattern::RelativeMonthly { days, index }),
            (1u32..=12, 1u32..=31)
                .prop_map(|(month, d)| Pattern::AbsoluteYearly { day: d.min(max_days(month)), month }),
            (days(), index(), 1u32..=12).prop_map(|(days, index, month)| Pattern::RelativeYearly {
                days,
                index,
                month
            }),
        ]
    }

    const ZONES: [&str; 6] =
        ["Europe/Berlin", "UTC", "America/New_York", "Asia/Tokyo", "Australia/Sydney", "Europe/London"];

    /// Series as the sides create them: starting on an occurrence, at a time
    /// outside any DST gap, with some cancelled occurrences.
    pub(crate) fn recurrence() -> impl Strategy<Value = Recurrence> {
        (
            pattern(),
            1u32..=3,
            0i64..700,
            6u32..=20,
            prop::bool::ANY,
            0usize..ZONES.len(),
            0u32..3,
            prop::bool::ANY,
            prop::collection::vec(0usize..12, 0..3),
        )
            .prop_filter_map(
                "pattern has no occurrence",
                |(pattern, interval, offset, hour, all_day, z, end_kind, half, ex)| {
                    let base = NaiveDate::from_ymd_opt(2026, 1, 1)? + Duration::days(offset);
                    let mut r = Recurrence {
                        pattern,
                        interval,
                        start: base.and_hms_opt(hour, if half { 30 } else { 0 }, 0)?,
                        all_day,
                        end: End::Never,
                        time_zone: ZONES[z].to_string(),
                        exdates: vec![],
                    }
                    .normalized();
                    // Move the start onto the pattern's first occurrence.
                    let first = *r.dates(base + Duration::days(800), 1).first()?;
                    r.start = first.and_time(r.start.time());
                    let dates = r.dates(first + Duration::days(3000), 12);
                    if end_kind > 0 {
                        r.end = End::Until(*dates.get((end_kind as usize * 4).min(dates.len() - 1))?);
                    }
                    r.exdates = ex.iter().filter_map(|i| dates.get(*i)).map(|d| r.instant_on(*d)).collect();
                    Some(r.normalized())
                },
            )
    }

    fn rrule_oracle(r: &Recurrence, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let set: rrule::RRuleSet =
            r.to_rfc5545().parse().unwrap_or_else(|e| panic!("rrule refused {:?}: {e}", r.to_rfc5545()));
        set.all(3000).dates.into_iter().map(|d| d.with_timezone(&Utc)).filter(|t| *t < to).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn rfc5545_text_round_trips(r in recurrence()) {
            let text = r.to_rfc5545();
            let back = Recurrence::from_rfc5545(&text).map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
            prop_assert_eq!(&back, &r);
            prop_assert_eq!(back.to_rfc5545(), text);
        }

        #[test]
        fn graph_round_trips(r in recurrence().prop_filter("Graph series are timed here", |r| !r.all_day)) {
            let master = r.instant_on(r.start.date());
            let mut back = Recurrence::from_graph(&r.to_graph(), master, "UTC").map_err(|e| TestCaseError::fail(e.to_string()))?;
            back.exdates = r.exdates.clone(); // Graph v1.0 lists no cancelled dates.
            prop_assert_eq!(back, r);
        }

        #[test]
        fn occurrences_agree_with_the_rrule_crate(r in recurrence()) {
            let to = r.instant_on(r.start.date()) + Duration::days(3 * 366);
            let ours = r.occurrences(r.instant_on(r.start.date()) - Duration::days(1), to);
            let theirs = rrule_oracle(&r, to);
            prop_assert_eq!(ours, theirs, "{}", r.to_rfc5545());
        }

        #[test]
        fn numbered_series_end_on_their_nth_occurrence(r in recurrence().prop_filter("timed", |r| !r.all_day), n in 1u32..40) {
            let mut open = r.clone();
            open.end = End::Never;
            open.exdates.clear();
            let mut pr = open.to_graph();
            pr["range"] = json!({"type": "numbered", "startDate": open.start.date().format("%Y-%m-%d").to_string(),
                                 "numberOfOccurrences": n, "recurrenceTimeZone": timezone::graph_name(&open.time_zone)});
            let master = open.instant_on(open.start.date());
            let got = Recurrence::from_graph(&pr, master, "UTC").map_err(|e| TestCaseError::fail(e.to_string()))?;
            let nth = open.nth_occurrence(n).ok_or_else(|| TestCaseError::fail("no nth occurrence"))?;
            prop_assert_eq!(got.end, End::Until(nth.with_timezone(&open.tz()).date_naive()));
            let all = got.occurrences(master, master + Duration::days(150_000));
            prop_assert_eq!(all.len(), n as usize);
            prop_assert_eq!(all.last().copied(), Some(nth));
            // And the same through COUNT in the helloHQ text.
            let text = open.to_rfc5545();
            let dtstart = text.lines().next().unwrap_or_default();
            let rule = format!("{dtstart}\r\nRRULE:{};COUNT={n}\r\n", open.rrule_body());
            let from_text = Recurrence::from_rfc5545(&rule).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(from_text.end, got.end);
        }
    }
}
