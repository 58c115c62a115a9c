//! Users, contact folders and contacts: CRUD with Outlook's wire shape
//! (sample 07: `null`, `[]`, `{}` defaults), change keys and `If-Match`,
//! single-value extended properties (read back only through `$expand` with
//! `$filter`), per-folder delta, and change notifications for every write.

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::delta::{self, DeltaSource};
use super::error::{GResult, GraphError, Reply};
use super::model::{Contact, ContactFolder, DeltaScope, ExtProp, Mailbox, ResourceKind, Tombstone, World};
use super::router::Ctx;
use super::{lock, notifier, subscriptions, wire};

const STRING_PROPS: &[&str] = &[
    "givenName",
    "surname",
    "middleName",
    "displayName",
    "fileAs",
    "initials",
    "nickName",
    "title",
    "generation",
    "yomiGivenName",
    "yomiSurname",
    "yomiCompanyName",
    "companyName",
    "department",
    "jobTitle",
    "officeLocation",
    "profession",
    "manager",
    "assistantName",
    "businessHomePage",
    "mobilePhone",
    "spouseName",
    "personalNotes",
];
/// String properties Outlook returns as `""` rather than `null` when unset.
const EMPTY_STRING_PROPS: &[&str] = &["fileAs", "personalNotes"];
const STRING_ARRAY_PROPS: &[&str] = &["businessPhones", "homePhones", "children", "imAddresses", "categories"];
const ADDRESS_PROPS: &[&str] = &["businessAddress", "homeAddress", "otherAddress"];
const ADDRESS_FIELDS: &[&str] = &["street", "city", "state", "postalCode", "countryOrRegion"];
/// Accepted on input and ignored (server-owned).
const READ_ONLY_PROPS: &[&str] = &["id", "changeKey", "parentFolderId", "createdDateTime", "lastModifiedDateTime"];
const CONTACT_TYPE: &str = "#microsoft.graph.contact";

fn default_props() -> Map<String, Value> {
    let mut m = Map::new();
    for p in STRING_PROPS {
        let v = if EMPTY_STRING_PROPS.contains(p) { json!("") } else { Value::Null };
        m.insert((*p).to_string(), v);
    }
    for p in STRING_ARRAY_PROPS {
        m.insert((*p).to_string(), json!([]));
    }
    for p in ADDRESS_PROPS {
        m.insert((*p).to_string(), json!({}));
    }
    m.insert("emailAddresses".into(), json!([]));
    m.insert("birthday".into(), Value::Null);
    m
}

fn invalid_property(name: &str) -> GraphError {
    GraphError::body_read(format!(
        "The property '{name}' does not exist on type 'Microsoft.OutlookServices.Contact'. Make sure to only use \
         property names that are defined by the type or mark the type as open type."
    ))
}

fn bad_value(name: &str) -> GraphError {
    GraphError::body_read(format!("Cannot convert the literal value for property '{name}' to the expected type."))
}

/// Applies the writable properties of `input` to `props` (POST and PATCH);
/// returns the extended properties found in the body.
fn apply_props(props: &mut Map<String, Value>, input: &Map<String, Value>) -> GResult<Vec<ExtProp>> {
    let mut ext = Vec::new();
    for (k, v) in input {
        let key = k.as_str();
        if key.starts_with('@') || READ_ONLY_PROPS.contains(&key) {
            continue;
        }
        if STRING_PROPS.contains(&key) {
            match v {
                Value::String(_) => props.insert(k.clone(), v.clone()),
                Value::Null => {
                    let d = if EMPTY_STRING_PROPS.contains(&key) { json!("") } else { Value::Null };
                    props.insert(k.clone(), d)
                }
                _ => return Err(bad_value(key)),
            };
        } else if STRING_ARRAY_PROPS.contains(&key) {
            match v {
                Value::Array(a) if a.iter().all(Value::is_string) => props.insert(k.clone(), v.clone()),
                Value::Null => props.insert(k.clone(), json!([])),
                _ => return Err(bad_value(key)),
            };
        } else if ADDRESS_PROPS.contains(&key) {
            let mut addr = Map::new();
            match v {
                Value::Object(o) => {
                    for (f, fv) in o {
                        if f.starts_with('@') {
                            continue;
                        }
                        if !ADDRESS_FIELDS.contains(&f.as_str()) {
                            return Err(invalid_property(f));
                        }
                        match fv {
                            Value::String(s) if !s.is_empty() => {
                                addr.insert(f.clone(), fv.clone());
                            }
                            Value::String(_) | Value::Null => {}
                            _ => return Err(bad_value(f)),
                        }
                    }
                }
                Value::Null => {}
                _ => return Err(bad_value(key)),
            }
            props.insert(k.clone(), Value::Object(addr));
        } else if key == "emailAddresses" {
            let list = match v {
                Value::Null => Vec::new(),
                Value::Array(a) => a
                    .iter()
                    .map(|e| match e {
                        Value::Object(o) => {
                            let name = o.get("name").cloned().unwrap_or(Value::Null);
                            let address = o.get("address").cloned().unwrap_or(Value::Null);
                            if !(name.is_string() || name.is_null()) || !(address.is_string() || address.is_null()) {
                                return Err(bad_value("emailAddresses"));
                            }
                            Ok(json!({"name": name, "address": address}))
                        }
                        _ => Err(bad_value("emailAddresses")),
                    })
                    .collect::<GResult<Vec<_>>>()?,
                _ => return Err(bad_value(key)),
            };
            props.insert(k.clone(), Value::Array(list));
        } else if key == "birthday" {
            let out = match v {
                Value::Null => Value::Null,
                Value::String(s) => {
                    let t = DateTime::parse_from_rfc3339(s).map_err(|_| bad_value("birthday"))?;
                    json!(wire::ts_seconds(t.with_timezone(&Utc)))
                }
                _ => return Err(bad_value(key)),
            };
            props.insert(k.clone(), out);
        } else if key == "singleValueExtendedProperties" {
            ext.extend(parse_ext_props(v)?);
        } else if key == "multiValueExtendedProperties" || key == "extensions" {
            // Accepted, not modelled: hqsync does not use them.
        } else {
            return Err(invalid_property(key));
        }
    }
    Ok(ext)
}

