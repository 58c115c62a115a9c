//! The canonical contact (SPEC §5) and its two wire forms: a Graph
//! `contact` (fax as the MAPI extended property, the helloHQ id as our own
//! tag) and a helloHQ contact person (email, fax and website live on the
//! default address; the private address is the v1 address described
//! "Privat", contract C3). Each conversion exists once, here.
//!
//! Canonical values are normalised (trimmed, empty = absent) so that two
//! reads of the same record always compare equal, whichever side they came
//! from: the engine's fingerprints and three-way merge rely on that.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::connectors::hellohq::wire::{Address, AddressV1, ContactPerson, ContactPersonV1};

/// Graph extended property holding the business fax (PidTagBusinessFaxNumber).
pub const FAX_PROPERTY_ID: &str = "String 0x3A24";
/// Graph extended property tagging a mirrored contact with its helloHQ id:
/// a replayed create, or a notification racing the link row, finds it.
pub const HQ_ID_PROPERTY_ID: &str = "String {6f1c2b7e-3d4a-4e59-9b0c-8a1d2e3f4b5c} Name hqsyncHqId";
/// Domain of the placeholder address Exchange gets for a contact without one.
pub const PLACEHOLDER_DOMAIN: &str = "nomail.de";

/// A postal address as both sides can hold it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PostalAddress {
    /// Street and house number in one line (Graph has one field).
    pub street: Option<String>,
    pub postal_code: Option<String>,
    pub city: Option<String>,
    /// ISO 3166-1 alpha-2 where recognised, else the text as entered.
    pub country: Option<String>,
}

/// A contact person, as synchronised.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Contact {
    pub given_name: Option<String>,
    pub surname: Option<String>,
    pub job_title: Option<String>,
    pub company_name: Option<String>,
    pub business_phone: Option<String>,
    pub mobile_phone: Option<String>,
    pub fax: Option<String>,
    /// Never the `@nomail.de` placeholder.
    pub email: Option<String>,
    pub home_address: Option<PostalAddress>,
    pub business_address: Option<PostalAddress>,
    pub website: Option<String>,
}

/// The canonical field names, in SPEC order (merge and journal use them).
pub const FIELDS: [&str; 11] = [
    "given_name",
    "surname",
    "job_title",
    "company_name",
    "business_phone",
    "mobile_phone",
    "fax",
    "email",
    "home_address",
    "business_address",
    "website",
];

fn clean(s: Option<&str>) -> Option<String> {
    s.map(str::trim).filter(|s| !s.is_empty()).map(str::to_string)
}

fn clean_owned(s: &Option<String>) -> Option<String> {
    clean(s.as_deref())
}

impl PostalAddress {
    fn normalised(self) -> Option<PostalAddress> {
        let a = PostalAddress {
            street: clean_owned(&self.street),
            postal_code: clean_owned(&self.postal_code),
            city: clean_owned(&self.city),
            country: clean_owned(&self.country).map(|c| country_code(&c)),
        };
        // A country alone is no address (helloHQ needs one on every address
        // it stores, so it would otherwise appear out of nothing).
        let empty = a.street.is_none() && a.postal_code.is_none() && a.city.is_none();
        (!empty).then_some(a)
    }
}

impl Contact {
    /// The same record with every value trimmed and empty values absent.
    pub fn normalised(self) -> Contact {
        Contact {
            given_name: clean_owned(&self.given_name),
            surname: clean_owned(&self.surname),
            job_title: clean_owned(&self.job_title),
            company_name: clean_owned(&self.company_name),
            business_phone: clean_owned(&self.business_phone),
            mobile_phone: clean_owned(&self.mobile_phone),
            fax: clean_owned(&self.fax),
            email: clean_owned(&self.email).filter(|e| !is_placeholder(e)),
            home_address: self.home_address.and_then(PostalAddress::normalised),
            business_address: self.business_address.and_then(PostalAddress::normalised),
            website: clean_owned(&self.website),
        }
    }

