//! The identity platform's client-credentials token endpoint and the bearer
//! check every `/v1.0` route runs. Tokens are HS256 JWTs signed with a key
//! that lives only in this process; clients must treat them as opaque.
//! Errors here use the identity platform's OAuth format, not Graph's.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::error::GraphError;
use super::{lock, Shared};

pub(crate) const GRAPH_DEFAULT_SCOPE: &str = "https://graph.microsoft.com/.default";
const TOKEN_LIFETIME_SECS: i64 = 3599;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    aud: String,
    iss: String,
    iat: i64,
    nbf: i64,
    exp: i64,
    tid: String,
    appid: String,
    roles: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct TokenForm {
    client_id: Option<String>,
    client_secret: Option<String>,
    scope: Option<String>,
    grant_type: Option<String>,
}

fn oauth_error(status: StatusCode, error: &str, aadsts: u32, text: &str) -> Response {
    let trace_id = uuid::Uuid::new_v4().to_string();
    let correlation_id = uuid::Uuid::new_v4().to_string();
    let timestamp = chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
    let body = json!({
        "error": error,
        "error_description": format!(
            "AADSTS{aadsts}: {text} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}"
        ),
        "error_codes": [aadsts],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
    });
    (status, axum::Json(body)).into_response()
}

/// `POST /{tenant}/oauth2/v2.0/token` (client credentials with a secret).
pub(crate) async fn token(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    Form(form): Form<TokenForm>,
) -> Response {
    let (tenant_id, app) = {
        let w = lock(&shared.world);
        if !(w.tenant_id.eq_ignore_ascii_case(&tenant) || w.domain.eq_ignore_ascii_case(&tenant)) {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                90002,
                &format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."),
            );
        }
        (w.tenant_id.clone(), w.app.clone())
    };
    if form.grant_type.as_deref() != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    let client_id = form.client_id.unwrap_or_default();
    if client_id != app.client_id {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'."),
        );
    }
    let secret_ok = form
        .client_secret
        .as_deref()
        .is_some_and(|s| subtle::ConstantTimeEq::ct_eq(s.as_bytes(), app.client_secret.as_bytes()).into());
    if !secret_ok {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            &format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, \
                 not the client secret ID, for a secret added to app '{client_id}'."
            ),
        );
    }
    if form.scope.as_deref() != Some(GRAPH_DEFAULT_SCOPE) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope {} is not valid. Client credential flows must have a scope value with \
                 /.default suffixed to the resource identifier (application ID URI).",
                form.scope.unwrap_or_default()
            ),
        );
    }
    let now = shared.clock.now().timestamp();
    let claims = Claims {
        aud: "https://graph.microsoft.com".into(),
        iss: format!("https://sts.windows.net/{tenant_id}/"),
        iat: now,
        nbf: now,
        exp: now + TOKEN_LIFETIME_SECS,
        tid: tenant_id,
        appid: app.client_id.clone(),
        roles: app.roles.clone(),
    };
    match jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(&shared.jwt_key)) {
        Ok(access_token) => axum::Json(json!({
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME_SECS,
            "ext_expires_in": TOKEN_LIFETIME_SECS,
            "access_token": access_token,
        }))
        .into_response(),
        Err(e) => oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", 50000, &e.to_string()),
    }
}

/// Checks `Authorization: Bearer …`: signature, tenant, app and expiry (sim clock).
pub(crate) fn verify_bearer(shared: &Shared, headers: &HeaderMap) -> Result<(), GraphError> {
    let raw = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let Some(token) = raw.strip_prefix("Bearer ").or_else(|| raw.strip_prefix("bearer ")).map(str::trim) else {
        return Err(GraphError::unauthorized("Access token is empty."));
    };
    if token.is_empty() {
        return Err(GraphError::unauthorized("Access token is empty."));
    }
    let mut validation = Validation::new(Algorithm::HS256);
    // Expiry is checked against the simulator's clock below, not the system clock.
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&shared.jwt_key), &validation)
        .map_err(|_| GraphError::unauthorized("IDX14100: JWT is not well formed, or its signature is invalid."))?
        .claims;
    let (tenant_ok, app_ok) = {
        let w = lock(&shared.world);
        (claims.tid == w.tenant_id, claims.appid == w.app.client_id)
    };
    if !tenant_ok || !app_ok {
        return Err(GraphError::unauthorized("Access token validation failure. Invalid audience."));
    }
    if claims.exp <= shared.clock.now().timestamp() {
        return Err(GraphError::unauthorized("Lifetime validation failed, the token is expired."));
    }
    Ok(())
}
