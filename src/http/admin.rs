//! The admin API (`/v1/admin/…`): tenants with write-only secrets, the
//! connection test, directions and rollout, mailboxes, the journal, held
//! deletions, the dry-run plan and the dead letters.
//!
//! Every route takes a bearer JWT (`Authorization: Bearer`, never the
//! status page's session cookie: a cookie rides along on cross-site
//! requests) verified with the configured key and algorithm only. An `operator` sees
//! everything; a `tenant_admin` sees and changes only the tenant named in
//! its token — any other tenant is answered `404`, exactly as if it did not
//! exist, on every route. Every change is journalled with who made it.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use super::error::{AdminErrors, ErrorBody, JsonBodyErrors};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::{ApiError, AppState};
use crate::config::AdminConfig;
use crate::conntest::ConnectionReport;
use crate::engine::settings::TenantSettings;
use crate::model::capabilities::Capabilities;
use crate::model::{Kind, MailboxId, TenantId};
use crate::store::{
    GraphCredentials, HellohqCredentials, JournalFilter, Mailbox, MailboxState, NewJournalEntry, Tenant,
};

/// Name of the status page's session cookie (holds the token).
pub const SESSION_COOKIE: &str = "hqsync_session";

// ---- authentication --------------------------------------------------------------

/// Verifies admin tokens with the one configured key and algorithm.
pub struct AdminAuth {
    key: DecodingKey,
    validation: Validation,
    /// Longest `exp - iat` accepted (`admin.jwt_max_lifetime_secs`).
    max_lifetime_secs: i64,
}

#[derive(Debug, Clone, Deserialize)]
struct Claims {
    sub: String,
    role: String,
    #[serde(default)]
    tenant: Option<String>,
    exp: i64,
    #[serde(default)]
    iat: Option<i64>,
}

impl AdminAuth {
    /// `None` when no key is configured (the admin API then answers 401).
    pub fn from_config(c: &AdminConfig) -> anyhow::Result<Option<AdminAuth>> {
        let alg = match c.jwt_algorithm.as_str() {
            "HS256" => Algorithm::HS256,
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            other => anyhow::bail!("admin.jwt_algorithm {other:?}: expected HS256, RS256 or ES256"),
        };
        let key = match alg {
            Algorithm::HS256 => match &c.jwt_secret {
                Some(s) => DecodingKey::from_secret(s.expose_secret().as_bytes()),
                None => return Ok(None),
            },
            _ => {
                let Some(path) = &c.jwt_public_key_file else { return Ok(None) };
                let pem = std::fs::read(path)
                    .map_err(|e| anyhow::anyhow!("admin.jwt_public_key_file {}: {e}", path.display()))?;
                if alg == Algorithm::RS256 { DecodingKey::from_rsa_pem(&pem) } else { DecodingKey::from_ec_pem(&pem) }
                    .map_err(|e| {
                    anyhow::anyhow!("admin.jwt_public_key_file {}: not a PEM public key: {e}", path.display())
                })?
            }
        };
        let mut validation = Validation::new(alg);
        // Only the configured algorithm: a token signed otherwise is refused.
        validation.algorithms = vec![alg];
        let mut required = vec!["exp", "sub"];
        if c.jwt_issuer.as_deref().is_some_and(|s| !s.is_empty()) {
            required.push("iss");
        }
        if c.jwt_audience.as_deref().is_some_and(|s| !s.is_empty()) {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation.leeway = 30;
        // A token is not good before its `nbf`.
        validation.validate_nbf = true;
        match c.jwt_issuer.as_deref().filter(|s| !s.is_empty()) {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match c.jwt_audience.as_deref().filter(|s| !s.is_empty()) {
            Some(aud) => validation.set_audience(&[aud]),
            // Identity providers put an `aud` in every token: accepted whatever it says when none is configured.
            None => validation.validate_aud = false,
        }
        let max_lifetime_secs = i64::try_from(c.jwt_max_lifetime_secs).unwrap_or(i64::MAX);
        Ok(Some(AdminAuth { key, validation, max_lifetime_secs }))
    }

    /// The principal a token speaks for, or why it is refused.
    pub fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            let why = match e.kind() {
                ErrorKind::ExpiredSignature => "the token has expired",
                ErrorKind::InvalidAlgorithm => "the token is signed with another algorithm than the one configured",
                ErrorKind::InvalidSignature => "the token's signature does not verify",
                ErrorKind::MissingRequiredClaim(_) => {
                    "the token lacks a required claim (sub, exp; iss and aud when admin.jwt_issuer / admin.jwt_audience are set)"
                }
                ErrorKind::ImmatureSignature => "the token is not valid yet (nbf is in the future)",
                ErrorKind::InvalidIssuer => "the token's issuer (iss) is not admin.jwt_issuer",
                ErrorKind::InvalidAudience => "the token's audience (aud) does not name admin.jwt_audience",
                _ => "the token is malformed",
            };
            ApiError::unauthorized("bad_token", why)
        })?;
        let c = data.claims;
        // A long-lived token is a standing key: `exp - iat` (or, without
        // `iat`, `exp - now`) may not exceed the configured maximum.
        let from = c.iat.unwrap_or_else(|| Utc::now().timestamp());
        if c.exp.saturating_sub(from) > self.max_lifetime_secs {
            return Err(ApiError::unauthorized(
                "bad_token",
                format!(
                    "the token's lifetime (exp - iat) exceeds admin.jwt_max_lifetime_secs ({} s); issue a shorter-lived token",
                    self.max_lifetime_secs
                ),
            ));
        }
        let role = match c.role.as_str() {
            "operator" => Role::Operator,
            "tenant_admin" => {
                let t = c.tenant.as_deref().filter(|t| !crate::store::is_reserved_tenant_id(t));
                let t = t.and_then(|t| TenantId::parse(t).ok()).ok_or_else(|| {
                    ApiError::unauthorized("bad_token", "a tenant_admin token needs a valid `tenant` claim")
                })?;
                Role::TenantAdmin(t)
            }
            _ => return Err(ApiError::unauthorized("bad_token", "`role` must be operator or tenant_admin")),
        };
        Ok(Principal { sub: c.sub, role })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Operator,
    TenantAdmin(TenantId),
}

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Principal {
    pub sub: String,
    pub role: Role,
}