/// Parses `singleValueExtendedProperties:[{id,value}]` from a POST/PATCH body.
pub(crate) fn parse_ext_props(v: &Value) -> GResult<Vec<ExtProp>> {
    let Value::Array(items) = v else { return Err(bad_value("singleValueExtendedProperties")) };
    let mut ext = Vec::new();
    for item in items {
        let id = item.get("id").and_then(Value::as_str).ok_or_else(|| bad_value("id"))?;
        let value = item.get("value").and_then(Value::as_str).ok_or_else(|| bad_value("value"))?;
        if ext_key(id).is_none() {
            return Err(GraphError::bad_request(
                "ErrorInvalidProperty",
                format!("The extended property id '{id}' is not valid."),
            ));
        }
        ext.push(ExtProp { id: id.to_string(), value: value.to_string() });
    }
    Ok(ext)
}

/// The expanded extended properties of an item, if `$expand` asked for any that exist.
pub(crate) fn render_ext(ext: &[ExtProp], ids: &[String]) -> Option<Value> {
    let keys: Vec<Option<String>> = ids.iter().map(|i| ext_key(i)).collect();
    let found: Vec<Value> =
        ext.iter().filter(|e| keys.contains(&ext_key(&e.id))).map(|e| json!({"id": e.id, "value": e.value})).collect();
    (!found.is_empty()).then_some(Value::Array(found))
}

const EXT_TYPES: &[&str] = &[
    "string",
    "integer",
    "boolean",
    "systemtime",
    "binary",
    "double",
    "long",
    "short",
    "float",
    "currency",
    "guid",
    "applicationtime",
    "clsid",
    "object",
];

/// The comparison key of an extended property id: case-insensitive, and the
/// full tag form `String 0x3A24001F` equals `String 0x3A24`. None if malformed.
pub(crate) fn ext_key(id: &str) -> Option<String> {
    let norm: Vec<String> = id.split_whitespace().map(str::to_ascii_lowercase).collect();
    let (ty, rest) = norm.split_first()?;
    if !EXT_TYPES.contains(&ty.as_str()) {
        return None;
    }
    let hex_ok =
        |s: &str| s.strip_prefix("0x").is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()));
    match rest {
        [tag] if hex_ok(tag) => {
            let h = &tag[2..];
            let h = if h.len() == 8 { &h[..4] } else { h };
            Some(format!("{ty} 0x{h:0>4}"))
        }
        [guid, kind, _name @ ..]
            if guid.starts_with('{') && guid.ends_with('}') && (kind == "name" || kind == "id") =>
        {
            Some(norm.join(" "))
        }
        _ => None,
    }
}

pub(crate) fn merge_ext(existing: &mut Vec<ExtProp>, new: Vec<ExtProp>) {
    for p in new {
        let key = ext_key(&p.id);
        match existing.iter_mut().find(|e| ext_key(&e.id) == key) {
            Some(e) => e.value = p.value,
            None => existing.push(p),
        }
    }
}

/// Builds a new contact from a POST body (also used by seeding).
pub(crate) fn new_contact(
    seq: u64,
    folder_id: &str,
    input: &Map<String, Value>,
    now: DateTime<Utc>,
) -> GResult<Contact> {
    let mut props = default_props();
    let ext = apply_props(&mut props, input)?;
    if !input.contains_key("displayName") {
        // Outlook composes the display name from the name parts when none is given.
        let parts: Vec<&str> = ["givenName", "middleName", "surname"]
            .iter()
            .filter_map(|k| props.get(*k).and_then(Value::as_str))
            .filter(|s| !s.is_empty())
            .collect();
        props.insert("displayName".into(), json!(parts.join(" ")));
    }
    let mut all_ext = Vec::new();
    merge_ext(&mut all_ext, ext);
    let id = wire::item_id();
    Ok(Contact {
        rest_id: id.clone(),
        id,
        folder_id: folder_id.to_string(),
        props,
        ext: all_ext,
        change_key: wire::change_key(),
        created: now,
        modified: now,
        seq,
        order: seq,
    })
}

/// Which extended properties `$expand` asks for (ids from `$filter=id eq '…'`).
pub(crate) fn expanded_ext_ids(ctx: &Ctx<'_>) -> Option<Vec<String>> {
    let expand = ctx.q("$expand")?;
    if !expand.to_ascii_lowercase().starts_with("singlevalueextendedproperties") {
        return None;
    }
    let mut ids = Vec::new();
    let mut rest = expand;
    while let Some(pos) = rest.to_ascii_lowercase().find("id eq '") {
        let after = &rest[pos + 7..];
        let Some(end) = after.find('\'') else { break };
        ids.push(after[..end].to_string());
        rest = &after[end + 1..];
    }
    Some(ids)
}

