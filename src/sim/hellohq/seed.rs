//! Seed data of the helloHQ simulator: the "Agentur Beispiel GmbH" demo
//! system and explicit seeding from JSON. Everything is created through the
//! same write paths as the HTTP API (so seeds obey the same validation);
//! this module decides *what* exists at start, never how it is served.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc, Weekday};
use serde_json::{json, Map, Value};

use super::store::{Actor, Db, WriteError, WriteResult};

/// The demo system's domain for users' work mail.
pub const DEMO_DOMAIN: &str = "agentur-beispiel.de";
/// The demo's project for internal appointments (and appointments made in Outlook).
pub const INTERNAL_PROJECT: &str = "Interne Termine";

/// Europe/Berlin offset in hours at `t` (EU rule: CEST from the last Sunday
/// of March 01:00 UTC to the last Sunday of October 01:00 UTC).
fn berlin_offset(t: DateTime<Utc>) -> i64 {
    let last_sunday = |year: i32, month: u32| {
        let mut d = NaiveDate::from_ymd_opt(year, month + 1, 1).expect("valid month") - Duration::days(1);
        while d.weekday() != Weekday::Sun {
            d -= Duration::days(1);
        }
        d.and_hms_opt(1, 0, 0).expect("valid time").and_utc()
    };
    if t >= last_sunday(t.year(), 3) && t < last_sunday(t.year(), 10) {
        2
    } else {
        1
    }
}

/// A Berlin wall-clock time as UTC.
fn berlin(local: NaiveDateTime) -> DateTime<Utc> {
    let guess = Utc.from_utc_datetime(&local) - Duration::hours(1);
    Utc.from_utc_datetime(&local) - Duration::hours(berlin_offset(guess))
}

fn utc(t: DateTime<Utc>) -> String {
    super::store::fmt_utc(t)
}

fn ids_of(v: &[i32]) -> Vec<Value> {
    v.iter().map(|i| json!(*i)).collect()
}