    /// "Erika Muster" (or whichever name exists).
    pub fn display_name(&self) -> String {
        [self.given_name.as_deref(), self.surname.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(" ")
    }

    /// The address Exchange gets: the real one, else the placeholder.
    pub fn exchange_email(&self) -> String {
        self.email.clone().unwrap_or_else(|| placeholder_email(self.given_name.as_deref(), self.surname.as_deref()))
    }

    /// The record as a JSON object keyed by [`FIELDS`] (absent = null).
    pub fn to_fields(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }

    /// The inverse of [`Contact::to_fields`]; unknown keys are ignored.
    pub fn from_fields(fields: &Map<String, Value>) -> Contact {
        serde_json::from_value::<Contact>(Value::Object(fields.clone())).unwrap_or_default().normalised()
    }
}

// ---- placeholder email ---------------------------------------------------------

/// True for an address hqsync may have invented (`…@nomail.de`): it never
/// flows back to helloHQ as a real address.
pub fn is_placeholder(email: &str) -> bool {
    email.trim().rsplit_once('@').is_some_and(|(_, d)| d.eq_ignore_ascii_case(PLACEHOLDER_DOMAIN))
}

/// `Firstname.Lastname@nomail.de`: umlauts and ß transliterated, spaces and
/// characters invalid in a local part dropped, one name missing → the
/// other alone, both missing → `Kontakt@nomail.de`.
pub fn placeholder_email(given: Option<&str>, surname: Option<&str>) -> String {
    let part = |s: Option<&str>| -> String {
        let mut out = String::new();
        for c in s.unwrap_or("").chars() {
            match c {
                'ä' => out.push_str("ae"),
                'ö' => out.push_str("oe"),
                'ü' => out.push_str("ue"),
                'Ä' => out.push_str("Ae"),
                'Ö' => out.push_str("Oe"),
                'Ü' => out.push_str("Ue"),
                'ß' => out.push_str("ss"),
                'ẞ' => out.push_str("SS"),
                c if c.is_ascii_alphanumeric() || "-_".contains(c) => out.push(c),
                c => {
                    // Accented Latin letters lose their accent (é → e).
                    if let Some(base) = strip_accent(c) {
                        out.push(base);
                    }
                }
            }
        }
        out
    };
    let names: Vec<String> = [part(given), part(surname)].into_iter().filter(|p| !p.is_empty()).collect();
    let local = if names.is_empty() { "Kontakt".to_string() } else { names.join(".") };
    format!("{local}@{PLACEHOLDER_DOMAIN}")
}

fn strip_accent(c: char) -> Option<char> {
    const MAP: [(&str, char); 12] = [
        ("àáâãåā", 'a'),
        ("ÀÁÂÃÅĀ", 'A'),
        ("èéêëē", 'e'),
        ("ÈÉÊËĒ", 'E'),
        ("ìíîïī", 'i'),
        ("ÌÍÎÏĪ", 'I'),
        ("òóôõøō", 'o'),
        ("ÒÓÔÕØŌ", 'O'),
        ("ùúûū", 'u'),
        ("ÙÚÛŪ", 'U'),
        ("çćč", 'c'),
        ("ñń", 'n'),
    ];
    MAP.iter().find(|(set, _)| set.contains(c)).map(|(_, b)| *b)
}

// ---- countries -----------------------------------------------------------------

const COUNTRIES: [(&str, &str, &str); 16] = [
    ("DE", "Deutschland", "Germany"),
    ("AT", "Österreich", "Austria"),
    ("CH", "Schweiz", "Switzerland"),
    ("NL", "Niederlande", "Netherlands"),
    ("BE", "Belgien", "Belgium"),
    ("LU", "Luxemburg", "Luxembourg"),
    ("FR", "Frankreich", "France"),
    ("IT", "Italien", "Italy"),
    ("ES", "Spanien", "Spain"),
    ("DK", "Dänemark", "Denmark"),
    ("SE", "Schweden", "Sweden"),
    ("NO", "Norwegen", "Norway"),
    ("PL", "Polen", "Poland"),
    ("CZ", "Tschechien", "Czech Republic"),
    ("GB", "Vereinigtes Königreich", "United Kingdom"),
    ("US", "Vereinigte Staaten", "United States"),
];

/// ISO code for a code or a German/English country name; other text as is.
pub fn country_code(s: &str) -> String {
    let t = s.trim();
    COUNTRIES
        .iter()
        .find(|(code, de, en)| code.eq_ignore_ascii_case(t) || de.eq_ignore_ascii_case(t) || en.eq_ignore_ascii_case(t))
        .map(|(code, _, _)| code.to_string())
        .unwrap_or_else(|| t.to_string())
}

/// The name Outlook shows for a code (German: the customers are German).
pub fn country_name(code: &str) -> String {
    COUNTRIES
        .iter()
        .find(|(c, _, _)| c.eq_ignore_ascii_case(code))
        .map(|(_, de, _)| de.to_string())
        .unwrap_or_else(|| code.to_string())
}

// ---- Graph ---------------------------------------------------------------------

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// The value of an extended property of a Graph item (ids compare
/// case-insensitively; the full-tag form `String 0x3A24001F` also counts).
pub fn extended_property<'a>(item: &'a Value, id: &str) -> Option<&'a str> {
    let want = id.to_ascii_lowercase();
    item.get("singleValueExtendedProperties")?.as_array()?.iter().find_map(|p| {
        let pid = str_at(p, "id")?.to_ascii_lowercase();
        let same = pid == want || (want == FAX_PROPERTY_ID.to_ascii_lowercase() && pid == "string 0x3a24001f");
        if same {
            str_at(p, "value")
        } else {
            None
        }
    })
}