pub(crate) struct RenderOpts<'a> {
    pub ext_ids: Option<&'a [String]>,
    pub select: Option<&'a [String]>,
    pub with_type: bool,
    pub context: Option<String>,
    /// The request preferred immutable ids (`Prefer: IdType="ImmutableId"`).
    pub immutable: bool,
}

/// The id of `c` a request sees: immutable when it asked for that, else the regular one.
pub(crate) fn shown_id(c: &Contact, immutable: bool) -> &str {
    if immutable {
        &c.id
    } else {
        &c.rest_id
    }
}

/// The key of the contact `id` names: its immutable id or its current
/// regular id (a regular id from before a move names nothing: 404).
pub(crate) fn contact_key(mb: &Mailbox, id: &str) -> Option<String> {
    if mb.contacts.contains_key(id) {
        return Some(id.to_string());
    }
    mb.contacts.values().find(|c| c.rest_id == id).map(|c| c.id.clone())
}

pub(crate) fn render_contact(c: &Contact, o: &RenderOpts<'_>) -> Value {
    let mut m = wire::item_head(
        o.context.as_deref(),
        o.with_type.then_some(CONTACT_TYPE),
        &c.change_key,
        shown_id(c, o.immutable),
    );
    let mut rest = Map::new();
    rest.insert("createdDateTime".into(), json!(wire::ts_seconds(c.created)));
    rest.insert("lastModifiedDateTime".into(), json!(wire::ts_seconds(c.modified)));
    rest.insert("changeKey".into(), json!(c.change_key));
    rest.insert("parentFolderId".into(), json!(c.folder_id));
    for (k, v) in &c.props {
        rest.insert(k.clone(), v.clone());
    }
    match o.select {
        Some(sel) => {
            for (k, v) in rest {
                if sel.iter().any(|s| s.eq_ignore_ascii_case(&k)) {
                    m.insert(k, v);
                }
            }
        }
        None => m.extend(rest),
    }
    if let Some(found) = o.ext_ids.and_then(|ids| render_ext(&c.ext, ids)) {
        m.insert("singleValueExtendedProperties".into(), found);
    }
    Value::Object(m)
}

fn render_folder(f: &ContactFolder) -> Value {
    json!({"id": f.id, "displayName": f.display_name, "parentFolderId": f.parent_folder_id})
}

pub(crate) fn mailbox_mut<'w>(w: &'w mut World, ctx: &Ctx<'_>) -> GResult<&'w mut Mailbox> {
    let id = ctx.mailbox_id.as_deref().unwrap_or_default();
    w.mailboxes.iter_mut().find(|m| m.id == id).ok_or_else(GraphError::not_found)
}

pub(crate) fn mailbox<'w>(w: &'w World, ctx: &Ctx<'_>) -> GResult<&'w Mailbox> {
    let id = ctx.mailbox_id.as_deref().unwrap_or_default();
    w.mailboxes.iter().find(|m| m.id == id).ok_or_else(GraphError::not_found)
}

/// Resolves the folder of a route (`None` = default Contacts folder); 404 if unknown.
fn folder_id(mb: &Mailbox, folder: Option<&str>) -> GResult<String> {
    match folder {
        None => Ok(mb.default_contact_folder_id.clone()),
        Some(f) if mb.folder_exists(f) => Ok(f.to_string()),
        Some(_) => Err(GraphError::not_found()),
    }
}

fn render_user(mb: &Mailbox) -> Value {
    json!({
        "businessPhones": [], "displayName": mb.display_name, "givenName": mb.given_name, "jobTitle": null,
        "mail": mb.mail, "mobilePhone": null, "officeLocation": null, "preferredLanguage": "de-DE",
        "surname": mb.surname, "userPrincipalName": mb.upn, "id": mb.id,
    })
}

/// `GET /users`, whole or with one of the two filters hqsync sends:
/// `mail eq '…'` and `proxyAddresses/any(x:x eq '…')` (values compared
/// without regard to case). Any other `$filter` is answered as Graph
/// answers a filter clause it does not support (docs/graph-api.md).
pub(crate) fn list_users(ctx: &Ctx<'_>) -> GResult {
    let filter = ctx.query.iter().find(|(k, _)| k.eq_ignore_ascii_case("$filter")).map(|(_, v)| v.as_str());
    let w = lock(&ctx.shared.world);
    let matches: Box<dyn Fn(&Mailbox) -> bool> = match filter.map(parse_user_filter) {
        None => Box::new(|_| true),
        Some(Ok(UserFilter::Mail(v))) => Box::new(move |m: &Mailbox| m.mail.eq_ignore_ascii_case(&v)),
        Some(Ok(UserFilter::ProxyAddress(v))) => {
            Box::new(move |m: &Mailbox| m.proxy_addresses.iter().any(|p| p.eq_ignore_ascii_case(&v)))
        }
        Some(Err(property)) => {
            return Err(GraphError::bad_request(
                "Request_UnsupportedQuery",
                format!(
                "Unsupported or invalid query filter clause specified for property '{property}' of resource 'User'."
            ),
            ))
        }
    };
    let value: Vec<Value> = w.mailboxes.iter().filter(|m| matches(m)).map(render_user).collect();
    Ok(Reply::ok(json!({"@odata.context": format!("{}/$metadata#users", ctx.graph_root()), "value": value})))
}

/// The `$filter` forms `GET /users` answers.
#[derive(Debug, PartialEq)]
pub(crate) enum UserFilter {
    Mail(String),
    ProxyAddress(String),
}