impl Principal {
    pub fn is_operator(&self) -> bool {
        self.role == Role::Operator
    }

    /// 404 for a tenant this principal may not see (its existence is not revealed).
    pub fn tenant(&self, raw: &str) -> Result<TenantId, ApiError> {
        let id = TenantId::parse(raw).map_err(|_| ApiError::not_found("unknown_tenant", "no such tenant"))?;
        match &self.role {
            Role::Operator => Ok(id),
            Role::TenantAdmin(t) if *t == id => Ok(id),
            Role::TenantAdmin(_) => Err(ApiError::not_found("unknown_tenant", "no such tenant")),
        }
    }

    pub fn require_operator(&self) -> Result<(), ApiError> {
        if self.is_operator() {
            Ok(())
        } else {
            Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "only an operator may do this"))
        }
    }

    fn actor(&self) -> String {
        match &self.role {
            Role::Operator => format!("operator:{}", self.sub),
            Role::TenantAdmin(t) => format!("tenant_admin:{t}:{}", self.sub),
        }
    }
}

/// The token from `Authorization: Bearer …` (the only credential the admin
/// API takes: a browser never adds it by itself, so no cross-site request
/// can carry it).
pub fn bearer_of(headers: &axum::http::HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())?.trim();
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim().to_string()).filter(|t| !t.is_empty())
}

/// The value of cookie `name`, if the request carries it.
pub fn cookie_of(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(name)?.strip_prefix('=').map(str::to_string))
}

impl<S> FromRequestParts<S> for Principal
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let Some(auth) = state.admin.as_ref() else {
            return Err(ApiError::unauthorized(
                "admin_disabled",
                "the admin API is not configured: set admin.jwt_secret (HQSYNC_ADMIN__JWT_SECRET) or admin.jwt_public_key_file",
            ));
        };
        // The status page's session cookie is not accepted here (CSRF): Bearer only.
        let token = bearer_of(&parts.headers)
            .ok_or_else(|| ApiError::unauthorized("missing_token", "send Authorization: Bearer <JWT>"))?;
        auth.verify(&token)
    }
}

// ---- views ---------------------------------------------------------------------