/// Creates the demo system. Dates are relative to the current week so the
/// demo always shows current appointments; the series keeps its time in
/// Europe/Berlin across DST changes (C1).
pub fn demo(db: &mut Db) -> WriteResult<()> {
    let sys = Actor::Sync;
    let user = |db: &mut Db, first: &str, last: &str, mail: &str, no: &str| {
        db.create_user(
            &json!({"firstName": first, "lastName": last, "eMailWork": format!("{mail}@{DEMO_DOMAIN}"), "employeeNumber": no}),
            sys,
        )
    };
    let anna = user(db, "Anna", "Schmidt", "anna.schmidt", "1001")?;
    let ben = user(db, "Ben", "Müller", "ben.mueller", "1002")?;
    let clara = user(db, "Clara", "Wagner", "clara.wagner", "1003")?;
    let david = user(db, "David", "Fischer", "david.fischer", "1004")?;

    let kunde = db.create_company_type("Kunde");
    let lieferant = db.create_company_type("Lieferant");
    let interessent = db.create_company_type("Interessent");

    let elbe = db.create_resource(&json!({"name": "Raum Elbe", "email": null}))?;
    let alster = db.create_resource(&json!({"name": "Raum Alster", "email": format!("raum.alster@{DEMO_DOMAIN}")}))?;

    let address = |street: &str, no: &str, zip: &str, city: &str, email: Option<&str>| {
        json!({"street": street, "houseNumber": no, "zipCode": zip, "city": city, "country": "DE",
               "description": "Hauptadresse", "email": email})
    };
    let company = |db: &mut Db, name: &str, ty: i32, resp: &[i32], addr: Value| {
        db.create_company(
            &json!({"name": name, "companyTypes": [{"companyTypeId": ty}], "responsibleUserIds": ids_of(resp),
                    "defaultAddress": addr}),
            sys,
        )
    };
    let nordlicht = company(
        db,
        "Nordlicht Medien GmbH",
        kunde,
        &[anna],
        address("Große Elbstraße", "145", "22767", "Hamburg", Some("info@nordlicht-medien.de")),
    )?;
    let baeckerei = company(
        db,
        "Bäckerei Größe & Söhne KG",
        kunde,
        &[ben, clara],
        address("Lange Reihe", "12", "20099", "Hamburg", None),
    )?;
    let druckerei = company(
        db,
        "Druckerei Weiß GmbH",
        lieferant,
        &[clara],
        address("Am Sandtorkai", "3", "20457", "Hamburg", None),
    )?;
    let zukunft = company(
        db,
        "Zukunftswerk Start-up UG",
        interessent,
        &[david],
        address("Hafenstraße", "8", "24103", "Kiel", None),
    )?;

    // Phones and the default address cannot be created together (A10):
    // create, then replace, as a client must.
    let contact = |db: &mut Db, c: Value, phones: Value| -> WriteResult<i32> {
        let id = db.create_contact(&c, sys)?;
        if phones.as_object().is_some_and(|p| !p.is_empty()) {
            let mut full = c.as_object().cloned().unwrap_or_default();
            full.remove("companyId");
            full.extend(phones.as_object().cloned().unwrap_or_default());
            db.replace_contact(id, &Value::Object(full), sys)?;
        }
        Ok(id)
    };
    let juergen = contact(
        db,
        json!({
            "companyId": baeckerei, "firstName": "Jürgen", "lastName": "Größe", "salutation": "Herr", "salutationForm": "Formal",
            "position": "Geschäftsführer", "title": "Dr.", "language": "de-DE", "birthdate": "04.09.1959",
            "defaultAddress": {"street": "Lange Reihe", "houseNumber": "12", "zipCode": "20099", "city": "Hamburg", "country": "DE",
                "description": "Geschäftlich", "email": "juergen.groesse@baeckerei-groesse.de", "phone": "+49 40 1234560",
                "fax": "+49 40 1234569", "website": "https://www.baeckerei-groesse.de"}
        }),
        json!({"phoneLandline": "+49 40 1234561", "phoneMobile": "+49 171 2345678"}),
    )?;
    db.add_contact_address(
        juergen,
        &json!({"street": "Papenhuder Straße", "houseNumber": "27a", "zipCode": "22087",
        "city": "Hamburg", "country": "DE", "description": "Privat", "phone": "+49 40 7654321"}),
        sys,
    )?;
    let oezlem = contact(
        db,
        json!({
            "companyId": nordlicht, "firstName": "Özlem", "lastName": "Çelik", "salutation": "Frau", "salutationForm": 1,
            "position": "Marketingleiterin", "language": "de-DE",
            "defaultAddress": {"street": "Große Elbstraße", "houseNumber": "145", "zipCode": "22767", "city": "Hamburg",
                "country": "DE", "description": "Büro", "email": "oezlem.celik@nordlicht-medien.de",
                "website": "https://nordlicht-medien.de"}
        }),
        json!({"phoneMobile": "+49 160 9876543"}),
    )?;
    db.add_contact_address(
        oezlem,
        &json!({"street": "Ottenser Hauptstraße", "houseNumber": "3", "zipCode": "22765",
        "city": "Hamburg", "country": "DE", "description": " privat "}),
        sys,
    )?;
    let sophie = contact(
        db,
        json!({
            "companyId": nordlicht, "firstName": "Sophie", "lastName": "Lehmann", "salutation": "Frau", "salutationForm": "Informal",
            "position": "Projektmanagerin", "note": "Kein E-Mail-Kontakt gewünscht"
        }),
        json!({"phoneLandline": "+49 40 555012"}),
    )?;
    let max = contact(
        db,
        json!({
            "companyId": druckerei, "firstName": "Maximilian", "lastName": "Weiß", "salutation": "Herr", "salutationForm": "Formal",
            "position": "Produktion",
            "defaultAddress": {"street": "Am Sandtorkai", "houseNumber": "3", "zipCode": "20457", "city": "Hamburg",
                "country": "DE", "description": "Werk", "email": null, "fax": "+49 40 3333339"}
        }),
        json!({}),
    )?;
    let _heike = contact(
        db,
        json!({
            "companyId": druckerei, "firstName": "Heike", "lastName": "Strauß", "salutation": "Frau", "salutationForm": "Neutral",
            "defaultAddress": {"street": "Am Sandtorkai", "houseNumber": "3", "zipCode": "20457", "city": "Hamburg",
                "country": "DE", "description": "Werk", "email": "heike.strauss@druckerei-weiss.de"}
        }),
        json!({}),
    )?;
    let tobias = contact(
        db,
        json!({
            "companyId": zukunft, "firstName": "Tobias", "lastName": "Neumann", "salutation": "Herr", "salutationForm": "Informal",
            "position": "Gründer",
            "defaultAddress": {"street": "Hafenstraße", "houseNumber": "8", "zipCode": "24103", "city": "Kiel", "country": "DE",
                "description": "Büro", "email": "tobias.neumann@zukunftswerk.de"}
        }),
        json!({}),
    )?;

    let relaunch = db.create_project(
        &json!({
            "name": "Website-Relaunch Nordlicht", "number": "P-2026-001", "startDate": "2026-09-01T00:00:00",
            "companyId": nordlicht, "projectTemplateId": 1, "projectStatusId": 1, "internalContactPersonId": anna,
            "projectMembers": [{"userId": anna, "projectRoleId": 1}, {"userId": ben, "projectRoleId": 2}],
            "contactPersonIds": [oezlem, sophie]
        }),
        sys,
    )?;
    let messe = db.create_project(
        &json!({
            "name": "Messestand Größe 2027", "number": "P-2026-002", "startDate": "2026-10-15T00:00:00",
            "companyId": baeckerei, "projectTemplateId": 1, "projectStatusId": 1, "internalContactPersonId": ben,
            "projectMembers": [{"userId": ben, "projectRoleId": 1}, {"userId": clara, "projectRoleId": 2}],
            "contactPersonIds": [juergen, max]
        }),
        sys,
    )?;
    // The agency's own project for its internal appointments: every helloHQ
    // task has a project (v1 POST /v1/ProjectTasks "requires a valid project
    // id"); the demo tenant's `appointments.project` names this one.
    let agentur = company(
        db,
        "Agentur Beispiel GmbH",
        kunde,
        &[anna],
        address("Stresemannstraße", "29", "22769", "Hamburg", Some(&format!("info@{DEMO_DOMAIN}"))),
    )?;
    let intern = db.create_project(
        &json!({
            "name": INTERNAL_PROJECT, "number": "P-2026-000", "startDate": "2026-01-01T00:00:00",
            "companyId": agentur, "projectTemplateId": 1, "projectStatusId": 1, "internalContactPersonId": anna,
            "projectMembers": [{"userId": anna, "projectRoleId": 1}, {"userId": ben, "projectRoleId": 2},
                               {"userId": clara, "projectRoleId": 2}, {"userId": david, "projectRoleId": 2}],
            "contactPersonIds": []
        }),
        sys,
    )?;
    db.create_lead(
        &json!({
            "Name": "Markenstrategie Zukunftswerk", "Number": "L-2026-007", "CompanyId": zukunft, "StatusId": 1,
            "Volume": 18500.0, "Currency": "EUR", "ClosingProbability": 40.0, "ResponsibleUserId": david,
            "ContactPersons": [{"Id": tobias}]
        }),
        sys,
    )?;

    // Appointments and tasks, around the current week (Monday 00:00 Berlin).
    let today = (Utc::now() + Duration::hours(berlin_offset(Utc::now()))).date_naive();
    let monday = today - Duration::days(i64::from(today.weekday().num_days_from_monday()));
    let at =
        |day: i64, h: u32, m: u32| berlin((monday + Duration::days(day)).and_hms_opt(h, m, 0).expect("valid time"));
    let local_date = |day: i64| format!("{}T00:00:00", (monday + Duration::days(day)).format("%Y-%m-%d"));
    let user_a = |u: i32| json!({"userId": u});

    db.create_task(
        &json!({
            "name": "Kick-off Website-Relaunch", "description": "<p>Ziele, Zeitplan, Zuständigkeiten</p>",
            "isAppointment": true, "type": "PublicAppointment", "place": "Raum Elbe", "projectId": relaunch,
            "startOn": utc(at(2, 14, 0)), "endOn": utc(at(2, 15, 30)),
            "resourceToTasks": [user_a(anna), user_a(ben), {"contactPersonId": oezlem}, {"resourceId": elbe}]
        }),
        sys,
    )?;
    db.create_task(
        &json!({
            "name": "Abstimmung Messestand", "isAppointment": true, "type": "PublicAppointment", "place": "Raum Alster",
            "projectId": messe, "startOn": utc(at(3, 9, 0)), "endOn": utc(at(3, 10, 0)),
            "resourceToTasks": [user_a(ben), user_a(clara), {"contactPersonId": juergen}, {"resourceId": alster}]
        }),
        sys,
    )?;
    db.create_task(
        &json!({
            "name": "Team-Frühstück", "isAppointment": true, "type": "PublicAppointment", "place": "Küche",
            "projectId": intern, "startOn": utc(at(4, 8, 30)), "endOn": utc(at(4, 9, 15)),
            "resourceToTasks": [user_a(anna), user_a(ben), user_a(clara), user_a(david)]
        }),
        sys,
    )?;
    db.create_task(
        &json!({
            "name": "Zahnarzt", "isAppointment": true, "type": "PrivateAppointment", "projectId": intern,
            "startOn": utc(at(1, 16, 0)), "endOn": utc(at(1, 17, 0)), "resourceToTasks": [user_a(david)]
        }),
        sys,
    )?;

    // Weekly Monday 10:00 series since four weeks ago, second occurrence
    // cancelled, third moved to 11:00 (C1, C6).
    let first = monday - Duration::weeks(4);
    let local_at = |d: NaiveDate, h: u32| d.and_hms_opt(h, 0, 0).expect("valid time");
    let ical = |d: NaiveDate, h: u32| local_at(d, h).format("%Y%m%dT%H%M%S").to_string();
    let storage = format!(
        "DTSTART;TZID=Europe/Berlin:{}\r\nRRULE:FREQ=WEEKLY;INTERVAL=1;BYDAY=MO\r\nEXDATE;TZID=Europe/Berlin:{}",
        ical(first, 10),
        ical(first + Duration::weeks(1), 10)
    );
    let series = db.create_task(&json!({
        "name": "Jour fixe Agentur", "description": "Wöchentliche Abstimmung", "isAppointment": true,
        "type": "RecurrencyTask", "place": "Raum Elbe", "projectId": intern, "recurrencyStorage": storage,
        "startOn": utc(berlin(local_at(first, 10))), "endOn": utc(berlin(local_at(first, 10)) + Duration::minutes(30)),
        "resourceToTasks": [user_a(anna), user_a(ben), user_a(clara), {"resourceId": elbe}]
    }), sys)?;
    let moved = first + Duration::weeks(2);
    db.create_task(
        &json!({
            "name": "Jour fixe Agentur (verschoben)", "isAppointment": true, "type": "RecurrencyException",
            "parentId": series, "originalStartOn": utc(berlin(local_at(moved, 10))), "place": "Raum Alster",
            "projectId": intern, "startOn": utc(berlin(local_at(moved, 11))),
            "endOn": utc(berlin(local_at(moved, 11)) + Duration::minutes(30)),
            "resourceToTasks": [user_a(anna), user_a(ben), user_a(clara), {"resourceId": alster}]
        }),
        sys,
    )?;

    // Clara's vacation next week: the absence, plus the Vacation task row the
    // calendar shows (not an appointment; never synced, SPEC §3).
    db.create_absence(
        &json!({"type": "Vacation", "userId": clara, "start": local_date(7), "end": local_date(12),
        "note": "Jahresurlaub", "isApproved": true}),
        sys,
    )?;
    db.create_task(
        &json!({
            "name": "Urlaub", "isAppointment": false, "type": "Vacation", "projectId": intern,
            "startDate": local_date(7), "endDate": local_date(11), "resourceToTasks": [user_a(clara)]
        }),
        sys,
    )?;

    let task = |db: &mut Db, body: Value| db.create_task(&body, sys);
    task(
        db,
        json!({"name": "Wireframes erstellen", "description": "Startseite und Produktseiten", "isAppointment": false,
        "type": "Project", "projectId": relaunch, "startOn": utc(at(0, 8, 0)), "endOn": utc(at(9, 16, 0)),
        "plannedEffort": 16.0, "remaining": 8.0, "percentDone": 50, "isPriority": true, "resourceToTasks": [user_a(ben)]}),
    )?;
    task(
        db,
        json!({"name": "Texte abstimmen", "isAppointment": false, "type": "Project", "projectId": relaunch,
        "endOn": utc(at(11, 16, 0)), "plannedEffort": 4.0, "percentDone": 0, "resourceToTasks": [user_a(anna)]}),
    )?;
    task(
        db,
        json!({"name": "Druckdaten prüfen", "isAppointment": false, "type": "Project", "projectId": messe,
        "startOn": utc(at(-3, 8, 0)), "endOn": utc(at(-1, 16, 0)), "plannedEffort": 2.5, "remaining": 0.0,
        "percentDone": 100, "isDone": true, "resourceToTasks": [user_a(clara)]}),
    )?;
    task(
        db,
        json!({"name": "Angebot Standbau nachfassen", "isAppointment": false, "type": "Project", "projectId": messe,
        "endOn": utc(at(4, 12, 0)), "plannedEffort": 1.0, "percentDone": 0, "resourceToTasks": [user_a(ben)]}),
    )?;
    Ok(())
}

