//! Which Graph user a mailbox is (issue #19 item 8).
//!
//! helloHQ knows a user by their work email; Graph addresses a user by
//! object id or user principal name, and the UPN is often not the email
//! address. So each mailbox's email is resolved once, at provisioning, to
//! the Graph user's object id: first by `mail`, then by the user's
//! secondary SMTP addresses (`proxyAddresses`). The id is stored with the
//! mailbox and every request and subscription for the mailbox is keyed by
//! it (the Graph client rewrites `/users/{email}/…`). A user who does not
//! resolve is recorded with the reason and the fix (the connection test and
//! the status page show it), the mailbox is left alone, and the lookup is
//! tried again only after a growing delay or when the tenant's record
//! changes (new credentials, a connection test): never every pass.

use chrono::{DateTime, Duration, Utc};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use serde_json::Value;

use crate::connectors::graph::{GraphClient, GraphError};
use crate::store::GraphUser;

/// What looking up an email in the tenant's directory found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The Graph user's object id.
    Found(String),
    /// No single user has the address: why, with the fix. Recorded, shown,
    /// retried only later ([`due`]).
    Unresolved(String),
}

/// What is percent-encoded in a `$filter` value (spaces as `%20`, never `+`).
const QUERY_VALUE: &AsciiSet =
    &CONTROLS.add(b' ').add(b'"').add(b'#').add(b'%').add(b'&').add(b'+').add(b'<').add(b'>').add(b'?').add(b'`');

/// An OData string literal: single quotes doubled
/// (https://learn.microsoft.com/graph/query-parameters, "Encoding query parameters").
pub fn odata_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The two lookups, in order: by `mail`, then by a secondary SMTP address.
/// Both are default (not advanced) queries on `users`: `eq` on `mail` and
/// `any(…eq…)` on `proxyAddresses` need neither `ConsistencyLevel` nor
/// `$count` (https://learn.microsoft.com/graph/aad-advanced-queries).
pub fn lookup_filters(email: &str) -> [String; 2] {
    [
        format!("mail eq {}", odata_literal(email)),
        format!("proxyAddresses/any(p:p eq {})", odata_literal(&format!("smtp:{email}"))),
    ]
}

/// The request path (relative to the Graph base) of one lookup, built
/// through `url::Url` with the filter percent-encoded.
pub fn lookup_path(filter: &str) -> String {
    let mut url = url::Url::parse("https://graph.invalid/users").expect("a fixed, valid URL");
    url.set_query(Some(&format!(
        "$filter={}&$select=id,mail,userPrincipalName",
        utf8_percent_encode(filter, QUERY_VALUE)
    )));
    format!("{}?{}", url.path(), url.query().unwrap_or_default())
}

/// Resolves `email` to a Graph user. `Err` only for what may pass by
/// itself (throttling, an unavailable service): the caller retries soon.
pub async fn resolve(graph: &GraphClient, email: &str) -> Result<Resolution, GraphError> {
    for (i, filter) in lookup_filters(email).iter().enumerate() {
        let found = match graph.get(&lookup_path(filter)).await {
            Ok(v) => v,
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => return Ok(Resolution::Unresolved(refused(email, &e))),
        };
        let users: Vec<&Value> =
            found.get("value").and_then(Value::as_array).map(|a| a.iter().collect()).unwrap_or_default();
        match users.as_slice() {
            [] => continue,
            [one] => {
                return Ok(match one.get("id").and_then(Value::as_str).filter(|s| !s.is_empty()) {
                    Some(id) => Resolution::Found(id.to_string()),
                    None => {
                        Resolution::Unresolved(format!("Graph answered the lookup of {email} without the user's id"))
                    }
                })
            }
            many => {
                let by = if i == 0 { "mail" } else { "proxy address" };
                let upns: Vec<&str> =
                    many.iter().filter_map(|u| u.get("userPrincipalName").and_then(Value::as_str)).collect();
                return Ok(Resolution::Unresolved(format!(
                    "{} Graph users have the {by} {email} ({}); fix: make the address unique in Exchange, or enter \
                     the sign-in name (UPN) of the right user as work email in helloHQ",
                    many.len(),
                    upns.join(", ")
                )));
            }
        }
    }
    Ok(Resolution::Unresolved(format!(
        "no Graph user has {email} as mail or proxy address; fix: enter the user's mailbox address (or sign-in \
         name) as work email in helloHQ, or add {email} as an address of the user's mailbox in Exchange; hqsync \
         looks again after the next change of the tenant or within a day"
    )))
}