/// A tenant as the API shows it: secrets only as "set / not set".
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    pub id: String,
    pub name: String,
    pub enabled: bool,
    pub graph: GraphView,
    pub hellohq: HellohqView,
    /// Directions, switches, rollout, room map (see the README).
    pub settings: Value,
    /// What the last connection test found the tenant's services to do
    /// (safe defaults until it has run).
    pub capabilities: Capabilities,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GraphView {
    pub tenant_id: String,
    pub client_id: String,
    pub graph_base: String,
    pub login_base: String,
    pub client_secret_set: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HellohqView {
    pub base_url: String,
    pub token_set: bool,
    pub webhook_secrets: usize,
}

async fn view(state: &AppState, t: &Tenant) -> Result<TenantView, ApiError> {
    let capabilities = state.store.get_capabilities(&t.id).await.map_err(store_err)?;
    Ok(TenantView {
        id: t.id.to_string(),
        name: t.name.clone(),
        enabled: t.enabled,
        graph: GraphView {
            tenant_id: t.graph.entra_tenant_id.clone(),
            client_id: t.graph.client_id.clone(),
            graph_base: t.graph.graph_base.clone(),
            login_base: t.graph.login_base.clone(),
            client_secret_set: !t.graph.client_secret.expose_secret().is_empty(),
        },
        hellohq: HellohqView {
            base_url: t.hellohq.base_url.clone(),
            token_set: !t.hellohq.token.expose_secret().is_empty(),
            webhook_secrets: t.hellohq.webhook_secrets.len(),
        },
        settings: t.settings.clone(),
        capabilities,
        created_at: t.created_at,
        updated_at: t.updated_at,
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GraphInput {
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    /// Write-only.
    #[schema(value_type = Option<String>)]
    pub client_secret: Option<SecretString>,
    pub graph_base: Option<String>,
    pub login_base: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HellohqInput {
    pub base_url: Option<String>,
    /// Write-only.
    #[schema(value_type = Option<String>)]
    pub token: Option<SecretString>,
    /// Write-only; replaces the list (several while rotating).
    #[schema(value_type = Option<Vec<String>>)]
    pub webhook_secrets: Option<Vec<SecretString>>,
}

/// Create (all credentials required) or update (anything given changes).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantInput {
    /// Lowercase letters, digits, `-`, `_` (create only).
    #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
    pub id: Option<String>,
    pub name: Option<String>,
    pub enabled: Option<bool>,
    pub graph: Option<GraphInput>,
    pub hellohq: Option<HellohqInput>,
    /// Merged key by key into the current settings (`null` removes a key).
    #[schema(value_type = Option<Object>)]
    pub settings: Option<Value>,
}

/// What creating a tenant requires (documentation only: the handler reads
/// [`TenantInput`], which PATCH shares, and checks these fields itself).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct TenantCreate {
    /// Lowercase letters, digits, `-`, `_`.
    #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
    pub id: String,
    pub name: Option<String>,
    pub enabled: Option<bool>,
    pub graph: GraphCreate,
    pub hellohq: HellohqCreate,
    /// Directions, switches, rollout, room map (see the README).
    #[schema(value_type = Option<Object>)]
    pub settings: Option<Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct GraphCreate {
    /// The customer's Entra tenant id.
    #[schema(pattern = "\\S")]
    pub tenant_id: String,
    #[schema(pattern = "\\S")]
    pub client_id: String,
    /// Write-only.
    #[schema(pattern = "\\S")]
    pub client_secret: String,
    /// Default `https://graph.microsoft.com/v1.0`.
    #[schema(pattern = "^https?://[A-Za-z0-9._~-]+(?::[1-9][0-9]{0,3})?(?:/[!-~]*)?$")]
    pub graph_base: Option<String>,
    /// Default `https://login.microsoftonline.com`.
    #[schema(pattern = "^https?://[A-Za-z0-9._~-]+(?::[1-9][0-9]{0,3})?(?:/[!-~]*)?$")]
    pub login_base: Option<String>,
}

/// A Standard Webhooks secret: `whsec_` and the base64 of at least 16 bytes.
#[derive(ToSchema)]
#[schema(
    value_type = String,
    pattern = "^whsec_(?:[A-Za-z0-9+/]{4}){5,}(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})$"
)]
#[allow(dead_code)]
pub struct WebhookSecretDoc(String);

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct HellohqCreate {
    /// Default `https://api.hellohq.io`.
    #[schema(pattern = "^https?://[A-Za-z0-9._~-]+(?::[1-9][0-9]{0,3})?(?:/[!-~]*)?$")]
    pub base_url: Option<String>,
    /// Write-only.
    #[schema(pattern = "\\S")]
    pub token: String,
    /// Write-only: `whsec_<base64>` values of at least 16 bytes (several while rotating).
    #[schema(inline, value_type = Option<Vec<WebhookSecretDoc>>)]
    pub webhook_secrets: Option<Vec<String>>,
}

fn journal_admin(tenant: &TenantId, who: &Principal, what: &str, detail: Value) -> NewJournalEntry {
    NewJournalEntry {
        tenant: Some(tenant.clone()),
        action: "admin".into(),
        detail: json!({"what": what, "summary": what, "detail": detail}),
        actor: Some(who.actor()),
        ..Default::default()
    }
}

fn merge_json(into: &mut Value, patch: &Value) {
    match (into, patch) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                if v.is_null() {
                    a.remove(k);
                } else {
                    merge_json(a.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// Settings are checked against their schema before anything is stored.
fn check_settings(v: &Value) -> Result<(), ApiError> {
    serde_json::from_value::<TenantSettings>(v.clone()).map(|_| ()).map_err(|e| {
        ApiError::bad_request("bad_settings", format!("settings: {e}; see the README for the keys and values"))
    })?;
    if let Some(r) = v.get("rollout").and_then(Value::as_str) {
        if r != "pilot" && r != "all" {
            return Err(ApiError::bad_request("bad_settings", "settings.rollout must be \"pilot\" or \"all\""));
        }
    }
    if let Some(p) = v.get("pilot_mailbox").filter(|p| !p.is_null()) {
        if p.as_str().is_none_or(|s| MailboxId::parse(s.to_ascii_lowercase()).is_err()) {
            return Err(ApiError::bad_request("bad_settings", "settings.pilot_mailbox must be a mailbox address"));
        }
    }
    Ok(())
}

/// The checks `hqsync.toml`'s `[[tenants]]` get (see `Config::validate`),
/// so the API stores no tenant the config file would refuse.
fn check_tenant(t: &Tenant) -> Result<(), ApiError> {
    if t.name.chars().any(char::is_control) || t.name.trim().is_empty() || t.name.chars().count() > 200 {
        return Err(ApiError::bad_request(
            "bad_field",
            "name: 1 to 200 characters of plain text (no control characters: NUL, ESC, tab, newline…)",
        ));
    }
    for (key, value) in [
        ("graph.graph_base", &t.graph.graph_base),
        ("graph.login_base", &t.graph.login_base),
        ("hellohq.base_url", &t.hellohq.base_url),
    ] {
        if let Err(problem) = crate::config::check_base_url(value) {
            return Err(ApiError::bad_request(
                "bad_field",
                format!("{key}: {problem}; give an http(s) base URL, e.g. https://graph.microsoft.com/v1.0"),
            ));
        }
    }
    for (i, s) in t.hellohq.webhook_secrets.iter().enumerate() {
        if let Err(e) = crate::connectors::hellohq::webhook::WebhookSecret::parse(s) {
            return Err(ApiError::bad_request(
                "bad_field",
                format!("hellohq.webhook_secrets[{i}]: {e}; use the value helloHQ shows for the endpoint"),
            ));
        }
    }
    Ok(())
}

fn store_err(e: crate::store::StoreError) -> ApiError {
    if let crate::store::StoreError::Foreign(why) = &e {
        return ApiError::new(StatusCode::CONFLICT, "id_taken", why.clone());
    }
    if e.is_unavailable() {
        ApiError::unavailable(&e)
    } else {
        ApiError::internal(&e)
    }
}

async fn load_tenant(state: &AppState, id: &TenantId) -> Result<Tenant, ApiError> {
    state
        .store
        .get_tenant(id)
        .await
        .map_err(store_err)?
        .ok_or_else(|| ApiError::not_found("unknown_tenant", "no such tenant"))
}

// ---- tenants -------------------------------------------------------------------

/// Tenants this caller may see.
#[utoipa::path(get, path = "/v1/admin/tenants", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Vec<TenantView>), AdminErrors))]
pub async fn list_tenants(State(state): State<AppState>, who: Principal) -> Result<Json<Vec<TenantView>>, ApiError> {
    let all = state.store.list_tenants().await.map_err(store_err)?;
    let mut out = Vec::new();
    for t in all.iter().filter(|t| who.tenant(t.id.as_str()).is_ok()) {
        out.push(view(&state, t).await?);
    }
    Ok(Json(out))
}

/// Creates a tenant (operators only). Secrets are encrypted at rest and never returned.
#[utoipa::path(post, path = "/v1/admin/tenants", tag = "admin", security(("bearer" = [])), request_body = TenantCreate,
    responses((status = 201, description = "Created", body = TenantView, links(
            ("GetTenant" = (operation_id = "get_tenant", parameters(("tenant" = "$response.body#/id")))),
            ("UpdateTenant" = (operation_id = "update_tenant", parameters(("tenant" = "$response.body#/id")))),
            ("DeleteTenant" = (operation_id = "delete_tenant", parameters(("tenant" = "$response.body#/id")))),
            ("TestTenant" = (operation_id = "test_tenant", parameters(("tenant" = "$response.body#/id")))),
            ("ListMailboxes" = (operation_id = "list_mailboxes", parameters(("tenant" = "$response.body#/id")))),
            ("Journal" = (operation_id = "journal", parameters(("tenant" = "$response.body#/id")))),
            ("Plan" = (operation_id = "plan", parameters(("tenant" = "$response.body#/id")))),
            ("HellohqWebhook" = (operation_id = "webhook", parameters(("tenant" = "$response.body#/id"))))
        )), AdminErrors, (status = 400, description = "A path segment or query parameter does not decode, the body is not JSON, or a value fails validation: the message names it and the fix", body = ErrorBody),
        JsonBodyErrors, (status = 403, description = "Only an operator may do this", body = ErrorBody),
        (status = 409, description = "A tenant with this id exists, or had it and was deleted (ids are never reused)", body = ErrorBody)))]
pub async fn create_tenant(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(input): ApiJson<TenantInput>,
) -> Result<(StatusCode, Json<TenantView>), ApiError> {
    who.require_operator()?;
    let id = input
        .id
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("missing_field", "id is required"))
        .and_then(|s| TenantId::parse(s).map_err(|e| ApiError::bad_request("bad_field", format!("id: {e}"))))?;
    if crate::store::is_reserved_tenant_id(id.as_str()) {
        return Err(ApiError::bad_request(
            "bad_field",
            format!("id: {id} is reserved (system, or starting with _); choose another id"),
        ));
    }
    if state.store.get_tenant(&id).await.map_err(store_err)?.is_some() {
        return Err(ApiError::new(StatusCode::CONFLICT, "exists", format!("tenant {id} exists; PATCH it instead")));
    }
    let g = input.graph.ok_or_else(|| ApiError::bad_request("missing_field", "graph is required"))?;
    let h = input.hellohq.ok_or_else(|| ApiError::bad_request("missing_field", "hellohq is required"))?;
    let need = |v: Option<String>, f: &str| {
        v.filter(|s| !s.trim().is_empty())
            .ok_or_else(|| ApiError::bad_request("missing_field", format!("{f} is required")))
    };
    let need_secret = |v: Option<SecretString>, f: &str| {
        v.filter(|s| !s.expose_secret().trim().is_empty())
            .ok_or_else(|| ApiError::bad_request("missing_field", format!("{f} is required")))
    };
    let settings = input.settings.unwrap_or_else(|| json!({}));
    check_settings(&settings)?;
    let now = Utc::now();
    let t = Tenant {
        id: id.clone(),
        name: input.name.unwrap_or_else(|| id.to_string()),
        enabled: input.enabled.unwrap_or(true),
        graph: GraphCredentials {
            entra_tenant_id: need(g.tenant_id, "graph.tenant_id")?,
            client_id: need(g.client_id, "graph.client_id")?,
            client_secret: need_secret(g.client_secret, "graph.client_secret")?,
            graph_base: g.graph_base.unwrap_or_else(crate::config::default_graph_base),
            login_base: g.login_base.unwrap_or_else(crate::config::default_login_base),
        },
        hellohq: HellohqCredentials {
            base_url: h.base_url.unwrap_or_else(crate::config::default_hellohq_base),
            token: need_secret(h.token, "hellohq.token")?,
            webhook_secrets: h.webhook_secrets.unwrap_or_default(),
        },
        settings,
        created_at: now,
        updated_at: now,
    };
    check_tenant(&t)?;
    state.store.upsert_tenant(&t).await.map_err(store_err)?;
    state.store.append_journal(&journal_admin(&id, &who, "tenant created", json!({}))).await.map_err(store_err)?;
    Ok((StatusCode::CREATED, Json(view(&state, &t).await?)))
}

#[utoipa::path(get, path = "/v1/admin/tenants/{tenant}", tag = "admin", security(("bearer" = [])),
    params(("tenant" = String, Path)),
    responses((status = 200, body = TenantView), AdminErrors, (status = 400, description = "A path segment or query parameter does not decode, the body is not JSON, or a value fails validation: the message names it and the fix", body = ErrorBody),
        (status = 404, description = "No such tenant, or one this token may not see", body = ErrorBody)))]
