//! helloHQ webhooks (Standard Webhooks, contract C2): the signature is
//! checked on the raw bytes with the tenant's secrets before anything is
//! parsed; then publish-then-202. The tenant is the one named in the URL
//! *and* proven by its secret.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

use super::extract::ApiPath;
use super::{metrics, read_body, require_json, ApiError, AppState};
use crate::connectors::hellohq::webhook::{verify, WebhookError, WebhookHeaders};
use crate::model::TenantId;
use crate::queue::{Hint, Origin, HINT_VERSION};

/// A helloHQ event (`{"type":"contactPerson.updated","timestamp":…,"data":{"id":202,"entity":"contactPerson"}}`).
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct HellohqEvent {
    /// `<entity>.<created|updated|deleted>`
    #[schema(rename = "type")]
    kind: String,
    timestamp: Option<String>,
    data: serde_json::Value,
}

/// A helloHQ webhook for one tenant.
#[utoipa::path(
    post,
    path = "/v1/webhooks/hellohq/{tenant}",
    tag = "ingress",
    params(
        ("tenant" = String, Path, description = "hqsync tenant id"),
        ("webhook-id" = String, Header, description = "Message id, the same on every retry"),
        ("webhook-timestamp" = String, Header, description = "Unix seconds of this attempt"),
        ("webhook-signature" = String, Header, description = "Space-separated `v1,<base64>` signatures"),
    ),
    request_body(content = HellohqEvent, content_type = "application/json"),
    responses(
        (status = 202, description = "Verified and durably queued"),
        (status = 400, description = "Signed, but not a helloHQ event (or the tenant segment does not decode)", body = super::error::ErrorBody),
        (status = 401, description = "Missing or wrong signature, or a timestamp outside ±5 minutes", body = super::error::ErrorBody),
        (status = 404, description = "No such tenant (or it has no webhook secret)", body = super::error::ErrorBody),
        (status = 413, description = "Body over the size limit", body = super::error::ErrorBody),
        (status = 415, description = "Body is not JSON", body = super::error::ErrorBody),
        (status = 503, description = "The queue did not confirm in time: the sender retries", body = super::error::ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(tenant = %tenant))]
pub async fn webhook(
    State(state): State<AppState>,
    ApiPath(tenant): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let unknown = || ApiError::not_found("unknown_tenant", "no tenant with this id accepts helloHQ webhooks");
    let tenant = TenantId::parse(tenant).map_err(|_| unknown())?;
    let secrets = state.webhook_secrets.get(&tenant).await.map_err(|e| ApiError::unavailable(&e))?;
    let secrets = secrets.filter(|s| !s.is_empty()).ok_or_else(unknown)?;
    let bytes = read_body(&headers, body, state.max_body_bytes).await?;
    require_json(&headers)?;
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let wh =
        WebhookHeaders { id: h("webhook-id"), timestamp: h("webhook-timestamp"), signature: h("webhook-signature") };
    let verified = match verify(&secrets, wh, &bytes, (state.clock)()) {
        Ok(v) => v,
        Err(e) => {
            metrics::hint_rejected("hellohq", e.reason());
            tracing::warn!(tenant = %tenant, reason = e.reason(), "refusing helloHQ webhook");
            return Err(match e {
                WebhookError::BadBody(_) => ApiError::bad_request(e.reason(), e.to_string()),
                _ => ApiError::unauthorized(e.reason(), e.to_string()),
            });
        }
    };
    let hint = Hint {
        v: HINT_VERSION,
        hint_id: Hint::stable_id(&tenant, "hellohq", &verified.message_id),
        tenant,
        mailbox: None,
        kind: verified.entity.kind(),
        entity: Some(verified.entity),
        origin: Origin::Hellohq,
        resource_id: Some(verified.hq_id),
        version: None,
        subscription_id: None,
        change: verified.change,
        received_at: chrono::Utc::now(),
    };
    state.publish_confirmed(std::slice::from_ref(&hint)).await?;
    Ok(StatusCode::ACCEPTED)
}