/// The `$expand` that reads both of our extended properties with an item.
pub fn graph_expand() -> String {
    let q = |s: &str| s.replace(' ', "%20").replace('{', "%7B").replace('}', "%7D");
    format!(
        "$expand=singleValueExtendedProperties($filter=id%20eq%20'{}'%20or%20id%20eq%20'{}')",
        q(FAX_PROPERTY_ID),
        q(HQ_ID_PROPERTY_ID)
    )
}

fn graph_address(v: Option<&Value>) -> Option<PostalAddress> {
    let v = v?;
    PostalAddress {
        street: clean(str_at(v, "street")),
        postal_code: clean(str_at(v, "postalCode")),
        city: clean(str_at(v, "city")),
        country: clean(str_at(v, "countryOrRegion")),
    }
    .normalised()
}

fn graph_address_json(a: &Option<PostalAddress>) -> Value {
    match a {
        None => json!({}),
        Some(a) => {
            let mut m = Map::new();
            let mut put = |k: &str, v: &Option<String>| {
                if let Some(v) = v {
                    m.insert(k.into(), json!(v));
                }
            };
            put("street", &a.street);
            put("postalCode", &a.postal_code);
            put("city", &a.city);
            put("countryOrRegion", &a.country.as_deref().map(country_name));
            Value::Object(m)
        }
    }
}

/// A Graph contact (read with [`graph_expand`]) as canonical.
pub fn from_graph(c: &Value) -> Contact {
    Contact {
        given_name: clean(str_at(c, "givenName")),
        surname: clean(str_at(c, "surname")),
        job_title: clean(str_at(c, "jobTitle")),
        company_name: clean(str_at(c, "companyName")),
        business_phone: c
            .get("businessPhones")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().filter_map(Value::as_str).find(|s| !s.trim().is_empty()))
            .and_then(|s| clean(Some(s))),
        mobile_phone: clean(str_at(c, "mobilePhone")),
        fax: clean(extended_property(c, FAX_PROPERTY_ID)),
        email: c
            .get("emailAddresses")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find_map(|e| clean(str_at(e, "address")))),
        home_address: graph_address(c.get("homeAddress")),
        business_address: graph_address(c.get("businessAddress")),
        website: clean(str_at(c, "businessHomePage")),
    }
    .normalised()
}

/// The helloHQ id a mirrored Graph contact was tagged with.
pub fn graph_hq_tag(c: &Value) -> Option<String> {
    clean(extended_property(c, HQ_ID_PROPERTY_ID))
}

