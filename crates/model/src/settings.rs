//! Cluster-wide settings: names, defaults, validation and parsing.
//!
//! Every setting has one canonical dotted key (`presence.max_watchers`). Operators may
//! also use the unambiguous last part (`max_watchers`) or the part after the section
//! (`adhoc_subscriptions.enabled`); [`resolve_key`] maps those to the canonical key.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Refusal;

/// A numeric cap that may also be switched off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    Unlimited,
    Max(u32),
}

impl Limit {
    /// Room left for `current` entries, `None` when unlimited.
    pub fn room(self, current: usize) -> Option<usize> {
        match self {
            Limit::Unlimited => None,
            Limit::Max(m) => Some((m as usize).saturating_sub(current)),
        }
    }

    /// True when one more entry on top of `current` would cross the limit.
    pub fn is_full(self, current: usize) -> bool {
        self.room(current) == Some(0)
    }

    pub fn reached_by(self, current: usize) -> bool {
        match self {
            Limit::Unlimited => false,
            Limit::Max(m) => current >= m as usize,
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Unlimited => f.write_str("unlimited"),
            Limit::Max(m) => write!(f, "{m}"),
        }
    }
}

/// The cluster-wide settings, replicated through Raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub availability_sharing: bool,
    pub view_without_approval: bool,
    pub max_contact_list_size: Limit,
    pub max_watchers: Limit,
    pub adhoc_enabled: bool,
    pub adhoc_max_per_user: u32,
    pub adhoc_expiry_secs: u32,
    pub im_enabled: bool,
    pub suppress_offline_im: bool,
    pub allow_history_logging: bool,
    pub allow_cut_paste: bool,
    pub offline_queue_max_per_user: u32,
    pub broadcast_max_recipients: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            availability_sharing: true,
            view_without_approval: false,
            max_contact_list_size: Limit::Max(200),
            max_watchers: Limit::Max(200),
            adhoc_enabled: false,
            adhoc_max_per_user: 50,
            adhoc_expiry_secs: 1800,
            im_enabled: true,
            suppress_offline_im: false,
            allow_history_logging: true,
            allow_cut_paste: true,
            offline_queue_max_per_user: 500,
            broadcast_max_recipients: 500,
        }
    }
}

/// How a setting's value is typed and bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    /// A count in the range, or `unlimited`.
    Limit {
        min: u32,
        max: u32,
    },
    Count {
        min: u32,
        max: u32,
    },
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Bool => f.write_str("on|off"),
            Kind::Limit { min, max } => write!(f, "{min}..{max}|unlimited"),
            Kind::Count { min, max } => write!(f, "{min}..{max}"),
        }
    }
}

