//! The OpenAPI document's frame. Paths come from the handlers' own
//! `#[utoipa::path]` annotations via the router (see `router_and_spec`), so
//! the document and the routes cannot drift; `openapi/hqsync.json` is the
//! committed rendering, checked by `tests/openapi.rs`.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The admin API's bearer JWT.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.bearer_format = Some("JWT".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(http));
    }
}

#[derive(OpenApi)]
#[openapi(
    modifiers(&BearerAuth),
    info(
        title = "hqsync",
        description = "Keeps appointments, tasks and contacts in step between helloHQ and Exchange Online.",
        license(name = "Proprietary")
    ),
    tags(
        (name = "ingress", description = "Change notifications from Microsoft Graph and webhooks from helloHQ"),
        (name = "ops", description = "Health, readiness and metrics"),
        (name = "admin", description = "Tenants, mailboxes, journal, plan and dead letters (bearer JWT)"),
    )
)]
pub struct ApiDoc;

/// The document as committed in `openapi/hqsync.json` (pretty JSON, newline-terminated).
pub fn render() -> String {
    let mut spec = super::openapi_spec();
    spec.info.version = env!("CARGO_PKG_VERSION").to_string();
    let s = spec.to_pretty_json().expect("the OpenAPI document serialises");
    // utoipa 5.5 writes a Link's `operationId` in snake case; OpenAPI (and
    // the tools that follow links, e.g. Schemathesis) read camel case. No
    // schema here has a property of that name, so the key is only a link's.
    let mut s = s.replace("\"operation_id\": ", "\"operationId\": ");
    s.push('\n');
    s
}