/// An OData string literal `'…'` ('' for a quote) that is all of `s`.
fn odata_literal(s: &str) -> Option<String> {
    let inner = s.trim().strip_prefix('\'')?.strip_suffix('\'')?;
    if inner.replace("''", "").contains('\'') {
        return None;
    }
    Some(inner.replace("''", "'"))
}

/// Reads `mail eq '…'` or `proxyAddresses/any(x:x eq '…')`; anything else
/// is `Err(the property named first)`, for Graph's error message.
pub(crate) fn parse_user_filter(f: &str) -> Result<UserFilter, String> {
    let f = f.trim();
    let property = f.split([' ', '/', '(']).next().unwrap_or_default().to_string();
    let words = |s: &str| s.split_once(' ').map(|(a, b)| (a.to_string(), b.trim_start().to_string()));
    if property.eq_ignore_ascii_case("mail") {
        let (_, rest) = words(f).ok_or_else(|| property.clone())?;
        let (op, value) = words(&rest).ok_or_else(|| property.clone())?;
        if op.eq_ignore_ascii_case("eq") {
            if let Some(v) = odata_literal(&value) {
                return Ok(UserFilter::Mail(v));
            }
        }
    } else if property.eq_ignore_ascii_case("proxyAddresses") {
        let any = f.get(property.len()..).unwrap_or_default();
        if let Some(body) =
            any.get(..5).filter(|h| h.eq_ignore_ascii_case("/any(")).and_then(|_| any[5..].strip_suffix(')'))
        {
            if let Some((var, cond)) = body.split_once(':') {
                let var = var.trim();
                if let Some((lhs, rest)) = words(cond.trim()) {
                    if let Some((op, value)) = words(&rest) {
                        if lhs == var && op.eq_ignore_ascii_case("eq") {
                            if let Some(v) = odata_literal(&value) {
                                return Ok(UserFilter::ProxyAddress(v));
                            }
                        }
                    }
                }
            }
        }
    }
    Err(property)
}

pub(crate) fn get_user(ctx: &Ctx<'_>) -> GResult {
    let w = lock(&ctx.shared.world);
    let mut v = render_user(mailbox(&w, ctx)?);
    v["@odata.context"] = json!(format!("{}/$metadata#users/$entity", ctx.graph_root()));
    Ok(Reply::ok(v))
}

pub(crate) fn list_folders(ctx: &Ctx<'_>) -> GResult {
    let w = lock(&ctx.shared.world);
    let mb = mailbox(&w, ctx)?;
    let value: Vec<Value> = mb.contact_folders.iter().map(render_folder).collect();
    Ok(Reply::ok(json!({
        "@odata.context": format!("{}/$metadata#users('{}')/contactFolders", ctx.graph_root(), mb.id),
        "value": value,
    })))
}

fn folder_name(body: &Map<String, Value>) -> GResult<Option<String>> {
    match body.get("displayName") {
        None => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(GraphError::bad_request("ErrorInvalidRequest", "The folder name cannot be empty.")),
    }
}

fn folder_exists_error() -> GraphError {
    GraphError::new(StatusCode::CONFLICT, "ErrorFolderExists", "A folder with the specified name already exists.")
}

pub(crate) fn create_folder(ctx: &Ctx<'_>) -> GResult {
    let body = ctx.json_object()?;
    let name = folder_name(&body)?
        .ok_or_else(|| GraphError::bad_request("ErrorInvalidRequest", "The folder name cannot be empty."))?;
    let mut w = lock(&ctx.shared.world);
    let seq = w.next_seq();
    let mb = mailbox_mut(&mut w, ctx)?;
    if mb.contact_folders.iter().any(|f| f.display_name.eq_ignore_ascii_case(&name)) {
        return Err(folder_exists_error());
    }
    let folder = ContactFolder {
        id: wire::folder_id(),
        display_name: name,
        parent_folder_id: mb.default_contact_folder_id.clone(),
        seq,
    };
    let mut v = render_folder(&folder);
    v["@odata.context"] = json!(format!("{}/$metadata#users('{}')/contactFolders/$entity", ctx.graph_root(), mb.id));
    mb.contact_folders.push(folder);
    drop(w);
    lock(&ctx.shared.stats).count_write("contactFolder");
    Ok(Reply::created(v))
}

fn find_folder(mb: &Mailbox, id: &str) -> GResult<ContactFolder> {
    if id == mb.default_contact_folder_id {
        return Ok(ContactFolder {
            id: id.to_string(),
            display_name: "Contacts".into(),
            parent_folder_id: mb.root_folder_id.clone(),
            seq: 0,
        });
    }
    mb.contact_folders.iter().find(|f| f.id == id).cloned().ok_or_else(GraphError::not_found)
}

pub(crate) fn get_folder(ctx: &Ctx<'_>, folder: &str) -> GResult {
    let w = lock(&ctx.shared.world);
    let mb = mailbox(&w, ctx)?;
    let f = find_folder(mb, folder)?;
    let mut v = render_folder(&f);
    v["@odata.context"] = json!(format!("{}/$metadata#users('{}')/contactFolders/$entity", ctx.graph_root(), mb.id));
    Ok(Reply::ok(v))
}