/// One entry of the settings table.
#[derive(Debug, Clone, Copy)]
pub struct SettingDef {
    pub key: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

/// Every setting, in display order.
pub const SETTINGS: &[SettingDef] = &[
    SettingDef {
        key: "presence.availability_sharing",
        kind: Kind::Bool,
        help: "users may see each other's availability",
    },
    SettingDef {
        key: "presence.view_without_approval",
        kind: Kind::Bool,
        help: "subscription requests are approved by the server",
    },
    SettingDef {
        key: "presence.max_contact_list_size",
        kind: Kind::Limit {
            min: 1,
            max: 100_000,
        },
        help: "contacts per user",
    },
    SettingDef {
        key: "presence.max_watchers",
        kind: Kind::Limit {
            min: 1,
            max: 100_000,
        },
        help: "users that may watch one user's availability",
    },
    SettingDef {
        key: "presence.adhoc_subscriptions.enabled",
        kind: Kind::Bool,
        help: "temporary presence subscriptions",
    },
    SettingDef {
        key: "presence.adhoc_subscriptions.max_per_user",
        kind: Kind::Count {
            min: 1,
            max: 10_000,
        },
        help: "temporary subscriptions per user",
    },
    SettingDef {
        key: "presence.adhoc_subscriptions.expiry_secs",
        kind: Kind::Count {
            min: 10,
            max: 604_800,
        },
        help: "lifetime of a temporary subscription",
    },
    SettingDef {
        key: "messaging.im_enabled",
        kind: Kind::Bool,
        help: "instant messages are delivered",
    },
    SettingDef {
        key: "messaging.suppress_offline_im",
        kind: Kind::Bool,
        help: "refuse messages to offline users instead of storing them",
    },
    SettingDef {
        key: "messaging.allow_history_logging",
        kind: Kind::Bool,
        help: "clients may log message history",
    },
    SettingDef {
        key: "messaging.allow_cut_paste",
        kind: Kind::Bool,
        help: "clients may cut and paste in conversations",
    },
    SettingDef {
        key: "messaging.offline_queue_max_per_user",
        kind: Kind::Count {
            min: 1,
            max: 100_000,
        },
        help: "offline messages stored per user",
    },
    SettingDef {
        key: "messaging.broadcast_max_recipients",
        kind: Kind::Count {
            min: 1,
            max: 100_000,
        },
        help: "recipients of one broadcast message",
    },
];

/// Map an operator-typed key to its canonical form: the full key, or any unambiguous
/// dotted suffix of it (`max_watchers`, `adhoc_subscriptions.enabled`).
pub fn resolve_key(key: &str) -> Result<&'static SettingDef, Refusal> {
    let key = key.trim();
    if let Some(d) = SETTINGS.iter().find(|d| d.key == key) {
        return Ok(d);
    }
    let matches: Vec<&SettingDef> = SETTINGS
        .iter()
        .filter(|d| {
            !key.is_empty()
                && d.key.ends_with(key)
                && d.key[..d.key.len() - key.len()].ends_with('.')
        })
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(Refusal::UnknownSetting(key.to_string())),
        many => Err(Refusal::BadValue(format!(
            "setting name {key:?} is ambiguous: {}",
            many.iter().map(|d| d.key).collect::<Vec<_>>().join(", ")
        ))),
    }
}

pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" | "enabled" => Some(true),
        "off" | "false" | "no" | "0" | "disabled" => Some(false),
        _ => None,
    }
}

fn parse_count(key: &str, v: &str, min: u32, max: u32) -> Result<u32, Refusal> {
    let n: u32 = v.trim().parse().map_err(|_| {
        Refusal::BadValue(format!(
            "{key}: {v:?} is not a number (expected {min}..{max})"
        ))
    })?;
    if n < min || n > max {
        return Err(Refusal::BadValue(format!(
            "{key}: {n} is out of range {min}..{max}"
        )));
    }
    Ok(n)
}

/// A parsed, validated setting value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    Bool(bool),
    Limit(Limit),
    Count(u32),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(true) => f.write_str("on"),
            Value::Bool(false) => f.write_str("off"),
            Value::Limit(l) => l.fmt(f),
            Value::Count(n) => n.fmt(f),
        }
    }
}

pub fn parse_value(def: &SettingDef, v: &str) -> Result<Value, Refusal> {
    match def.kind {
        Kind::Bool => parse_bool(v)
            .map(Value::Bool)
            .ok_or_else(|| Refusal::BadValue(format!("{}: {v:?} is not on/off", def.key))),
        Kind::Limit { min, max } => {
            if v.trim().eq_ignore_ascii_case("unlimited") {
                Ok(Value::Limit(Limit::Unlimited))
            } else {
                parse_count(def.key, v, min, max).map(|n| Value::Limit(Limit::Max(n)))
            }
        }
        Kind::Count { min, max } => parse_count(def.key, v, min, max).map(Value::Count),
    }
}