pub async fn get_tenant(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(tenant): ApiPath<String>,
) -> Result<Json<TenantView>, ApiError> {
    let id = who.tenant(&tenant)?;
    let t = load_tenant(&state, &id).await?;
    Ok(Json(view(&state, &t).await?))
}

/// Changes credentials (write-only), name, the enabled switch or settings
/// (directions, sync switch, pilot mailbox, rollout, folders, room map).
/// The base URLs (`graph.graph_base`, `graph.login_base`, `hellohq.base_url`)
/// are an operator's to change.
#[utoipa::path(patch, path = "/v1/admin/tenants/{tenant}", tag = "admin", security(("bearer" = [])),
    params(("tenant" = String, Path)), request_body = TenantInput,
    responses((status = 200, body = TenantView), AdminErrors, (status = 400, description = "A path segment or query parameter does not decode, the body is not JSON, or a value fails validation: the message names it and the fix", body = ErrorBody),
        (status = 403, description = "A tenant admin tried to change a base URL (operator only)", body = ErrorBody),
        JsonBodyErrors, (status = 404, description = "No such tenant, or one this token may not see", body = ErrorBody)))]
pub async fn update_tenant(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(tenant): ApiPath<String>,
    ApiJson(input): ApiJson<TenantInput>,
) -> Result<Json<TenantView>, ApiError> {
    let id = who.tenant(&tenant)?;
    let mut t = load_tenant(&state, &id).await?;
    if input.id.as_deref().is_some_and(|i| i != id.as_str()) {
        return Err(ApiError::bad_request("bad_field", "id cannot change"));
    }
    // Where hqsync connects to is the operator's choice: a tenant admin who
    // could set it would make the service call an address of their choosing.
    if !who.is_operator() {
        let g = input.graph.as_ref();
        for (key, given, current) in [
            ("graph.graph_base", g.and_then(|g| g.graph_base.as_deref()), t.graph.graph_base.as_str()),
            ("graph.login_base", g.and_then(|g| g.login_base.as_deref()), t.graph.login_base.as_str()),
            (
                "hellohq.base_url",
                input.hellohq.as_ref().and_then(|h| h.base_url.as_deref()),
                t.hellohq.base_url.as_str(),
            ),
        ] {
            if given.is_some_and(|v| v != current) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "operator_only",
                    format!("{key} can only be changed by an operator; leave it out (or ask your operator)"),
                ));
            }
        }
    }
    let mut changed: Vec<&str> = Vec::new();
    if let Some(n) = input.name {
        t.name = n;
        changed.push("name");
    }
    if let Some(e) = input.enabled {
        t.enabled = e;
        changed.push("enabled");
    }
    if let Some(g) = input.graph {
        if let Some(v) = g.tenant_id {
            t.graph.entra_tenant_id = v;
        }
        if let Some(v) = g.client_id {
            t.graph.client_id = v;
        }
        if let Some(v) = g.client_secret {
            t.graph.client_secret = v;
        }
        if let Some(v) = g.graph_base {
            t.graph.graph_base = v;
        }
        if let Some(v) = g.login_base {
            t.graph.login_base = v;
        }
        changed.push("graph");
    }
    if let Some(h) = input.hellohq {
        if let Some(v) = h.base_url {
            t.hellohq.base_url = v;
        }
        if let Some(v) = h.token {
            t.hellohq.token = v;
        }
        if let Some(v) = h.webhook_secrets {
            t.hellohq.webhook_secrets = v;
        }
        changed.push("hellohq");
    }
    let mut rollout_all = false;
    if let Some(patch) = &input.settings {
        let mut s = t.settings.clone();
        if !s.is_object() {
            s = json!({});
        }
        merge_json(&mut s, patch);
        check_settings(&s)?;
        rollout_all = patch.get("rollout").and_then(Value::as_str) == Some("all");
        t.settings = s;
        changed.push("settings");
    }
    t.updated_at = Utc::now();
    check_tenant(&t)?;
    state.store.upsert_tenant(&t).await.map_err(store_err)?;
    // A removed webhook secret or a disabled tenant takes effect now, not after the caches' TTL.
    state.webhook_secrets.invalidate(&id);
    state.subscriptions.invalidate_tenant(&id);
    if rollout_all {
        enable_rollout(&state, &id).await?;
    }
    // Which fields changed, never their values (secrets among them).
    state
        .store
        .append_journal(&journal_admin(
            &id,
            &who,
            "tenant updated",
            json!({"fields": changed, "settings": input.settings}),
        ))
        .await
        .map_err(store_err)?;
    Ok(Json(view(&state, &t).await?))
}