pub(crate) fn update_folder(ctx: &Ctx<'_>, folder: &str) -> GResult {
    let body = ctx.json_object()?;
    let name = folder_name(&body)?;
    let mut w = lock(&ctx.shared.world);
    let seq = w.next_seq();
    let mb = mailbox_mut(&mut w, ctx)?;
    find_folder(mb, folder)?;
    if folder == mb.default_contact_folder_id {
        return Err(GraphError::new(
            StatusCode::FORBIDDEN,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        ));
    }
    if let Some(name) = &name {
        if mb.contact_folders.iter().any(|f| f.id != folder && f.display_name.eq_ignore_ascii_case(name)) {
            return Err(folder_exists_error());
        }
    }
    let f = mb.contact_folders.iter_mut().find(|f| f.id == folder).ok_or_else(GraphError::not_found)?;
    if let Some(name) = name {
        f.display_name = name;
    }
    f.seq = seq;
    let v = render_folder(f);
    drop(w);
    lock(&ctx.shared.stats).count_write("contactFolder");
    Ok(Reply::ok(v))
}

pub(crate) fn delete_folder(ctx: &Ctx<'_>, folder: &str) -> GResult {
    let mut w = lock(&ctx.shared.world);
    let seq = w.next_seq();
    let mb = mailbox_mut(&mut w, ctx)?;
    find_folder(mb, folder)?;
    if folder == mb.default_contact_folder_id {
        return Err(GraphError::new(
            StatusCode::FORBIDDEN,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        ));
    }
    mb.folder_tombstones.push(Tombstone { folder_id: String::new(), id: folder.to_string(), seq, rest_id: None });
    mb.contact_folders.retain(|f| f.id != folder);
    mb.contacts.retain(|_, c| c.folder_id != folder);
    mb.contact_tombstones.retain(|t| t.folder_id != folder);
    let mb_id = mb.id.clone();
    // Delta cursors and subscriptions of the folder die with it.
    w.delta_tokens.retain(|_, c| {
        c.scope != DeltaScope::FolderContacts { mailbox_id: mb_id.clone(), folder_id: folder.to_string() }
    });
    w.subscriptions.retain(|_, s| s.folder_id.as_deref() != Some(folder));
    drop(w);
    lock(&ctx.shared.stats).count_write("contactFolder");
    Ok(Reply::no_content())
}

/// `$filter=singleValueExtendedProperties/any(ep: ep/id eq '…' and ep/value eq '…')`.
fn ext_filter(filter: &str) -> GResult<(String, String)> {
    let quoted: Vec<&str> = filter.split('\'').skip(1).step_by(2).collect();
    let lower = filter.to_ascii_lowercase();
    if lower.starts_with("singlevalueextendedproperties/any(") && quoted.len() == 2 {
        Ok((quoted[0].to_string(), quoted[1].to_string()))
    } else {
        Err(GraphError::bad_request("ErrorInvalidUrlQueryFilter", "The $filter expression is not supported."))
    }
}

pub(crate) fn list_contacts(ctx: &Ctx<'_>, folder: Option<&str>) -> GResult {
    let top = ctx.page_size(10);
    let skip = ctx.q("$skip").and_then(|s| s.parse::<usize>().ok()).unwrap_or(0);
    let filter = ctx.q("$filter").map(ext_filter).transpose()?;
    let ext_ids = expanded_ext_ids(ctx);
    let select: Option<Vec<String>> = ctx.q("$select").map(|s| s.split(',').map(|p| p.trim().to_string()).collect());
    let w = lock(&ctx.shared.world);
    let mb = mailbox(&w, ctx)?;
    let fid = folder_id(mb, folder)?;
    let mut items: Vec<&Contact> = mb
        .contacts
        .values()
        .filter(|c| c.folder_id == fid)
        .filter(|c| match &filter {
            Some((id, value)) => c.ext.iter().any(|e| ext_key(&e.id) == ext_key(id) && &e.value == value),
            None => true,
        })
        .collect();
    items.sort_by_key(|c| c.order);
    let total = items.len();
    let opts = RenderOpts {
        ext_ids: ext_ids.as_deref(),
        select: select.as_deref(),
        with_type: false,
        context: None,
        immutable: ctx.immutable_ids(),
    };
    let value: Vec<Value> = items.iter().skip(skip).take(top).map(|c| render_contact(c, &opts)).collect();
    let mut out = json!({
        "@odata.context": format!("{}/$metadata#users('{}')/contactFolders('{}')/contacts", ctx.graph_root(), mb.id, fid),
        "value": value,
    });
    if skip + top < total {
        let mut q: Vec<(String, String)> =
            ctx.query.iter().filter(|(k, _)| k != "$skip" && k != "$top").cloned().collect();
        q.push(("$top".into(), top.to_string()));
        q.push(("$skip".into(), (skip + top).to_string()));
        let qs = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(q).finish();
        out["@odata.nextLink"] = json!(format!("{}{}?{}", ctx.graph_root(), ctx.req.path, qs));
    }
    Ok(Reply::ok(out))
}

fn check_if_match(ctx: &Ctx<'_>, c: &Contact) -> GResult<()> {
    match ctx.if_match() {
        Some(m) if m != "*" && m != wire::etag(&c.change_key) && m.trim_matches('"') != c.change_key => {
            Err(GraphError::conflict_etag())
        }
        _ => Ok(()),
    }
}

fn contact_in<'m>(mb: &'m Mailbox, folder: Option<&str>, id: &str) -> GResult<&'m Contact> {
    let key = contact_key(mb, id).ok_or_else(GraphError::not_found)?;
    let c = mb.contacts.get(&key).ok_or_else(GraphError::not_found)?;
    match folder {
        Some(f) if f != c.folder_id => Err(GraphError::not_found()),
        _ => Ok(c),
    }
}