/// The Graph JSON for `fields` of `c` (every field when `None`): a create
/// body or a PATCH that changes exactly those fields. The email falls back
/// to the placeholder; names also set `displayName` and `fileAs`.
pub fn to_graph(c: &Contact, fields: Option<&[String]>, hq_id: Option<&str>) -> Value {
    let want = |f: &str| fields.is_none_or(|fs| fs.iter().any(|x| x == f));
    let mut m = Map::new();
    let mut ext = Vec::new();
    let s = |v: &Option<String>| v.clone().map(Value::String).unwrap_or(Value::Null);
    if want("given_name") {
        m.insert("givenName".into(), s(&c.given_name));
    }
    if want("surname") {
        m.insert("surname".into(), s(&c.surname));
    }
    if want("given_name") || want("surname") {
        m.insert("displayName".into(), json!(c.display_name()));
        m.insert("fileAs".into(), json!(c.display_name()));
    }
    if want("job_title") {
        m.insert("jobTitle".into(), s(&c.job_title));
    }
    if want("company_name") {
        m.insert("companyName".into(), s(&c.company_name));
    }
    if want("business_phone") {
        m.insert("businessPhones".into(), json!(c.business_phone.iter().collect::<Vec<_>>()));
    }
    if want("mobile_phone") {
        m.insert("mobilePhone".into(), s(&c.mobile_phone));
    }
    // The placeholder depends on the names, so it follows them.
    if want("email") || (c.email.is_none() && (want("given_name") || want("surname"))) {
        let addr = c.exchange_email();
        m.insert("emailAddresses".into(), json!([{"address": addr, "name": c.display_name()}]));
    }
    if want("home_address") {
        m.insert("homeAddress".into(), graph_address_json(&c.home_address));
    }
    if want("business_address") {
        m.insert("businessAddress".into(), graph_address_json(&c.business_address));
    }
    if want("website") {
        m.insert("businessHomePage".into(), s(&c.website));
    }
    if want("fax") {
        // No delete exists for one extended property: clear with "".
        ext.push(json!({"id": FAX_PROPERTY_ID, "value": c.fax.clone().unwrap_or_default()}));
    }
    if let Some(id) = hq_id {
        ext.push(json!({"id": HQ_ID_PROPERTY_ID, "value": id}));
    }
    if !ext.is_empty() {
        m.insert("singleValueExtendedProperties".into(), Value::Array(ext));
    }
    Value::Object(m)
}

// ---- helloHQ -------------------------------------------------------------------