/// Rollout `all`: the mailboxes held back for the pilot start syncing.
async fn enable_rollout(state: &AppState, id: &TenantId) -> Result<(), ApiError> {
    for mut m in state.store.list_mailboxes(id).await.map_err(store_err)? {
        if m.state == MailboxState::Disabled && m.settings.get("disabled_by").and_then(Value::as_str) == Some("rollout")
        {
            m.state = MailboxState::Active;
            if let Some(o) = m.settings.as_object_mut() {
                o.remove("disabled_by");
            }
            m.updated_at = Utc::now();
            state.store.upsert_mailbox(&m).await.map_err(store_err)?;
        }
    }
    Ok(())
}

/// Deletes a tenant and everything hqsync holds for it (operators only).
/// Nothing is deleted in helloHQ or Exchange.
#[utoipa::path(delete, path = "/v1/admin/tenants/{tenant}", tag = "admin", security(("bearer" = [])),
    params(("tenant" = String, Path)),
    responses((status = 204, description = "Deleted"), AdminErrors, (status = 400, description = "A path segment or query parameter does not decode, the body is not JSON, or a value fails validation: the message names it and the fix", body = ErrorBody),
        (status = 403, description = "Only an operator may do this", body = ErrorBody), (status = 404, description = "No such tenant, or one this token may not see", body = ErrorBody)))]
pub async fn delete_tenant(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(tenant): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = who.tenant(&tenant)?;
    who.require_operator()?;
    load_tenant(&state, &id).await?;
    state.store.delete_tenant(&id).await.map_err(store_err)?;
    state.webhook_secrets.invalidate(&id);
    state.subscriptions.invalidate_tenant(&id);
    let system = TenantId::parse(crate::store::SYSTEM_TENANT.trim_start_matches('_')).unwrap_or(id.clone());
    let _ = state
        .store
        .append_journal(&journal_admin(&system, &who, "tenant deleted", json!({"tenant": id.as_str()})))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

// ---- connection test -------------------------------------------------------------

/// "Test & enable": token, the pilot mailbox's calendar, contacts and To Do,
/// the helloHQ token and whether hqsync's public URL answers. Each check
/// passes or says why and what to do.
#[utoipa::path(post, path = "/v1/admin/tenants/{tenant}/test", tag = "admin", security(("bearer" = [])),
    params(("tenant" = String, Path)),
    responses((status = 200, body = ConnectionReport), AdminErrors, (status = 400, description = "A path segment or query parameter does not decode, the body is not JSON, or a value fails validation: the message names it and the fix", body = ErrorBody),
        (status = 404, description = "No such tenant, or one this token may not see", body = ErrorBody)))]
