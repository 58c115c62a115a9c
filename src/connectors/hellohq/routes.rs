//! The helloHQ routes hqsync's connector sends requests to: exactly the
//! rows of `docs/hellohq-api.md` marked "hqsync: yes" (tests/hellohq_routes.rs
//! compares this list, the simulator's and that table). Templates name a
//! path parameter `{…}` (v2) or a key `Name({…})` (v1 OData).

/// (method, route template) of every request the connector may send.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v2/Users"),
    ("GET", "/v2/Users/{id}"),
    ("GET", "/v2/CompanyTypes"),
    ("GET", "/v2/Companies"),
    ("POST", "/v2/Companies"),
    ("GET", "/v2/Companies/{id}"),
    ("PUT", "/v2/Companies/{id}"),
    ("DELETE", "/v2/Companies/{id}"),
    ("GET", "/v2/ContactPersons"),
    ("POST", "/v2/ContactPersons"),
    ("GET", "/v2/ContactPersons/{id}"),
    ("PUT", "/v2/ContactPersons/{id}"),
    ("DELETE", "/v2/ContactPersons/{id}"),
    ("GET", "/v2/Projects"),
    ("GET", "/v2/Projects/{id}"),
    ("GET", "/v2/Projects/Tasks"),
    ("POST", "/v2/Projects/{id}/Tasks"),
    ("PUT", "/v2/Projects/{id}/Tasks/{id}"),
    ("GET", "/v2/Absences"),
    ("GET", "/v2/Absences/{id}"),
    ("GET", "/v1/ProjectTasks({id})"),
    ("DELETE", "/v1/ProjectTasks({id})"),
    ("GET", "/v1/ProjectTasks({id})/Assignments"),
    ("POST", "/v1/ProjectTasks({id})/Assignments"),
    ("DELETE", "/v1/ProjectTasks({id})/Assignments({id})"),
    ("GET", "/v1/ContactPersons"),
    ("GET", "/v1/ContactPersons({id})"),
    ("PUT", "/v1/ContactPersons({id})"),
    ("GET", "/v1/Projects"),
    ("GET", "/v1/Projects({id})"),
    ("GET", "/v1/Leads"),
    ("GET", "/v1/Leads({id})"),
    ("GET", "/v1/ConfigSystemEvents/do.GetDeleted()"),
];

/// A template with every parameter name blanked (`{id}`, `{task_id}`,
/// `{Id}` → `{}`), so templates written by different parts compare equal.
pub fn normalize(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut in_param = false;
    for c in template.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push('{');
            }
            '}' => {
                in_param = false;
                out.push('}');
            }
            _ if in_param => {}
            _ => out.push(c),
        }
    }
    out
}

/// True when the concrete `path` (no query) is an instance of `template`.
pub fn matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    t.len() == p.len() && t.iter().zip(&p).all(|(t, p)| segment_matches(t, p))
}

fn segment_matches(t: &str, p: &str) -> bool {
    if t.starts_with('{') && t.ends_with('}') {
        // helloHQ ids are int32 (A1): `/v2/Projects/Tasks` is no project id.
        return !p.is_empty() && p.chars().all(|c| c.is_ascii_digit());
    }
    match (t.split_once('('), p.split_once('(')) {
        (Some((tn, tr)), Some((pn, pr))) if tr.starts_with('{') && !t.ends_with("()") => {
            tn == pn && pr.strip_suffix(')').is_some_and(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_digit()))
        }
        _ => t == p,
    }
}

/// The connector's template for a request, if it is one of [`ROUTES`].
pub fn route_of(method: &str, path: &str) -> Option<&'static str> {
    ROUTES.iter().find(|(m, t)| m.eq_ignore_ascii_case(method) && matches(t, path)).map(|(_, t)| *t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concrete_paths_match_their_templates_only() {
        assert_eq!(route_of("GET", "/v1/ProjectTasks(12)"), Some("/v1/ProjectTasks({id})"));
        assert_eq!(
            route_of("DELETE", "/v1/ProjectTasks(12)/Assignments(3)"),
            Some("/v1/ProjectTasks({id})/Assignments({id})")
        );
        assert_eq!(route_of("PUT", "/v2/Projects/4/Tasks/9"), Some("/v2/Projects/{id}/Tasks/{id}"));
        assert_eq!(route_of("GET", "/v2/Projects/Tasks"), Some("/v2/Projects/Tasks"));
        assert_eq!(
            route_of("GET", "/v1/ConfigSystemEvents/do.GetDeleted()"),
            Some("/v1/ConfigSystemEvents/do.GetDeleted()")
        );
        // The withdrawn flat routes are not the connector's.
        assert_eq!(route_of("GET", "/v2/Projects/Tasks/9"), None);
        assert_eq!(route_of("PUT", "/v2/Projects/Tasks/9"), None);
        assert_eq!(route_of("GET", "/v2/Resources"), None);
        assert_eq!(normalize("/v2/Projects/{id}/Tasks/{task_id}"), "/v2/Projects/{}/Tasks/{}");
    }
}