fn entity_context(ctx: &Ctx<'_>, mb: &Mailbox) -> String {
    format!("{}/$metadata#users('{}')/contacts/$entity", ctx.graph_root(), mb.id)
}

/// Queues change notifications for a contact write; `ids` = (immutable, regular).
#[allow(clippy::too_many_arguments)]
pub(crate) fn notify_contact(
    shared: &std::sync::Arc<super::Shared>,
    w: &World,
    mb_id: &str,
    ids: (&str, &str),
    folder: &str,
    etag: &str,
    change: &str,
) {
    let faults = lock(&shared.faults).clone();
    let items = subscriptions::matching_ids(w, &faults, mb_id, ResourceKind::Contacts, Some(folder), ids, etag, change);
    notifier::enqueue(shared, items);
}

pub(crate) fn create_contact(ctx: &Ctx<'_>, folder: Option<&str>) -> GResult {
    let body = ctx.json_object()?;
    let now = ctx.shared.clock.now();
    let mut w = lock(&ctx.shared.world);
    let seq = w.next_seq();
    let mb = mailbox_mut(&mut w, ctx)?;
    let fid = folder_id(mb, folder)?;
    let contact = new_contact(seq, &fid, &body, now)?;
    let v = render_contact(
        &contact,
        &RenderOpts {
            ext_ids: None,
            select: None,
            with_type: false,
            context: Some(entity_context(ctx, mb)),
            immutable: ctx.immutable_ids(),
        },
    );
    let (mb_id, cid, etag) = (mb.id.clone(), contact.id.clone(), wire::etag(&contact.change_key));
    lock(&ctx.shared.write_log).record("contact", Some(&mb.upn), &cid, &v);
    mb.contacts.insert(contact.id.clone(), contact);
    notify_contact(ctx.shared, &w, &mb_id, (&cid, &cid), &fid, &etag, "created");
    drop(w);
    lock(&ctx.shared.stats).count_write("contact");
    Ok(Reply::created(v))
}

pub(crate) fn get_contact(ctx: &Ctx<'_>, folder: Option<&str>, id: &str) -> GResult {
    let ext_ids = expanded_ext_ids(ctx);
    let select: Option<Vec<String>> = ctx.q("$select").map(|s| s.split(',').map(|p| p.trim().to_string()).collect());
    let w = lock(&ctx.shared.world);
    let mb = mailbox(&w, ctx)?;
    let c = contact_in(mb, folder, id)?;
    Ok(Reply::ok(render_contact(
        c,
        &RenderOpts {
            ext_ids: ext_ids.as_deref(),
            select: select.as_deref(),
            with_type: false,
            context: Some(entity_context(ctx, mb)),
            immutable: ctx.immutable_ids(),
        },
    )))
}

pub(crate) fn update_contact(ctx: &Ctx<'_>, folder: Option<&str>, id: &str) -> GResult {
    let body = ctx.json_object()?;
    let now = ctx.shared.clock.now();
    let mut w = lock(&ctx.shared.world);
    let seq = w.next_seq();
    let mb = mailbox_mut(&mut w, ctx)?;
    let key = contact_in(mb, folder, id)?.id.clone();
    let context = entity_context(ctx, mb);
    let c = mb.contacts.get_mut(&key).ok_or_else(GraphError::not_found)?;
    check_if_match(ctx, c)?;
    let mut props = c.props.clone();
    let ext = apply_props(&mut props, &body)?;
    c.props = props;
    merge_ext(&mut c.ext, ext);
    c.change_key = wire::change_key();
    c.modified = now;
    c.seq = seq;
    let opts = RenderOpts {
        ext_ids: None,
        select: None,
        with_type: false,
        context: Some(context),
        immutable: ctx.immutable_ids(),
    };
    let v = render_contact(c, &opts);
    let (mb_id, fid, etag, rest) = (mb.id.clone(), c.folder_id.clone(), wire::etag(&c.change_key), c.rest_id.clone());
    lock(&ctx.shared.write_log).record("contact", Some(&mb.upn), &key, &v);
    notify_contact(ctx.shared, &w, &mb_id, (&key, &rest), &fid, &etag, "updated");
    drop(w);
    lock(&ctx.shared.stats).count_write("contact");
    Ok(Reply::ok(v))
}

pub(crate) fn delete_contact(ctx: &Ctx<'_>, folder: Option<&str>, id: &str) -> GResult {
    let mut w = lock(&ctx.shared.world);
    let seq = w.next_seq();
    let mb = mailbox_mut(&mut w, ctx)?;
    let c = contact_in(mb, folder, id)?;
    check_if_match(ctx, c)?;
    let (key, rest, fid, etag) = (c.id.clone(), c.rest_id.clone(), c.folder_id.clone(), wire::etag(&c.change_key));
    mb.contacts.remove(&key);
    let rest_id = (rest != key).then(|| rest.clone());
    mb.contact_tombstones.push(Tombstone { folder_id: fid.clone(), id: key.clone(), seq, rest_id });
    let mb_id = mb.id.clone();
    notify_contact(ctx.shared, &w, &mb_id, (&key, &rest), &fid, &etag, "deleted");
    drop(w);
    lock(&ctx.shared.stats).count_write("contact");
    Ok(Reply::no_content())
}