impl Settings {
    /// The value of one setting by canonical key.
    pub fn get(&self, key: &str) -> Option<Value> {
        Some(match key {
            "presence.availability_sharing" => Value::Bool(self.availability_sharing),
            "presence.view_without_approval" => Value::Bool(self.view_without_approval),
            "presence.max_contact_list_size" => Value::Limit(self.max_contact_list_size),
            "presence.max_watchers" => Value::Limit(self.max_watchers),
            "presence.adhoc_subscriptions.enabled" => Value::Bool(self.adhoc_enabled),
            "presence.adhoc_subscriptions.max_per_user" => Value::Count(self.adhoc_max_per_user),
            "presence.adhoc_subscriptions.expiry_secs" => Value::Count(self.adhoc_expiry_secs),
            "messaging.im_enabled" => Value::Bool(self.im_enabled),
            "messaging.suppress_offline_im" => Value::Bool(self.suppress_offline_im),
            "messaging.allow_history_logging" => Value::Bool(self.allow_history_logging),
            "messaging.allow_cut_paste" => Value::Bool(self.allow_cut_paste),
            "messaging.offline_queue_max_per_user" => Value::Count(self.offline_queue_max_per_user),
            "messaging.broadcast_max_recipients" => Value::Count(self.broadcast_max_recipients),
            _ => return None,
        })
    }

    /// Set one setting from an operator string; validation happens here, so the same
    /// check runs on the proposer (early, friendly error) and inside `apply`.
    pub fn set(&mut self, key: &str, raw: &str) -> Result<(&'static str, Value), Refusal> {
        let def = resolve_key(key)?;
        let value = parse_value(def, raw)?;
        self.put(def.key, value);
        Ok((def.key, value))
    }

    /// Restore one setting to its default.
    pub fn reset(&mut self, key: &str) -> Result<(&'static str, Value), Refusal> {
        let def = resolve_key(key)?;
        let value = Settings::default()
            .get(def.key)
            .expect("every def has a default");
        self.put(def.key, value);
        Ok((def.key, value))
    }

    fn put(&mut self, key: &str, value: Value) {
        match (key, value) {
            ("presence.availability_sharing", Value::Bool(b)) => self.availability_sharing = b,
            ("presence.view_without_approval", Value::Bool(b)) => self.view_without_approval = b,
            ("presence.max_contact_list_size", Value::Limit(l)) => self.max_contact_list_size = l,
            ("presence.max_watchers", Value::Limit(l)) => self.max_watchers = l,
            ("presence.adhoc_subscriptions.enabled", Value::Bool(b)) => self.adhoc_enabled = b,
            ("presence.adhoc_subscriptions.max_per_user", Value::Count(n)) => {
                self.adhoc_max_per_user = n
            }
            ("presence.adhoc_subscriptions.expiry_secs", Value::Count(n)) => {
                self.adhoc_expiry_secs = n
            }
            ("messaging.im_enabled", Value::Bool(b)) => self.im_enabled = b,
            ("messaging.suppress_offline_im", Value::Bool(b)) => self.suppress_offline_im = b,
            ("messaging.allow_history_logging", Value::Bool(b)) => self.allow_history_logging = b,
            ("messaging.allow_cut_paste", Value::Bool(b)) => self.allow_cut_paste = b,
            ("messaging.offline_queue_max_per_user", Value::Count(n)) => {
                self.offline_queue_max_per_user = n
            }
            ("messaging.broadcast_max_recipients", Value::Count(n)) => {
                self.broadcast_max_recipients = n
            }
            // parse_value produced the value from the same def, so kinds always match
            _ => unreachable!("setting {key} with value of the wrong kind"),
        }
    }

    /// All settings as (key, value, is_default), in display order.
    pub fn entries(&self) -> Vec<(&'static SettingDef, Value, bool)> {
        let d = Settings::default();
        SETTINGS
            .iter()
            .map(|def| {
                let v = self.get(def.key).expect("known key");
                (def, v, d.get(def.key) == Some(v))
            })
            .collect()
    }
}

/// A per-user override of a cluster-wide boolean setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Override {
    #[default]
    Inherit,
    On,
    Off,
}

impl Override {
    pub fn parse(v: &str) -> Result<Self, Refusal> {
        match v.trim().to_ascii_lowercase().as_str() {
            "inherit" | "default" => Ok(Override::Inherit),
            other => match parse_bool(other) {
                Some(true) => Ok(Override::On),
                Some(false) => Ok(Override::Off),
                None => Err(Refusal::BadValue(format!("{v:?} is not inherit/on/off"))),
            },
        }
    }

