//! The query language of helloHQ list endpoints: `filter`/`$filter`,
//! `orderby`/`$orderby`, `top`/`skip`, `expand` (reference A3). Evaluated on
//! the rendered JSON of each row, so v1 (PascalCase) and v2 (camelCase) share
//! one implementation; field names match case-insensitively, like OData on
//! SQL Server. This module owns parsing and evaluation only and must never
//! touch the simulator's state.

use std::cmp::Ordering;
use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::Value;

/// Page size default and maximum (A3).
pub const MAX_TOP: usize = 1000;

/// Why a query string was refused (answered as 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {param}: {message}")]
pub struct QueryError {
    pub param: &'static str,
    pub message: String,
}

fn err(param: &'static str, message: impl Into<String>) -> QueryError {
    QueryError { param, message: message.into() }
}

/// The list options of one request, both spellings folded together.
#[derive(Debug, Default, Clone)]
pub struct ListQuery {
    pub filter: Option<Expr>,
    pub orderby: Vec<(Vec<String>, bool)>,
    pub top: usize,
    pub skip: usize,
    pub expand: Vec<String>,
    pub count: bool,
}

impl ListQuery {
    pub fn parse(params: &HashMap<String, String>) -> Result<ListQuery, QueryError> {
        let get = |name: &str| {
            params.iter().find(|(k, _)| k.trim_start_matches('$').eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
        };
        let filter = match get("filter").map(str::trim).filter(|s| !s.is_empty()) {
            Some(f) => Some(parse_filter(f)?),
            None => None,
        };
        let orderby = match get("orderby") {
            Some(o) => parse_orderby(o)?,
            None => Vec::new(),
        };
        let top = match get("top") {
            Some(t) => t.trim().parse::<usize>().map_err(|_| err("top", "not a non-negative integer"))?.min(MAX_TOP),
            None => MAX_TOP,
        };
        let skip = match get("skip") {
            Some(s) => s.trim().parse::<usize>().map_err(|_| err("skip", "not a non-negative integer"))?,
            None => 0,
        };
        let expand = get("expand")
            .map(|e| e.split(',').map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        let count = get("count").is_some_and(|c| c.trim().eq_ignore_ascii_case("true"));
        Ok(ListQuery { filter, orderby, top, skip, expand, count })
    }

    pub fn expands(&self, nav: &str) -> bool {
        self.expand.iter().any(|e| e.eq_ignore_ascii_case(nav))
    }

    /// Filters and sorts `rows`; returns the total and the requested page.
    pub fn apply(&self, mut rows: Vec<Value>) -> (usize, Vec<Value>) {
        if let Some(f) = &self.filter {
            rows.retain(|r| f.matches(r));
        }
        if !self.orderby.is_empty() {
            rows.sort_by(|a, b| {
                for (path, desc) in &self.orderby {
                    let o = compare_values(lookup(a, path), lookup(b, path));
                    let o = if *desc { o.reverse() } else { o };
                    if o != Ordering::Equal {
                        return o;
                    }
                }
                Ordering::Equal
            });
        }
        let total = rows.len();
        let page = rows.into_iter().skip(self.skip).take(self.top).collect();
        (total, page)
    }
}

fn parse_orderby(s: &str) -> Result<Vec<(Vec<String>, bool)>, QueryError> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let mut words = part.split_whitespace();
        let field = words.next().ok_or_else(|| err("orderby", "empty sort key"))?;
        let desc = match words.next().map(|w| w.to_ascii_lowercase()) {
            None => false,
            Some(w) if w == "asc" => false,
            Some(w) if w == "desc" => true,
            Some(w) => return Err(err("orderby", format!("unknown direction {w}"))),
        };
        if words.next().is_some() {
            return Err(err("orderby", "trailing input"));
        }
        out.push((field.split('/').map(str::to_string).collect(), desc));
    }
    Ok(out)
}