/// Moves contact `id` (immutable or current regular id) of `mailbox` into
/// folder `folder_id`, as a user drags it in Outlook: the immutable id
/// stays, the regular id changes, the change key is new; the old folder's
/// delta reports it removed and its subscriptions `deleted`, the new
/// folder's delta and subscriptions see it `created`. Graph documents how
/// ids behave on a move (learn.microsoft.com/graph/outlook-immutable-id),
/// not which notifications a folder-scoped subscription gets: removal from
/// one folder and arrival in the other is what its delta shows.
pub(crate) fn move_contact(
    shared: &std::sync::Arc<super::Shared>,
    mailbox: &str,
    id: &str,
    folder_id: &str,
) -> Result<Value, (StatusCode, String)> {
    let now = shared.clock.now();
    let mut w = lock(&shared.world);
    let i = w.mailbox_index(mailbox).ok_or((StatusCode::NOT_FOUND, format!("no mailbox '{mailbox}'")))?;
    let key = contact_key(&w.mailboxes[i], id).ok_or((StatusCode::NOT_FOUND, format!("no contact '{id}'")))?;
    if !w.mailboxes[i].folder_exists(folder_id) {
        return Err((StatusCode::NOT_FOUND, format!("no contact folder '{folder_id}' in that mailbox")));
    }
    let from = w.mailboxes[i].contacts.get(&key).map(|c| c.folder_id.clone()).unwrap_or_default();
    if from == folder_id {
        return Err((StatusCode::BAD_REQUEST, "the contact is already in that folder".to_string()));
    }
    let removed_seq = w.next_seq();
    let seq = w.next_seq();
    let mb = &mut w.mailboxes[i];
    let mb_id = mb.id.clone();
    let Some(c) = mb.contacts.get_mut(&key) else {
        return Err((StatusCode::NOT_FOUND, format!("no contact '{id}'")));
    };
    let old_rest = std::mem::replace(&mut c.rest_id, wire::item_id());
    let old_etag = wire::etag(&c.change_key);
    c.folder_id = folder_id.to_string();
    c.change_key = wire::change_key();
    c.modified = now;
    c.seq = seq;
    let (new_rest, etag) = (c.rest_id.clone(), wire::etag(&c.change_key));
    let rest_id = (old_rest != key).then(|| old_rest.clone());
    mb.contact_tombstones.push(Tombstone { folder_id: from.clone(), id: key.clone(), seq: removed_seq, rest_id });
    notify_contact(shared, &w, &mb_id, (&key, &old_rest), &from, &old_etag, "deleted");
    notify_contact(shared, &w, &mb_id, (&key, &new_rest), folder_id, &etag, "created");
    drop(w);
    lock(&shared.stats).count_write("contactMove");
    Ok(json!({"id": key, "restId": new_rest, "previousRestId": old_rest, "parentFolderId": folder_id}))
}

struct FolderContacts {
    mailbox_id: String,
    folder_id: String,
}

impl FolderContacts {
    fn mailbox<'w>(&self, w: &'w World) -> Option<&'w Mailbox> {
        w.mailboxes.iter().find(|m| m.id == self.mailbox_id)
    }
}

impl DeltaSource for FolderContacts {
    fn initial_ids(&self, w: &World) -> Vec<String> {
        let Some(mb) = self.mailbox(w) else { return Vec::new() };
        let mut items: Vec<&Contact> = mb.contacts.values().filter(|c| c.folder_id == self.folder_id).collect();
        items.sort_by_key(|c| c.order);
        items.into_iter().map(|c| c.id.clone()).collect()
    }

    fn changed_ids(&self, w: &World, watermark: u64) -> Vec<String> {
        let Some(mb) = self.mailbox(w) else { return Vec::new() };
        let mut changed: Vec<(u64, String)> = mb
            .contacts
            .values()
            .filter(|c| c.folder_id == self.folder_id && c.seq > watermark)
            .map(|c| (c.seq, c.id.clone()))
            .chain(
                mb.contact_tombstones
                    .iter()
                    .filter(|t| t.folder_id == self.folder_id && t.seq > watermark)
                    .map(|t| (t.seq, t.id.clone())),
            )
            .collect();
        changed.sort();
        let mut seen = std::collections::HashSet::new();
        changed.into_iter().filter(|(_, id)| seen.insert(id.clone())).map(|(_, id)| id).collect()
    }
}

/// `GET …/contactFolders/{fid}/contacts/delta` (and `/contacts/delta` for the default folder).
pub(crate) fn delta(ctx: &Ctx<'_>, folder: Option<&str>) -> GResult {
    let mut w = lock(&ctx.shared.world);
    let mb = mailbox(&w, ctx)?;
    let fid = folder_id(mb, folder)?;
    let mb_id = mb.id.clone();
    let source = FolderContacts { mailbox_id: mb_id.clone(), folder_id: fid.clone() };
    let scope = DeltaScope::FolderContacts { mailbox_id: mb_id, folder_id: fid.clone() };
    let page = delta::next_page(&mut w, ctx, scope, &ctx.req.path, &source)?;
    let mb = mailbox(&w, ctx)?;
    let immutable = ctx.immutable_ids();
    let opts = RenderOpts { ext_ids: None, select: page.select.as_deref(), with_type: true, context: None, immutable };
    let out = page.body(ctx, "contact", CONTACT_TYPE, |id| {
        if let Some(c) = mb.contacts.get(id).filter(|c| c.folder_id == fid) {
            return Some(render_contact(c, &opts));
        }
        // Gone from this folder (deleted, or moved away): removed under the id it had here.
        let t = mb.contact_tombstones.iter().rev().find(|t| t.folder_id == fid && t.id == id)?;
        let shown = if immutable { t.id.as_str() } else { t.rest_id.as_deref().unwrap_or(&t.id) };
        Some(json!({"@odata.type": CONTACT_TYPE, "id": shown, "@removed": {"reason": "deleted"}}))
    });
    Ok(Reply::ok(out))
}