    pub fn resolve(self, cluster: bool) -> bool {
        match self {
            Override::Inherit => cluster,
            Override::On => true,
            Override::Off => false,
        }
    }
}

impl fmt::Display for Override {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Override::Inherit => "inherit",
            Override::On => "on",
            Override::Off => "off",
        })
    }
}

/// The per-user policy keys an operator may override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKey {
    AvailabilitySharing,
    ViewWithoutApproval,
}

impl PolicyKey {
    pub fn parse(k: &str) -> Result<Self, Refusal> {
        match k.trim().trim_start_matches("presence.") {
            "availability_sharing" => Ok(PolicyKey::AvailabilitySharing),
            "view_without_approval" => Ok(PolicyKey::ViewWithoutApproval),
            other => Err(Refusal::UnknownSetting(format!(
                "{other} (per-user policies: availability_sharing, view_without_approval)"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKey::AvailabilitySharing => "availability_sharing",
            PolicyKey::ViewWithoutApproval => "view_without_approval",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_resolve_by_suffix() {
        assert_eq!(
            resolve_key("max_watchers").unwrap().key,
            "presence.max_watchers"
        );
        assert_eq!(
            resolve_key("adhoc_subscriptions.enabled").unwrap().key,
            "presence.adhoc_subscriptions.enabled"
        );
        assert!(matches!(
            resolve_key("nope"),
            Err(Refusal::UnknownSetting(_))
        ));
        assert!(matches!(
            resolve_key("watchers"),
            Err(Refusal::UnknownSetting(_))
        ));
    }

    #[test]
    fn values_are_validated() {
        let mut s = Settings::default();
        assert_eq!(
            s.set("max_contact_list_size", "unlimited").unwrap().1,
            Value::Limit(Limit::Unlimited)
        );
        assert!(s.set("max_contact_list_size", "0").is_err());
        assert!(s.set("im_enabled", "maybe").is_err());
        assert!(s.set("offline_queue_max_per_user", "-3").is_err());
        s.set("im_enabled", "off").unwrap();
        assert!(!s.im_enabled);
        s.reset("im_enabled").unwrap();
        assert!(s.im_enabled);
    }

    #[test]
    fn every_setting_round_trips() {
        let defaults = Settings::default();
        for def in SETTINGS {
            // A value other than the default, of the setting's own kind.
            let other = match (def.kind, defaults.get(def.key).unwrap()) {
                (Kind::Bool, Value::Bool(b)) => Value::Bool(!b),
                (Kind::Limit { min, .. }, Value::Limit(Limit::Unlimited)) => {
                    Value::Limit(Limit::Max(min.max(1)))
                }
                (Kind::Limit { min, max }, Value::Limit(Limit::Max(m))) => {
                    Value::Limit(Limit::Max(if m < max { m + 1 } else { min }))
                }
                (Kind::Count { min, max }, Value::Count(c)) => {
                    Value::Count(if c < max { c + 1 } else { min })
                }
                (k, v) => panic!("{}: value {v} does not fit its kind {k}", def.key),
            };
            assert_ne!(Some(other), defaults.get(def.key), "{}", def.key);
            let mut t = Settings::default();
            t.set(def.key, &other.to_string()).unwrap();
            assert_eq!(t.get(def.key), Some(other), "{} reads back", def.key);
            assert_ne!(t, defaults, "{} changed something", def.key);
            // Persisted and loaded again, the value survives.
            let back: Settings = serde_json::from_slice(&serde_json::to_vec(&t).unwrap()).unwrap();
            assert_eq!(back, t, "{} survives a reload", def.key);
            // Every other key is untouched.
            for d in SETTINGS.iter().filter(|d| d.key != def.key) {
                assert_eq!(
                    t.get(d.key),
                    defaults.get(d.key),
                    "{} moved {}",
                    def.key,
                    d.key
                );
            }
        }
    }
}