pub async fn test_tenant(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(tenant): ApiPath<String>,
) -> Result<Json<ConnectionReport>, ApiError> {
    let id = who.tenant(&tenant)?;
    let t = load_tenant(&state, &id).await?;
    let report = crate::conntest::run(&state.store, &state.public_url, &t, state.engine.graph_config()).await;
    state
        .store
        .append_journal(&journal_admin(&id, &who, "connection tested", json!({"ok": report.ok})))
        .await
        .map_err(store_err)?;
    Ok(Json(report))
}

// ---- mailboxes -------------------------------------------------------------------

#[derive(Debug, Serialize, ToSchema)]
pub struct MailboxView {
    pub id: String,
    pub hq_user_id: Option<String>,
    /// pilot | active | disabled
    pub state: String,
    pub settings: Value,
    pub last_error: Option<String>,
    /// Last completed contact pass.
    pub last_contact_sync: Option<String>,
    pub linked_contacts: u64,
    pub updated_at: DateTime<Utc>,
}

async fn mailbox_view(state: &AppState, m: &Mailbox) -> Result<MailboxView, ApiError> {
    let last = state
        .store
        .get_cursor(&m.tenant, m.id.as_str(), crate::engine::contacts::LAST_PASS)
        .await
        .map_err(store_err)?
        .filter(|s| !s.is_empty());
    Ok(MailboxView {
        id: m.id.to_string(),
        hq_user_id: m.hq_user_id.clone(),
        state: serde_json::to_value(m.state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
        settings: m.settings.clone(),
        last_error: m.last_error.clone(),
        last_contact_sync: last,
        linked_contacts: state
            .store
            .count_links(&m.tenant, Some(&m.id), Some(Kind::Contact))
            .await
            .map_err(store_err)?,
        updated_at: m.updated_at,
    })
}

#[utoipa::path(get, path = "/v1/admin/tenants/{tenant}/mailboxes", tag = "admin", security(("bearer" = [])),
    params(("tenant" = String, Path)),
    responses((status = 200, body = Vec<MailboxView>), AdminErrors, (status = 400, description = "A path segment or query parameter does not decode, the body is not JSON, or a value fails validation: the message names it and the fix", body = ErrorBody),
        (status = 404, description = "No such tenant, or one this token may not see", body = ErrorBody)))]
pub async fn list_mailboxes(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(tenant): ApiPath<String>,
) -> Result<Json<Vec<MailboxView>>, ApiError> {
    let id = who.tenant(&tenant)?;
    load_tenant(&state, &id).await?;
    let mut out = Vec::new();
    for m in state.store.list_mailboxes(&id).await.map_err(store_err)? {
        out.push(mailbox_view(&state, &m).await?);
    }
    Ok(Json(out))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MailboxInput {
    /// pilot | active | disabled
    pub state: Option<String>,
    /// Per-kind override: `{"contact": "to_exchange"}`; `null` removes one.
    pub directions: Option<Value>,
}

#[utoipa::path(patch, path = "/v1/admin/tenants/{tenant}/mailboxes/{mailbox}", tag = "admin", security(("bearer" = [])),
    params(("tenant" = String, Path), ("mailbox" = String, Path, pattern = "^[^\\s/\\x00-\\x1f\\x7f-\\x9f]{1,320}$", description = "The mailbox address (user principal name)")), request_body = MailboxInput,
    responses((status = 200, body = MailboxView), AdminErrors, (status = 400, description = "A path segment or query parameter does not decode, the body is not JSON, or a value fails validation: the message names it and the fix", body = ErrorBody),
        JsonBodyErrors, (status = 404, description = "No such tenant or mailbox, or a tenant this token may not see", body = ErrorBody)))]
pub async fn update_mailbox(
    State(state): State<AppState>,
    who: Principal,
    ApiPath((tenant, mailbox)): ApiPath<(String, String)>,
    ApiJson(input): ApiJson<MailboxInput>,
) -> Result<Json<MailboxView>, ApiError> {
    let id = who.tenant(&tenant)?;
    let mid = MailboxId::parse(mailbox.to_ascii_lowercase())
        .map_err(|_| ApiError::not_found("unknown_mailbox", "no such mailbox"))?;
    let mut m = state
        .store
        .get_mailbox(&id, &mid)
        .await
        .map_err(store_err)?
        .ok_or_else(|| ApiError::not_found("unknown_mailbox", "no such mailbox"))?;
    if let Some(s) = &input.state {
        m.state = serde_json::from_value(json!(s))
            .map_err(|_| ApiError::bad_request("bad_field", "state must be pilot, active or disabled"))?;
        if let Some(o) = m.settings.as_object_mut() {
            o.remove("disabled_by");
        }
    }
    if let Some(d) = &input.directions {
        let Some(obj) = d.as_object() else {
            return Err(ApiError::bad_request(
                "bad_field",
                "directions must be an object like {\"contact\": \"to_exchange\"}",
            ));
        };
        for (k, v) in obj {
            if k.parse::<Kind>().is_err() {
                return Err(ApiError::bad_request(
                    "bad_field",
                    format!("directions.{k}: unknown kind (appointment, task, contact)"),
                ));
            }
            if !v.is_null() && serde_json::from_value::<crate::model::Direction>(v.clone()).is_err() {
                return Err(ApiError::bad_request(
                    "bad_field",
                    format!("directions.{k}: expected both, to_exchange, to_hellohq or off"),
                ));
            }
        }
        if !m.settings.is_object() {
            m.settings = json!({});
        }
        let mut current = m.settings.get("directions").cloned().unwrap_or_else(|| json!({}));
        merge_json(&mut current, d);
        m.settings["directions"] = current;
    }
    m.updated_at = Utc::now();
    state.store.upsert_mailbox(&m).await.map_err(store_err)?;
    let mut e =
        journal_admin(&id, &who, "mailbox updated", json!({"state": input.state, "directions": input.directions}));
    e.mailbox = Some(mid);
    state.store.append_journal(&e).await.map_err(store_err)?;
    Ok(Json(mailbox_view(&state, &m).await?))
}