/// Tables an explicit seed may fill, in dependency order, with the body
/// shape each takes (the create body of that entity's API).
const EXPLICIT: [&str; 9] =
    ["users", "companyTypes", "resources", "companies", "contactPersons", "projects", "leads", "tasks", "absences"];

/// Creates the entities listed in `body` (`{"contactPersons":[…], …}`),
/// returning the new ids per table.
pub fn explicit(db: &mut Db, body: &Map<String, Value>) -> WriteResult<Value> {
    let mut out = Map::new();
    for table in EXPLICIT {
        let Some(items) = body.get(table) else { continue };
        let items = items.as_array().ok_or_else(|| {
            WriteError::Invalid([(table.to_string(), vec!["an array is required".to_string()])].into())
        })?;
        let mut ids = Vec::with_capacity(items.len());
        for item in items {
            let id = match table {
                "users" => db.create_user(item, Actor::Sync)?,
                "companyTypes" => db.create_company_type(item.get("name").and_then(Value::as_str).unwrap_or("Typ")),
                "resources" => db.create_resource(item)?,
                "companies" => db.create_company(item, Actor::Sync)?,
                "contactPersons" => db.create_contact(item, Actor::Sync)?,
                "projects" => db.create_project(item, Actor::Sync)?,
                "leads" => db.create_lead(item, Actor::Sync)?,
                "tasks" => db.create_task(item, Actor::Sync)?,
                _ => db.create_absence(item, Actor::Sync)?,
            };
            ids.push(json!(id));
        }
        out.insert(table.to_string(), Value::Array(ids));
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn berlin_time_follows_daylight_saving() {
        let summer = NaiveDate::from_ymd_opt(2026, 5, 4).unwrap().and_hms_opt(10, 0, 0).unwrap();
        let winter = NaiveDate::from_ymd_opt(2026, 11, 2).unwrap().and_hms_opt(10, 0, 0).unwrap();
        assert_eq!(utc(berlin(summer)), "2026-05-04T08:00:00.000Z");
        assert_eq!(utc(berlin(winter)), "2026-11-02T09:00:00.000Z");
    }

    #[test]
    fn demo_seed_passes_the_api_validation() {
        let mut db = Db::new(None);
        demo(&mut db).unwrap();
        assert_eq!(db.users.len(), 4);
        assert!(db.tasks.values().any(|t| t["type"] == "RecurrencyException" && !t["parentId"].is_null()));
    }
}