/// A parsed filter expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cmp(Operand, CmpOp, Operand),
    Func(String, Operand, Operand),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Field(Vec<String>),
    Lit(Value),
}

impl Operand {
    fn eval<'a>(&'a self, row: &'a Value) -> Option<&'a Value> {
        match self {
            Operand::Field(p) => lookup(row, p),
            Operand::Lit(v) => Some(v),
        }
    }
}

impl Expr {
    pub fn matches(&self, row: &Value) -> bool {
        match self {
            Expr::And(a, b) => a.matches(row) && b.matches(row),
            Expr::Or(a, b) => a.matches(row) || b.matches(row),
            Expr::Not(a) => !a.matches(row),
            Expr::Cmp(l, op, r) => {
                let o = compare_values(l.eval(row), r.eval(row));
                let null_involved = is_null(l.eval(row)) || is_null(r.eval(row));
                match op {
                    CmpOp::Eq => o == Ordering::Equal,
                    CmpOp::Ne => o != Ordering::Equal,
                    // SQL semantics: ordering against null is never true.
                    _ if null_involved => false,
                    CmpOp::Gt => o == Ordering::Greater,
                    CmpOp::Ge => o != Ordering::Less,
                    CmpOp::Lt => o == Ordering::Less,
                    CmpOp::Le => o != Ordering::Greater,
                }
            }
            Expr::Func(name, a, b) => {
                let (Some(Value::String(a)), Some(Value::String(b))) = (a.eval(row), b.eval(row)) else {
                    return false;
                };
                let (a, b) = (a.to_lowercase(), b.to_lowercase());
                match name.as_str() {
                    "contains" | "substringof" => a.contains(&b),
                    "startswith" => a.starts_with(&b),
                    "endswith" => a.ends_with(&b),
                    _ => false,
                }
            }
        }
    }
}

fn is_null(v: Option<&Value>) -> bool {
    matches!(v, None | Some(Value::Null))
}

/// Case-insensitive path lookup (`projectStatus/type`).
pub fn lookup<'a>(row: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = row;
    for seg in path {
        let obj = cur.as_object()?;
        cur =
            obj.get(seg.as_str()).or_else(|| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(seg)).map(|(_, v)| v))?;
    }
    Some(cur)
}

/// Parses the date-time shapes helloHQ uses: RFC 3339, naive local
/// date-times (`…Date` fields, read as UTC for ordering) and plain dates.
pub fn parse_instant(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, f) {
            return Some(n.and_utc());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|n| n.and_utc())
}

/// Total order used by filters and `orderby`: null first, then numbers,
/// booleans, date-times (compared as instants) and strings (case-insensitive).
pub fn compare_values(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    let a = a.unwrap_or(&Value::Null);
    let b = b.unwrap_or(&Value::Null);
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        (Value::Number(x), Value::Number(y)) => {
            x.as_f64().unwrap_or(0.0).partial_cmp(&y.as_f64().unwrap_or(0.0)).unwrap_or(Ordering::Equal)
        }
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::String(x), Value::String(y)) => match (
            looks_like_date(x).then(|| parse_instant(x)).flatten(),
            looks_like_date(y).then(|| parse_instant(y)).flatten(),
        ) {
            (Some(dx), Some(dy)) => dx.cmp(&dy),
            _ => x.to_lowercase().cmp(&y.to_lowercase()),
        },
        // Enum fields stored as names may be compared with their number.
        (Value::String(x), Value::Number(y)) | (Value::Number(y), Value::String(x)) => {
            let o = x.parse::<f64>().ok().and_then(|xf| xf.partial_cmp(&y.as_f64().unwrap_or(0.0)));
            let o = o.unwrap_or(Ordering::Greater);
            if matches!(a, Value::Number(_)) {
                o.reverse()
            } else {
                o
            }
        }
        _ => a.to_string().cmp(&b.to_string()),
    }
}