/// The kinds a query may name (documentation only: the handlers parse [`Kind`]).
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum KindName {
    Appointment,
    Task,
    Contact,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ApproveQuery {
    /// Only this kind's held deletions (appointment | task | contact); default: every kind.
    #[param(inline, value_type = Option<KindName>)]
    pub kind: Option<String>,
}

/// One kind's approved held deletions.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovedView {
    pub kind: String,
    /// Exactly the items approved: the next pass deletes those still gone.
    pub items: Vec<crate::engine::approvals::HeldItem>,
}

/// Approve only these held items (their `key`), or, without a body, the
/// whole held list.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    #[schema(max_items = 10000)]
    pub items: Option<Vec<String>>,
}

/// The mailbox the path names, known for the tenant.
async fn known_mailbox(state: &AppState, id: &TenantId, mailbox: &str) -> Result<MailboxId, ApiError> {
    let mid = MailboxId::parse(mailbox.to_ascii_lowercase())
        .map_err(|_| ApiError::not_found("unknown_mailbox", "no such mailbox"))?;
    state
        .store
        .get_mailbox(id, &mid)
        .await
        .map_err(store_err)?
        .ok_or_else(|| ApiError::not_found("unknown_mailbox", "no such mailbox"))?;
    Ok(mid)
}

fn kind_param(kind: Option<&str>) -> Result<Option<Kind>, ApiError> {
    kind.map(|k| {
        k.parse::<Kind>()
            .map_err(|_| ApiError::bad_request("invalid_kind", "kind must be one of: appointment, task, contact"))
    })
    .transpose()
}

/// The deletions the last pass held back for this mailbox, item by item, per kind.
#[utoipa::path(get, path = "/v1/admin/tenants/{tenant}/mailboxes/{mailbox}/held", tag = "admin", security(("bearer" = [])),
    params(("tenant" = String, Path), ("mailbox" = String, Path, pattern = "^[^\\s/\\x00-\\x1f\\x7f-\\x9f]{1,320}$", description = "The mailbox address (user principal name)"), ApproveQuery),
    responses((status = 200, body = Vec<crate::engine::approvals::Held>), AdminErrors, (status = 400, description = "A path segment or query parameter does not decode, the body is not JSON, or a value fails validation: the message names it and the fix", body = ErrorBody),
        (status = 404, description = "No such tenant or mailbox, or a tenant this token may not see", body = ErrorBody)))]
pub async fn held(
    State(state): State<AppState>,
    who: Principal,
    ApiPath((tenant, mailbox)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<ApproveQuery>,
) -> Result<Json<Vec<crate::engine::approvals::Held>>, ApiError> {
    let id = who.tenant(&tenant)?;
    let kind = kind_param(q.kind.as_deref())?;
    let mid = known_mailbox(&state, &id, &mailbox).await?;
    Ok(Json(state.engine.held(&id, &mid, kind).await.map_err(|e| ApiError::internal(&e))?))
}

/// Approves exactly the deletions the last pass held back for this mailbox
/// (or only the listed items of them); returns what was approved.
#[utoipa::path(post, path = "/v1/admin/tenants/{tenant}/mailboxes/{mailbox}/approve", tag = "admin", security(("bearer" = [])),
    params(("tenant" = String, Path), ("mailbox" = String, Path, pattern = "^[^\\s/\\x00-\\x1f\\x7f-\\x9f]{1,320}$", description = "The mailbox address (user principal name)"), ApproveQuery),
    request_body(content = Option<ApproveBody>, description = "Optional: only these held items"),
    responses((status = 200, description = "Approved: exactly these items, per kind", body = Vec<ApprovedView>), AdminErrors, (status = 400, description = "A path segment or query parameter does not decode, the body is not JSON, or a value fails validation: the message names it and the fix", body = ErrorBody),
        (status = 404, description = "No such tenant or mailbox, or a tenant this token may not see", body = ErrorBody)))]
pub async fn approve(
    State(state): State<AppState>,
    who: Principal,
    ApiPath((tenant, mailbox)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<ApproveQuery>,
    body: axum::body::Bytes,
) -> Result<Json<Vec<ApprovedView>>, ApiError> {
    let id = who.tenant(&tenant)?;
    let kind = kind_param(q.kind.as_deref())?;
    let only = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let b: ApproveBody = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request("bad_body", format!("the body must be {{\"items\": [\"<key>\", …]}}: {e}"))
        })?;
        b.items
    };
    let mid = known_mailbox(&state, &id, &mailbox).await?;
    let approved = state
        .engine
        .approve(&id, &mid, kind, only.as_deref(), &who.actor())
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(approved.into_iter().map(|(k, items)| ApprovedView { kind: k.as_str().into(), items }).collect()))
}

// ---- journal, plan, dead letters -----------------------------------------------------

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JournalQuery {
    /// The mailbox address (user principal name).
    #[param(pattern = "^[^\\s/\\x00-\\x1f\\x7f-\\x9f]{1,320}$")]
    pub mailbox: Option<String>,
    /// appointment | task | contact
    #[param(inline, value_type = Option<KindName>)]
    pub kind: Option<String>,
    /// created, updated, deleted, skipped, conflict, held, error, admin, …
    pub action: Option<String>,
    /// Most entries to return: default 100, at most 1000.
    #[param(minimum = 0, maximum = 1000)]
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JournalView {
    pub id: i64,
    pub mailbox: Option<String>,
    pub kind: Option<String>,
    pub action: String,
    pub hq_id: Option<String>,
    pub graph_id: Option<String>,
    pub detail: Value,
    pub actor: Option<String>,
    pub at: DateTime<Utc>,
}

/// Why did (or didn't) something sync: newest first.
#[utoipa::path(get, path = "/v1/admin/tenants/{tenant}/journal", tag = "admin", security(("bearer" = [])),
    params(("tenant" = String, Path), JournalQuery),
    responses((status = 200, body = Vec<JournalView>), AdminErrors, (status = 400, description = "A path segment or query parameter does not decode, the body is not JSON, or a value fails validation: the message names it and the fix", body = ErrorBody),
        (status = 404, description = "No such tenant, or one this token may not see", body = ErrorBody)))]