struct Folders {
    mailbox_id: String,
}

impl DeltaSource for Folders {
    fn initial_ids(&self, w: &World) -> Vec<String> {
        w.mailboxes
            .iter()
            .find(|m| m.id == self.mailbox_id)
            .map(|mb| mb.contact_folders.iter().map(|f| f.id.clone()).collect())
            .unwrap_or_default()
    }

    fn changed_ids(&self, w: &World, watermark: u64) -> Vec<String> {
        let Some(mb) = w.mailboxes.iter().find(|m| m.id == self.mailbox_id) else { return Vec::new() };
        let mut changed: Vec<(u64, String)> = mb
            .contact_folders
            .iter()
            .filter(|f| f.seq > watermark)
            .map(|f| (f.seq, f.id.clone()))
            .chain(mb.folder_tombstones.iter().filter(|t| t.seq > watermark).map(|t| (t.seq, t.id.clone())))
            .collect();
        changed.sort();
        let mut seen = std::collections::HashSet::new();
        changed.into_iter().filter(|(_, id)| seen.insert(id.clone())).map(|(_, id)| id).collect()
    }
}

/// `GET /users/{u}/contactFolders/delta`: folders added, renamed or deleted.
pub(crate) fn folders_delta(ctx: &Ctx<'_>) -> GResult {
    let mut w = lock(&ctx.shared.world);
    let mb_id = mailbox(&w, ctx)?.id.clone();
    let source = Folders { mailbox_id: mb_id.clone() };
    let page = delta::next_page(&mut w, ctx, DeltaScope::ContactFolders { mailbox_id: mb_id }, &ctx.req.path, &source)?;
    let mb = mailbox(&w, ctx)?;
    const FOLDER_TYPE: &str = "#microsoft.graph.contactFolder";
    let out = page.body(ctx, "contactFolder", FOLDER_TYPE, |id| {
        mb.contact_folders.iter().find(|f| f.id == id).map(|f| {
            let mut v = render_folder(f);
            v["@odata.type"] = json!(FOLDER_TYPE);
            v
        })
    });
    Ok(Reply::ok(out))
}

/// Item counts for `/_sim/stats`.
pub(crate) fn counts(mb: &Mailbox) -> Value {
    json!({"contacts": mb.contacts.len(), "contactFolders": mb.contact_folders.len()})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_answer_only_the_two_lookup_filters() {
        assert_eq!(parse_user_filter("mail eq 'anna@x.de'"), Ok(UserFilter::Mail("anna@x.de".into())));
        assert_eq!(parse_user_filter("mail eq 'o''brien@x.de'"), Ok(UserFilter::Mail("o'brien@x.de".into())));
        assert_eq!(
            parse_user_filter("proxyAddresses/any(p:p eq 'smtp:a@x.de')"),
            Ok(UserFilter::ProxyAddress("smtp:a@x.de".into()))
        );
        assert_eq!(
            parse_user_filter("proxyAddresses/any(x: x eq 'SMTP:a@x.de')"),
            Ok(UserFilter::ProxyAddress("SMTP:a@x.de".into()))
        );
        assert_eq!(parse_user_filter("mail eq 'a' or mail eq 'b'"), Err("mail".into()));
        assert_eq!(parse_user_filter("endsWith(mail,'@x.de')"), Err("endsWith".into()));
        assert_eq!(parse_user_filter("userPrincipalName eq 'a@x.de'"), Err("userPrincipalName".into()));
        assert_eq!(parse_user_filter("proxyAddresses/any(p:q eq 'smtp:a')"), Err("proxyAddresses".into()));
        assert_eq!(parse_user_filter("mail ne 'a@x.de'"), Err("mail".into()));
    }

    #[test]
    fn fax_property_ids_compare_case_insensitively_and_in_full_tag_form() {
        assert_eq!(ext_key("String 0x3A24"), ext_key("string 0x3a24"));
        assert_eq!(ext_key("String 0x3A24001F"), ext_key("String 0x3A24"));
        assert_ne!(ext_key("String 0x3A25"), ext_key("String 0x3A24"));
        assert!(ext_key("String {00020329-0000-0000-C000-000000000046} Name hqId").is_some());
        assert!(ext_key("Nonsense 0x3A24").is_none());
        assert!(ext_key("String 3A24").is_none());
    }

    #[test]
    fn new_contact_has_outlook_defaults_and_composed_display_name() {
        let input = json!({"givenName": "Alex", "surname": "Wilber"});
        let c = new_contact(1, "F", input.as_object().unwrap(), Utc::now()).unwrap();
        assert_eq!(c.props["displayName"], json!("Alex Wilber"));
        assert_eq!(c.props["fileAs"], json!(""));
        assert_eq!(c.props["initials"], Value::Null);
        assert_eq!(c.props["homeAddress"], json!({}));
        assert_eq!(c.props["businessPhones"], json!([]));
    }

    #[test]
    fn unknown_and_mistyped_properties_are_rejected() {
        let bad = json!({"faxNumber": "1"});
        assert!(new_contact(1, "F", bad.as_object().unwrap(), Utc::now()).is_err());
        let mistyped = json!({"businessPhones": "1"});
        assert!(new_contact(1, "F", mistyped.as_object().unwrap(), Utc::now()).is_err());
    }
}