fn looks_like_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 10 && b[4] == b'-' && b[7] == b'-' && b[..4].iter().all(u8::is_ascii_digit)
}

// ---- filter parser -------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    Comma,
    Word(String),
    Str(String),
    DateTime(String),
}

fn tokenize(s: &str) -> Result<Vec<Tok>, QueryError> {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            '\'' => {
                let (text, next) = quoted(&chars, i)?;
                out.push(Tok::Str(text));
                i = next;
            }
            _ => {
                let start = i;
                while i < chars.len() && !chars[i].is_whitespace() && !matches!(chars[i], '(' | ')' | ',' | '\'') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                if i < chars.len() && chars[i] == '\'' && word.eq_ignore_ascii_case("datetime") {
                    let (text, next) = quoted(&chars, i)?;
                    out.push(Tok::DateTime(text));
                    i = next;
                } else {
                    out.push(Tok::Word(word));
                }
            }
        }
    }
    Ok(out)
}

fn quoted(chars: &[char], open: usize) -> Result<(String, usize), QueryError> {
    let mut i = open + 1;
    let mut text = String::new();
    loop {
        match chars.get(i) {
            None => return Err(err("filter", "unterminated string literal")),
            Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                text.push('\'');
                i += 2;
            }
            Some('\'') => return Ok((text, i + 1)),
            Some(c) => {
                text.push(*c);
                i += 1;
            }
        }
    }
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

pub fn parse_filter(s: &str) -> Result<Expr, QueryError> {
    let mut p = Parser { toks: tokenize(s)?, pos: 0 };
    let e = p.or()?;
    if p.pos != p.toks.len() {
        return Err(err("filter", format!("unexpected {:?}", p.toks[p.pos])));
    }
    Ok(e)
}

