//! The app-only access token of one tenant (OAuth 2.0 client credentials,
//! GRAPH.md §1): fetched from the configurable login base, cached until
//! `expires_in` minus a margin, refreshed single-flight (one request however
//! many callers wait), and a refused credential remembered for a while so
//! that a wrong secret costs one token request, not a storm. It never logs,
//! formats or returns the client secret; the token itself is kept in a
//! `SecretString` and only leaves as an `Authorization` header.

use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::sync::Mutex;

use super::error::{classify_token_error, GraphError};

pub(crate) const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

enum Cached {
    Empty,
    Token {
        token: SecretString,
        refresh_at: Instant,
    },
    /// A permanent refusal, served without asking again until `until`.
    Refused {
        error: (String, String, String),
        until: Instant,
    },
}

pub(crate) struct TokenCache {
    url: String,
    allow_private: bool,
    tenant: String,
    client_id: String,
    secret: SecretString,
    margin: Duration,
    refusal_ttl: Duration,
    state: Mutex<Cached>,
}

impl TokenCache {
    pub fn new(
        login_base: &str,
        tenant: &str,
        client_id: &str,
        secret: SecretString,
        margin: Duration,
        refusal_ttl: Duration,
        allow_private: bool,
    ) -> TokenCache {
        TokenCache {
            url: token_url(login_base, tenant),
            allow_private,
            tenant: tenant.to_string(),
            client_id: client_id.to_string(),
            secret,
            margin,
            refusal_ttl,
            state: Mutex::new(Cached::Empty),
        }
    }

    /// A valid token. Holding the lock across the fetch is what makes the
    /// refresh single-flight: waiters find the fresh token when they get in.
    pub async fn get(&self, http: &reqwest::Client) -> Result<SecretString, GraphError> {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        match &*state {
            Cached::Token { token, refresh_at } if *refresh_at > now => return Ok(token.clone()),
            Cached::Refused { error, until } if *until > now => {
                let (tenant, message, fix) = error.clone();
                return Err(GraphError::Auth { tenant, message, fix });
            }
            _ => {}
        }
        match self.fetch(http).await {
            Ok((token, expires_in)) => {
                // A short-lived token is refreshed at half-life rather than never reused.
                let refresh_at = Instant::now() + expires_in.saturating_sub(self.margin.min(expires_in / 2));
                *state = Cached::Token { token: token.clone(), refresh_at };
                Ok(token)
            }
            Err(GraphError::Auth { tenant, message, fix }) => {
                let until = Instant::now() + self.refusal_ttl;
                *state = Cached::Refused { error: (tenant.clone(), message.clone(), fix.clone()), until };
                Err(GraphError::Auth { tenant, message, fix })
            }
            Err(e) => {
                *state = Cached::Empty;
                Err(e)
            }
        }
    }

    /// Drops `used` if it is still the cached token (Graph said it is no
    /// longer valid); a token refreshed meanwhile by another caller stays.
    pub async fn invalidate(&self, used: &SecretString) {
        let mut state = self.state.lock().await;
        if let Cached::Token { token, .. } = &*state {
            if token.expose_secret() == used.expose_secret() {
                *state = Cached::Empty;
            }
        }
    }

    async fn fetch(&self, http: &reqwest::Client) -> Result<(SecretString, Duration), GraphError> {
        crate::netguard::check_url_str(&self.url, self.allow_private)
            .map_err(|r| GraphError::Blocked(r.to_string()))?;
        let form = [
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.secret.expose_secret()),
            ("scope", GRAPH_SCOPE),
            ("grant_type", "client_credentials"),
        ];
        let resp = http
            .post(&self.url)
            .form(&form)
            .send()
            .await
            // reqwest errors name the URL, never the form body.
            .map_err(|e| match crate::netguard::refusal_in(&e) {
                Some(r) => GraphError::Blocked(r.to_string()),
                None => GraphError::Transport(format!("token request: {}", e.without_url())),
            })?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| GraphError::Transport(format!("token answer: {e}")))?;
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status != 200 {
            return Err(match classify_token_error(status, &body, &self.tenant, &self.client_id) {
                Some(e) => e,
                None => GraphError::Status {
                    status,
                    code: "token_endpoint_unavailable".into(),
                    message: format!("token endpoint answered {status}"),
                    request_id: None,
                },
            });
        }
        let token = body
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| GraphError::Decode("token answer without access_token".into()))?;
        let expires_in = body
            .get("expires_in")
            .and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
            .unwrap_or(3599);
        Ok((SecretString::from(token.to_string()), Duration::from_secs(expires_in)))
    }
}

/// `{login_base}/{tenant}/oauth2/v2.0/token`, the tenant as one path
/// segment (a `/`, `?` or `#` in it cannot change the path or add a query).
/// A login base that is not a URL is kept as text; the request then fails
/// with the HTTP client's own error.
fn token_url(login_base: &str, tenant: &str) -> String {
    match url::Url::parse(login_base) {
        Ok(mut u) if !u.cannot_be_a_base() => {
            u.set_query(None);
            u.set_fragment(None);
            if let Ok(mut segs) = u.path_segments_mut() {
                segs.pop_if_empty().push(tenant).extend(["oauth2", "v2.0", "token"]);
            }
            u.to_string()
        }
        _ => format!("{}/oauth2/v2.0/token", login_base.trim_end_matches('/')),
    }
}

#[cfg(test)]
mod tests {
    use super::token_url;

    /// Issue #20, finding 1: the Entra tenant id was glued into the token
    /// path, so `../x?` or `a/b#` moved the request elsewhere on the host.
    #[test]
    fn the_tenant_is_one_path_segment_of_the_token_url() {
        assert_eq!(
            token_url("https://login.microsoftonline.com", "contoso.onmicrosoft.com"),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(token_url("https://login.example/base/", "t"), "https://login.example/base/t/oauth2/v2.0/token");
        assert_eq!(
            token_url("https://login.example", "../admin?x=1#"),
            "https://login.example/..%2Fadmin%3Fx=1%23/oauth2/v2.0/token"
        );
        assert_eq!(token_url("https://login.example/?q=", "t"), "https://login.example/t/oauth2/v2.0/token");
    }
}