/// Why a lookup Graph refused did not resolve, with the fix.
fn refused(email: &str, e: &GraphError) -> String {
    match e {
        GraphError::Status { status: 403, .. } | GraphError::MailboxDenied { .. } => format!(
            "looking up {email} in the directory was refused ({e}); fix: grant the app the application permission \
             User.Read.All with admin consent (docs/onboarding.md), then run the connection test"
        ),
        _ => format!("looking up {email} in the directory failed: {e}; fix: run the connection test"),
    }
}

/// The first retry of an unresolved user waits this long; each further
/// one twice as long as the one before, up to [`MAX_DELAY`].
pub const FIRST_DELAY: Duration = Duration::minutes(15);
/// The longest wait between two lookups of an unresolved user.
pub const MAX_DELAY: Duration = Duration::hours(24);

/// How long after its `attempts`-th failed lookup a user is looked up again.
pub fn delay_after(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    (FIRST_DELAY * 2_i32.pow(doublings)).min(MAX_DELAY)
}

/// True when the mailbox's Graph user should be looked up now: never
/// looked up (or the lookup was never recorded), or unresolved and either
/// the tenant's record changed since the last lookup (`tenant_updated`:
/// new credentials or permissions, a connection test) or its delay passed.
/// A resolved user is never looked up again.
pub fn due(user: Option<&GraphUser>, tenant_updated: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    let Some(u) = user else { return true };
    if u.id.is_some() {
        return false;
    }
    match u.checked_at {
        None => true,
        Some(at) => tenant_updated > at || now - at >= delay_after(u.attempts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_quote_the_address_as_an_odata_literal() {
        let [mail, proxy] = lookup_filters("o'brien@example.com");
        assert_eq!(mail, "mail eq 'o''brien@example.com'");
        assert_eq!(proxy, "proxyAddresses/any(p:p eq 'smtp:o''brien@example.com')");
        assert_eq!(
            lookup_path(&mail),
            "/users?$filter=mail%20eq%20%27o%27%27brien@example.com%27&$select=id,mail,userPrincipalName",
            "url::Url encodes the quotes of a special scheme's query"
        );
        // `&`, `#` and `+` cannot end the filter or the query early.
        let p = lookup_path("mail eq 'a+b&c#d@example.com'");
        assert!(p.contains("a%2Bb%26c%23d@example.com"), "{p}");
    }

    #[test]
    fn an_unresolved_user_is_looked_up_again_only_later_or_after_a_tenant_change() {
        let now = Utc::now();
        let user = |id: Option<&str>, attempts: u32, ago: Duration| GraphUser {
            mailbox: crate::model::MailboxId::parse("a@example.com").unwrap(),
            id: id.map(str::to_string),
            error: id.is_none().then(|| "none".to_string()),
            attempts,
            checked_at: Some(now - ago),
        };
        let old_tenant = now - Duration::days(30);
        assert!(due(None, old_tenant, now), "a mailbox never looked up");
        assert!(!due(Some(&user(Some("id"), 0, Duration::days(400))), now, now), "resolved: never again");
        assert!(!due(Some(&user(None, 1, Duration::minutes(14))), old_tenant, now));
        assert!(due(Some(&user(None, 1, Duration::minutes(15))), old_tenant, now));
        assert!(!due(Some(&user(None, 3, Duration::minutes(59))), old_tenant, now), "the third waits an hour");
        assert!(due(Some(&user(None, 3, Duration::minutes(60))), old_tenant, now));
        assert!(!due(Some(&user(None, 40, Duration::hours(23))), old_tenant, now), "at most a day");
        assert!(due(Some(&user(None, 40, Duration::hours(24))), old_tenant, now));
        assert!(due(Some(&user(None, 40, Duration::minutes(1))), now, now), "the tenant changed since");
    }
}