impl Parser {
    fn peek_word(&self, w: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Word(x)) if x.eq_ignore_ascii_case(w))
    }

    fn or(&mut self) -> Result<Expr, QueryError> {
        let mut e = self.and()?;
        while self.peek_word("or") {
            self.pos += 1;
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, QueryError> {
        let mut e = self.unary()?;
        while self.peek_word("and") {
            self.pos += 1;
            e = Expr::And(Box::new(e), Box::new(self.unary()?));
        }
        Ok(e)
    }

    fn unary(&mut self) -> Result<Expr, QueryError> {
        if self.peek_word("not") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.toks.get(self.pos) == Some(&Tok::LParen) {
            self.pos += 1;
            let e = self.or()?;
            if self.toks.get(self.pos) != Some(&Tok::RParen) {
                return Err(err("filter", "missing )"));
            }
            self.pos += 1;
            return Ok(e);
        }
        // function call: name ( a , b )
        if let (Some(Tok::Word(name)), Some(Tok::LParen)) = (self.toks.get(self.pos), self.toks.get(self.pos + 1)) {
            let name = name.to_ascii_lowercase();
            self.pos += 2;
            let a = self.operand()?;
            if self.toks.get(self.pos) != Some(&Tok::Comma) {
                return Err(err("filter", format!("{name} takes two arguments")));
            }
            self.pos += 1;
            let b = self.operand()?;
            if self.toks.get(self.pos) != Some(&Tok::RParen) {
                return Err(err("filter", "missing )"));
            }
            self.pos += 1;
            // substringof('x', Field) has its arguments the other way round.
            return Ok(if name == "substringof" { Expr::Func(name, b, a) } else { Expr::Func(name, a, b) });
        }
        let left = self.operand()?;
        let op = match self.toks.get(self.pos) {
            Some(Tok::Word(w)) => match w.to_ascii_lowercase().as_str() {
                "eq" => CmpOp::Eq,
                "ne" => CmpOp::Ne,
                "gt" => CmpOp::Gt,
                "ge" => CmpOp::Ge,
                "lt" => CmpOp::Lt,
                "le" => CmpOp::Le,
                other => return Err(err("filter", format!("unknown operator {other}"))),
            },
            other => return Err(err("filter", format!("expected an operator, found {other:?}"))),
        };
        self.pos += 1;
        let right = self.operand()?;
        Ok(Expr::Cmp(left, op, right))
    }

    fn operand(&mut self) -> Result<Operand, QueryError> {
        let tok = self.toks.get(self.pos).cloned().ok_or_else(|| err("filter", "unexpected end"))?;
        self.pos += 1;
        Ok(match tok {
            Tok::Str(s) => Operand::Lit(Value::String(s)),
            Tok::DateTime(s) => {
                parse_instant(&s).ok_or_else(|| err("filter", format!("bad datetime literal {s}")))?;
                Operand::Lit(Value::String(s))
            }
            Tok::Word(w) => {
                let lower = w.to_ascii_lowercase();
                if lower == "true" || lower == "false" {
                    Operand::Lit(Value::Bool(lower == "true"))
                } else if lower == "null" {
                    Operand::Lit(Value::Null)
                } else if let Ok(i) = w.parse::<i64>() {
                    Operand::Lit(Value::from(i))
                } else if let Ok(f) = w.parse::<f64>() {
                    Operand::Lit(Value::from(f))
                } else if looks_like_date(&w) && parse_instant(&w).is_some() {
                    // v1 style: `UpdatedOn gt 2018-01-26T18:15:00+01:00`
                    Operand::Lit(Value::String(w))
                } else if w.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '/') {
                    Operand::Field(w.split('/').map(str::to_string).collect())
                } else {
                    return Err(err("filter", format!("cannot read {w}")));
                }
            }
            other => return Err(err("filter", format!("unexpected {other:?}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(f: &str, row: Value) -> bool {
        parse_filter(f).unwrap().matches(&row)
    }

    #[test]
    fn datetime_literals_compare_as_instants() {
        let row = json!({"updatedOn": "2026-05-04T08:00:00.500Z"});
        assert!(m("updatedOn gt datetime'2026-05-04T08:00:00Z'", row.clone()));
        assert!(!m("updatedOn gt datetime'2026-05-04T10:00:01+02:00'", row.clone()));
        assert!(m("UpdatedOn ge 2026-05-04", row.clone()));
        assert!(!m("updatedOn lt 2026-05-04T08:00:00.500Z", row));
    }

    #[test]
    fn boolean_logic_and_precedence() {
        let row = json!({"isAppointment": true, "projectId": 3, "name": "Kick-off"});
        assert!(m("isAppointment eq true and projectId eq 3", row.clone()));
        assert!(m("isAppointment eq false or projectId eq 3 and name eq 'kick-off'", row.clone()));
        assert!(!m("not (isAppointment eq true)", row.clone()));
        assert!(m("projectId ne null and contains(name,'off')", row.clone()));
        assert!(!m("missing gt 3", row));
    }

    #[test]
    fn string_literals_unescape_quotes() {
        assert!(m("name eq 'O''Brien'", json!({"name": "O'Brien"})));
    }

    #[test]
    fn nested_paths_and_orderby_and_paging() {
        let rows: Vec<Value> = (1..=5).map(|i| json!({"id": i, "a": {"b": i % 2}})).collect();
        let q = ListQuery {
            filter: Some(parse_filter("a/b eq 1").unwrap()),
            orderby: parse_orderby("id desc").unwrap(),
            top: 2,
            skip: 1,
            ..Default::default()
        };
        let (total, page) = q.apply(rows);
        assert_eq!(total, 3);
        assert_eq!(page, vec![json!({"id": 3, "a": {"b": 1}}), json!({"id": 1, "a": {"b": 1}})]);
    }

    #[test]
    fn malformed_filters_are_refused() {
        for f in ["name eq", "name xx 'a'", "(a eq 1", "a eq 'open", "updatedOn gt datetime'nope'"] {
            assert!(parse_filter(f).is_err(), "{f}");
        }
    }
}