pub async fn journal(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(tenant): ApiPath<String>,
    ApiQuery(q): ApiQuery<JournalQuery>,
) -> Result<Json<Vec<JournalView>>, ApiError> {
    let id = who.tenant(&tenant)?;
    let kind = q
        .kind
        .as_deref()
        .map(|k| {
            k.parse::<Kind>()
                .map_err(|_| ApiError::bad_request("bad_field", "kind must be appointment, task or contact"))
        })
        .transpose()?;
    let mailbox = q
        .mailbox
        .as_deref()
        .map(|m| {
            MailboxId::parse(m.to_ascii_lowercase())
                .map_err(|_| ApiError::bad_request("bad_field", "mailbox is not an address"))
        })
        .transpose()?;
    let entries = state
        .store
        .list_journal(&JournalFilter {
            tenant: Some(id),
            mailbox,
            kind,
            action: q.action,
            limit: q.limit.unwrap_or(100).min(1000),
            ..Default::default()
        })
        .await
        .map_err(store_err)?;
    Ok(Json(
        entries
            .into_iter()
            .map(|e| JournalView {
                id: e.id,
                mailbox: e.mailbox.map(|m| m.to_string()),
                kind: e.kind.map(|k| k.to_string()),
                action: e.action,
                hq_id: e.hq_id,
                graph_id: e.graph_id,
                detail: e.detail,
                actor: e.actor,
                at: e.at,
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PlanQuery {
    /// The mailbox address (user principal name).
    #[param(pattern = "^[^\\s/\\x00-\\x1f\\x7f-\\x9f]{1,320}$")]
    pub mailbox: Option<String>,
}

/// The dry run: what a pass would create, update, delete and match, per mailbox.
#[utoipa::path(get, path = "/v1/admin/tenants/{tenant}/plan", tag = "admin", security(("bearer" = [])),
    params(("tenant" = String, Path), PlanQuery),
    responses((status = 200, body = Value), AdminErrors, (status = 400, description = "A path segment or query parameter does not decode, the body is not JSON, or a value fails validation: the message names it and the fix", body = ErrorBody),
        (status = 404, description = "No such tenant, or one this token may not see", body = ErrorBody),
        (status = 502, description = "Graph or helloHQ could not be read for the plan", body = ErrorBody)))]
pub async fn plan(
    State(state): State<AppState>,
    who: Principal,
    ApiPath(tenant): ApiPath<String>,
    ApiQuery(q): ApiQuery<PlanQuery>,
) -> Result<Json<Value>, ApiError> {
    let id = who.tenant(&tenant)?;
    load_tenant(&state, &id).await?;
    let mailbox = q
        .mailbox
        .as_deref()
        .map(|m| {
            MailboxId::parse(m.to_ascii_lowercase())
                .map_err(|_| ApiError::bad_request("bad_field", "mailbox is not an address"))
        })
        .transpose()?;
    let plans = state
        .engine
        .plan(&id, mailbox.as_ref())
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "plan_failed", e.to_string()))?;
    Ok(Json(serde_json::to_value(plans).unwrap_or_default()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterView {
    pub id: String,
    pub tenant: Option<String>,
    pub hint: Option<Value>,
    pub reason: String,
    pub attempts: u32,
}

/// Hints that could not be applied (operators only).
#[utoipa::path(get, path = "/v1/admin/dead-letters", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Vec<DeadLetterView>), AdminErrors, (status = 403, description = "Only an operator may do this", body = ErrorBody)))]
pub async fn dead_letters(
    State(state): State<AppState>,
    who: Principal,
) -> Result<Json<Vec<DeadLetterView>>, ApiError> {
    who.require_operator()?;
    let list = state.queue.dead_letters(500).await.map_err(|e| ApiError::unavailable(&e))?;
    Ok(Json(
        list.into_iter()
            .map(|d| DeadLetterView {
                id: d.id,
                tenant: d.hint.as_ref().map(|h| h.tenant.to_string()),
                hint: d.hint.as_ref().and_then(|h| serde_json::to_value(h).ok()),
                reason: d.reason,
                attempts: d.attempts,
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayInput {
    /// Dead-letter ids from the list; empty = all.
    #[serde(default)]
    pub ids: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayResult {
    pub replayed: usize,
}

#[utoipa::path(post, path = "/v1/admin/dead-letters/replay", tag = "admin", security(("bearer" = [])), request_body = ReplayInput,
    responses((status = 200, body = ReplayResult), AdminErrors, (status = 400, description = "A path segment or query parameter does not decode, the body is not JSON, or a value fails validation: the message names it and the fix", body = ErrorBody),
        JsonBodyErrors, (status = 403, description = "Only an operator may do this", body = ErrorBody)))]
pub async fn replay(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(input): ApiJson<ReplayInput>,
) -> Result<Json<ReplayResult>, ApiError> {
    who.require_operator()?;
    let replayed = state.queue.replay_dead_letters(&input.ids).await.map_err(|e| ApiError::unavailable(&e))?;
    tracing::info!(actor = %who.actor(), replayed, "dead letters replayed");
    Ok(Json(ReplayResult { replayed }))
}

/// The shared verifier, if configured.
pub type SharedAuth = Option<Arc<AdminAuth>>;