/// "Große Elbstraße 145" from street + house number.
fn join_street(street: Option<&str>, number: Option<&str>) -> Option<String> {
    let parts: Vec<&str> = [street, number].into_iter().flatten().map(str::trim).filter(|s| !s.is_empty()).collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// Splits a trailing house number ("145", "12a", "3-5") off a street line.
pub fn split_street(line: &str) -> (String, Option<String>) {
    let line = line.trim();
    if let Some((street, last)) = line.rsplit_once(' ') {
        if last.chars().next().is_some_and(|c| c.is_ascii_digit()) && !street.trim().is_empty() {
            return (street.trim().to_string(), Some(last.to_string()));
        }
    }
    (line.to_string(), None)
}

fn hq_address(
    street: Option<&str>,
    number: Option<&str>,
    zip: Option<&str>,
    city: Option<&str>,
    country: Option<&str>,
) -> Option<PostalAddress> {
    PostalAddress {
        street: join_street(street, number),
        postal_code: clean(zip),
        city: clean(city),
        country: clean(country),
    }
    .normalised()
}

/// A helloHQ contact person as canonical: `v2` for the fields and the
/// default (business) address, `v1` for the private address (C3), and the
/// name of its company.
pub fn from_hq(v2: &ContactPerson, v1: Option<&ContactPersonV1>, company_name: Option<&str>) -> Contact {
    let d = v2.default_address.as_ref();
    let private = v1.and_then(ContactPersonV1::private_address);
    Contact {
        given_name: clean_owned(&v2.first_name),
        surname: clean_owned(&v2.last_name),
        job_title: clean_owned(&v2.position),
        company_name: clean(company_name),
        business_phone: clean_owned(&v2.phone_landline),
        mobile_phone: clean_owned(&v2.phone_mobile),
        fax: d.and_then(|a| clean_owned(&a.fax)),
        email: d.and_then(|a| clean_owned(&a.email)).or_else(|| clean_owned(&v2.e_mail)),
        home_address: private.and_then(|a| {
            hq_address(
                a.street.as_deref(),
                a.house_number.as_deref(),
                a.zip_code.as_deref(),
                a.city.as_deref(),
                a.country.as_deref(),
            )
        }),
        business_address: d.and_then(|a| {
            hq_address(
                a.street.as_deref(),
                a.house_number.as_deref(),
                a.zip_code.as_deref(),
                a.city.as_deref(),
                a.country.as_deref(),
            )
        }),
        website: d.and_then(|a| clean_owned(&a.website)),
    }
    .normalised()
}

/// Applies canonical `fields` of `c` to a helloHQ v2 record read just
/// before (read-modify-write: everything else is kept). The default address
/// carries email, fax and website; helloHQ requires its street, zip code,
/// city, country and description, so an address created only to hold an
/// email gets empty texts and `default_country`.
pub fn apply_to_hq(c: &Contact, fields: &[String], current: &mut ContactPerson, default_country: &str) {
    let has = |f: &str| fields.iter().any(|x| x == f);
    if has("given_name") {
        current.first_name = c.given_name.clone();
    }
    if has("surname") {
        current.last_name = c.surname.clone();
    }
    if has("job_title") {
        current.position = c.job_title.clone();
    }
    if has("business_phone") {
        current.phone_landline = c.business_phone.clone();
    }
    if has("mobile_phone") {
        current.phone_mobile = c.mobile_phone.clone();
    }
    let address_fields = ["email", "fax", "website", "business_address"];
    if !address_fields.iter().any(|f| has(f)) {
        return;
    }
    let mut a: Address = current.default_address.clone().unwrap_or_default();
    if has("business_address") {
        let b = c.business_address.clone().unwrap_or_default();
        let (street, number) = match b.street.as_deref() {
            Some(line) => split_street(line),
            None => (String::new(), None),
        };
        a.street = Some(street);
        a.house_number = number;
        a.zip_code = Some(b.postal_code.unwrap_or_default());
        a.city = Some(b.city.unwrap_or_default());
        a.country = Some(b.country.unwrap_or_else(|| default_country.to_string()));
    }
    if has("email") {
        a.email = c.email.clone();
        current.e_mail = c.email.clone();
    }
    if has("fax") {
        a.fax = c.fax.clone();
    }
    if has("website") {
        a.website = c.website.clone();
    }
    // Fill what helloHQ requires of any address.
    for f in [&mut a.street, &mut a.zip_code, &mut a.city] {
        if f.is_none() {
            *f = Some(String::new());
        }
    }
    if a.country.as_deref().is_none_or(str::is_empty) {
        a.country = Some(default_country.to_string());
    }
    if a.description.as_deref().is_none_or(str::is_empty) {
        a.description = Some("Geschäftlich".into());
    }
    let empty = a.email.is_none()
        && a.fax.is_none()
        && a.website.is_none()
        && [&a.street, &a.zip_code, &a.city].iter().all(|f| f.as_deref().is_none_or(str::is_empty));
    current.default_address = if empty && current.default_address.is_none() { None } else { Some(a) };
}

/// The private address as a v1 address for [`HellohqClient::set_private_address`]
/// (`None` removes it).
///
/// [`HellohqClient::set_private_address`]: crate::connectors::hellohq::HellohqClient::set_private_address
pub fn private_address_v1(c: &Contact, default_country: &str) -> Option<AddressV1> {
    let h = c.home_address.as_ref()?;
    let (street, number) = match h.street.as_deref() {
        Some(line) => split_street(line),
        None => (String::new(), None),
    };
    Some(AddressV1 {
        street: Some(street),
        house_number: number,
        zip_code: Some(h.postal_code.clone().unwrap_or_default()),
        city: Some(h.city.clone().unwrap_or_default()),
        country: Some(h.country.clone().unwrap_or_else(|| default_country.to_string())),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn placeholder_transliterates_and_drops_invalid_characters() {
        assert_eq!(placeholder_email(Some("Jürgen"), Some("Größe")), "Juergen.Groesse@nomail.de");
        assert_eq!(placeholder_email(Some("Anna Lena"), Some("O'Brien")), "AnnaLena.OBrien@nomail.de");
        assert_eq!(placeholder_email(None, Some("Weiß")), "Weiss@nomail.de");
        assert_eq!(placeholder_email(Some("Renée"), None), "Renee@nomail.de");
        assert_eq!(placeholder_email(None, None), "Kontakt@nomail.de");
        assert!(is_placeholder("Juergen.Groesse@NOMAIL.de"));
        assert!(!is_placeholder("juergen@nomail.de.example.com"));
    }

    #[test]
    fn graph_contact_reads_fax_and_never_the_placeholder() {
        let g = json!({
            "givenName": " Erika ", "surname": "Muster", "jobTitle": "", "companyName": "Nordlicht Medien GmbH",
            "businessPhones": ["+49 40 123"], "mobilePhone": null,
            "emailAddresses": [{"name": "Erika Muster", "address": "Erika.Muster@nomail.de"}],
            "homeAddress": {}, "businessAddress": {"street": "Große Elbstraße 145", "city": "Hamburg",
                "postalCode": "22767", "countryOrRegion": "Deutschland"},
            "singleValueExtendedProperties": [{"id": "String 0x3a24001f", "value": "+49 40 999"},
                {"id": HQ_ID_PROPERTY_ID, "value": "202"}]
        });
        let c = from_graph(&g);
        assert_eq!(c.given_name.as_deref(), Some("Erika"));
        assert_eq!(c.job_title, None);
        assert_eq!(c.email, None, "the placeholder is not an address");
        assert_eq!(c.fax.as_deref(), Some("+49 40 999"));
        assert_eq!(c.business_address.as_ref().and_then(|a| a.country.as_deref()), Some("DE"));
        assert_eq!(c.home_address, None);
        assert_eq!(graph_hq_tag(&g).as_deref(), Some("202"));
    }

    #[test]
    fn hellohq_contact_takes_address_fields_and_private_address() {
        let v2: ContactPerson = serde_json::from_value(json!({
            "id": 202, "firstName": "Jürgen", "lastName": "Größe", "position": "Inhaber", "phoneLandline": "+49 40 1",
            "eMail": "j@baeckerei.de", "defaultAddressId": 5,
            "defaultAddress": {"id": 5, "street": "Lange Reihe", "houseNumber": "12", "zipCode": "20099", "city": "Hamburg",
                "country": "DE", "description": "Hauptadresse", "email": "j@baeckerei.de", "fax": "+49 40 9", "website": "https://b.de"}
        }))
        .unwrap();
        let v1: ContactPersonV1 = serde_json::from_value(json!({
            "Id": 202, "DefaultAddressId": 5, "Addresses": [
                {"Id": 5, "Street": "Lange Reihe", "HouseNumber": "12", "ZipCode": "20099", "City": "Hamburg", "Country": "DE", "Description": "Privat", "IsStandard": true},
                {"Id": 6, "Street": "Am Deich", "HouseNumber": "3a", "ZipCode": "21035", "City": "Hamburg", "Country": "DE", "Description": " privat "}
            ]
        }))
        .unwrap();
        let c = from_hq(&v2, Some(&v1), Some("Bäckerei Größe & Söhne KG"));
        assert_eq!(c.business_address.as_ref().and_then(|a| a.street.as_deref()), Some("Lange Reihe 12"));
        assert_eq!(c.home_address.as_ref().and_then(|a| a.street.as_deref()), Some("Am Deich 3a"));
        assert_eq!(c.fax.as_deref(), Some("+49 40 9"));
        assert_eq!(c.website.as_deref(), Some("https://b.de"));
        assert_eq!(c.company_name.as_deref(), Some("Bäckerei Größe & Söhne KG"));
    }

    #[test]
    fn patch_carries_only_the_named_fields() {
        let c = Contact { given_name: Some("A".into()), job_title: Some("CEO".into()), ..Default::default() };
        let p = to_graph(&c, Some(&["job_title".to_string()]), None);
        assert_eq!(p, json!({"jobTitle": "CEO"}));
        let p = to_graph(&c, Some(&["given_name".to_string()]), None);
        assert_eq!(p["emailAddresses"][0]["address"], "A@nomail.de", "the placeholder follows the name");
    }

    #[test]
    fn street_split_keeps_house_numbers() {
        assert_eq!(split_street("Große Elbstraße 145"), ("Große Elbstraße".into(), Some("145".into())));
        assert_eq!(split_street("Am Sandtorkai 3-5"), ("Am Sandtorkai".into(), Some("3-5".into())));
        assert_eq!(split_street("Marktplatz"), ("Marktplatz".into(), None));
        assert_eq!(split_street("12"), ("12".into(), None));
    }

    fn text() -> impl Strategy<Value = Option<String>> {
        proptest::option::of("[A-Za-zÄÖÜäöüß][A-Za-z0-9äöüß .,+-]{0,20}")
    }

    fn address() -> impl Strategy<Value = Option<PostalAddress>> {
        proptest::option::of(
            (
                proptest::option::of("[A-Z][a-zäöüß]{2,12}( [0-9]{1,3}[a-z]?)?"),
                text(),
                text(),
                proptest::option::of(prop_oneof!["DE", "AT", "CH"]),
            )
                .prop_map(|(street, postal_code, city, country)| PostalAddress {
                    street,
                    postal_code,
                    city,
                    country,
                }),
        )
    }

    fn contact() -> impl Strategy<Value = Contact> {
        (
            (text(), text(), text(), text(), text(), text()),
            (text(), proptest::option::of("[a-z]{1,8}@[a-z]{1,8}\\.de"), address(), address(), text()),
        )
            .prop_map(|((g, s, j, co, bp, mp), (fax, email, home, business, web))| {
                Contact {
                    given_name: g,
                    surname: s,
                    job_title: j,
                    company_name: co,
                    business_phone: bp,
                    mobile_phone: mp,
                    fax,
                    email,
                    home_address: home,
                    business_address: business,
                    website: web,
                }
                .normalised()
            })
    }

    proptest! {
        #[test]
        fn canonical_survives_graph(c in contact()) {
            let mut g = to_graph(&c, None, Some("7"));
            // Graph answers with the properties it stored.
            let ext = g["singleValueExtendedProperties"].clone();
            g["singleValueExtendedProperties"] = ext;
            prop_assert_eq!(from_graph(&g), c);
        }

        #[test]
        fn canonical_survives_hellohq(c in contact()) {
            let mut v2 = ContactPerson::default();
            let all: Vec<String> = FIELDS.iter().map(|f| f.to_string()).collect();
            apply_to_hq(&c, &all, &mut v2, "DE");
            let v1 = ContactPersonV1 {
                addresses: Some(private_address_v1(&c, "DE").map(|mut a| {
                    a.description = Some("Privat".into());
                    a
                }).into_iter().collect()),
                ..Default::default()
            };
            let back = from_hq(&v2, Some(&v1), c.company_name.as_deref());
            // helloHQ requires a country on every address: the default fills a gap.
            let mut expected = c.clone();
            for a in [&mut expected.business_address, &mut expected.home_address].into_iter().flatten() {
                a.country.get_or_insert_with(|| "DE".to_string());
            }
            prop_assert_eq!(back, expected);
        }

        #[test]
        fn fields_round_trip(c in contact()) {
            prop_assert_eq!(Contact::from_fields(&c.to_fields()), c);
        }
    }
}
