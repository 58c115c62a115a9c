//! The helloHQ side of the connection test: whether the API token is
//! accepted.

use serde_json::Value;

use super::Check;
use crate::connectors::hellohq::client::{HellohqClient, HellohqClientConfig, HqError};
use crate::model::capabilities::HellohqCapabilities;
use crate::store::Tenant;

/// Token check; probes record their answers in `caps`.
pub(super) async fn checks(t: &Tenant, allow_private: bool, _caps: &mut HellohqCapabilities) -> Vec<Check> {
    const NAME: &str = "hellohq_token";
    let cfg = HellohqClientConfig {
        allow_private_addresses: allow_private,
        ..HellohqClientConfig::new(t.hellohq.base_url.clone(), t.hellohq.token.clone())
    };
    let c = match HellohqClient::new(cfg) {
        Ok(c) => c,
        Err(e) => return vec![Check::fail(NAME, e.to_string(), "check hellohq.base_url")],
    };
    vec![match c.get::<Value>("/v2/Users", &[("top".into(), "1".into())]).await {
        Ok(_) => Check::pass(NAME, "token accepted"),
        Err(e @ HqError::Unauthorized { .. }) => Check::fail(
            NAME,
            e.to_string(),
            "create a new API token for the sync user in helloHQ and set hellohq.token",
        ),
        Err(e) => Check::fail(NAME, e.to_string(), "check hellohq.base_url and that helloHQ is reachable"),
    }]
}
