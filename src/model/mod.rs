//! Canonical vocabulary shared by every module: identifiers, the kinds of
//! record hqsync synchronises, and sync directions. Pure: no I/O. Each
//! canonical record (`contact`, `appointment`, `task`) carries its
//! conversions to and from the wire records of both services, in one place
//! each, so the engine only ever compares canonical values.

pub mod appointment;
pub mod capabilities;
pub mod contact;
pub mod fingerprint;
pub mod recurrence;
pub mod task;
pub mod timezone;

use std::fmt;

use serde::{Deserialize, Serialize};

/// Builds a string newtype that can only be constructed through `parse`,
/// so an id in hand is known to be well-formed.
macro_rules! id_newtype {
    ($(#[$meta:meta])* $name:ident, $what:literal, $max:expr, $valid:expr) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
                let s: String = s.into();
                let valid: fn(char) -> bool = $valid;
                if s.is_empty() || s.len() > $max || !s.chars().all(valid) {
                    return Err(IdError { what: $what, value: truncate(&s) });
                }
                Ok(Self(s))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(s).map_err(serde::de::Error::custom)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
    };
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// An identifier failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}")]
pub struct IdError {
    pub what: &'static str,
    pub value: String,
}

id_newtype!(
    /// hqsync's own name for a customer: lowercase letters, digits, `-` and `_`
    /// (it appears in URLs such as `/v1/webhooks/hellohq/{tenant}`).
    TenantId,
    "tenant id",
    64,
    |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
);

id_newtype!(
    /// A mailbox, named by its user principal name (usually the work email).
    MailboxId,
    "mailbox id",
    320,
    |c| !c.is_whitespace() && !c.is_control() && c != '/'
);

id_newtype!(
    /// An opaque Graph item id (event, contact, task, subscription). Case-sensitive.
    GraphId,
    "Graph id",
    1024,
    |c| !c.is_whitespace() && !c.is_control()
);

id_newtype!(
    /// A helloHQ record id (an int32 on the wire, kept as text).
    HqId,
    "helloHQ id",
    20,
    |c| c.is_ascii_digit()
);

/// The three kinds of record hqsync keeps in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Appointment,
    Task,
    Contact,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Appointment, Kind::Task, Kind::Contact];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Appointment => "appointment",
            Kind::Task => "task",
            Kind::Contact => "contact",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Kind {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| IdError { what: "kind (appointment|task|contact)", value: truncate(s) })
    }
}

/// Which way changes of one kind may flow (SPEC §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    #[default]
    Both,
    ToExchange,
    ToHellohq,
    Off,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Both => "both",
            Direction::ToExchange => "to_exchange",
            Direction::ToHellohq => "to_hellohq",
            Direction::Off => "off",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_are_url_safe() {
        assert!(TenantId::parse("acme-gmbh_2").is_ok());
        assert!(TenantId::parse("Acme").is_err());
        assert!(TenantId::parse("a/b").is_err());
        assert!(TenantId::parse("").is_err());
        assert!(TenantId::parse("x".repeat(65)).is_err());
    }

    #[test]
    fn hq_ids_are_numeric() {
        assert!(HqId::parse("202").is_ok());
        assert!(HqId::parse("20a").is_err());
    }

    #[test]
    fn ids_deserialize_through_parse() {
        let ok: Result<TenantId, _> = serde_json::from_str("\"acme\"");
        assert!(ok.is_ok());
        let bad: Result<TenantId, _> = serde_json::from_str("\"ACME\"");
        assert!(bad.is_err());
    }

    #[test]
    fn kind_round_trips_through_text() {
        for k in Kind::ALL {
            assert_eq!(k.as_str().parse::<Kind>().unwrap(), k);
        }
        assert!("event".parse::<Kind>().is_err());
    }
}
