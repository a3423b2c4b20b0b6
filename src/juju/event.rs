//! What Juju asked the charm to do, parsed from `JUJU_DISPATCH_PATH`.
//!
//! Owns: the mapping from `hooks/<name>` and `actions/<name>` to `Event`.
//! Invariant: every hook name Juju 3.x can send parses; names this charm does not
//! know become `Event::Unknown` (handled as a logged no-op), never an error.

use std::fmt;

/// Kind of relation hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelationHook {
    Created,
    Joined,
    Changed,
    Departed,
    Broken,
}

impl RelationHook {
    fn as_str(self) -> &'static str {
        match self {
            RelationHook::Created => "created",
            RelationHook::Joined => "joined",
            RelationHook::Changed => "changed",
            RelationHook::Departed => "departed",
            RelationHook::Broken => "broken",
        }
    }
}

/// Kind of storage hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageHook {
    Attached,
    Detaching,
}

/// Kind of secret hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretHook {
    Changed,
    Rotate,
    Expired,
    Remove,
}

impl SecretHook {
    fn as_str(self) -> &'static str {
        match self {
            SecretHook::Changed => "secret-changed",
            SecretHook::Rotate => "secret-rotate",
            SecretHook::Expired => "secret-expired",
            SecretHook::Remove => "secret-remove",
        }
    }
}

/// One hook or action invocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Event {
    Install,
    Start,
    Stop,
    Remove,
    ConfigChanged,
    UpgradeCharm,
    UpdateStatus,
    LeaderElected,
    LeaderSettingsChanged,
    PreSeriesUpgrade,
    PostSeriesUpgrade,
    Relation {
        endpoint: String,
        kind: RelationHook,
    },
    Storage {
        name: String,
        kind: StorageHook,
    },
    Secret(SecretHook),
    Action(String),
    /// A hook this charm does not know (e.g. a k8s-only hook); succeeds as a no-op.
    Unknown(String),
}

#[derive(Debug, thiserror::Error)]
pub enum EventParseError {
    #[error("JUJU_DISPATCH_PATH={0:?} is not hooks/<name> or actions/<name>")]
    BadPath(String),
}

impl Event {
    /// Parses `hooks/<name>` or `actions/<name>`.
    pub fn parse_dispatch_path(path: &str) -> Result<Event, EventParseError> {
        let bad = || EventParseError::BadPath(path.to_string());
        let (kind, name) = path.split_once('/').ok_or_else(bad)?;
        if name.is_empty() || name.contains('/') {
            return Err(bad());
        }
        match kind {
            "hooks" => Ok(Event::from_hook_name(name)),
            "actions" => Ok(Event::Action(name.to_string())),
            _ => Err(bad()),
        }
    }

    /// Maps a hook name to an event; unknown names give `Event::Unknown`.
    pub fn from_hook_name(name: &str) -> Event {
        match name {
            "install" => return Event::Install,
            "start" => return Event::Start,
            "stop" => return Event::Stop,
            "remove" => return Event::Remove,
            "config-changed" => return Event::ConfigChanged,
            "upgrade-charm" => return Event::UpgradeCharm,
            "update-status" => return Event::UpdateStatus,
            "leader-elected" => return Event::LeaderElected,
            "leader-settings-changed" => return Event::LeaderSettingsChanged,
            "pre-series-upgrade" => return Event::PreSeriesUpgrade,
            "post-series-upgrade" => return Event::PostSeriesUpgrade,
            "secret-changed" => return Event::Secret(SecretHook::Changed),
            "secret-rotate" => return Event::Secret(SecretHook::Rotate),
            "secret-expired" => return Event::Secret(SecretHook::Expired),
            "secret-remove" => return Event::Secret(SecretHook::Remove),
            _ => {}
        }
        for kind in [
            RelationHook::Created,
            RelationHook::Joined,
            RelationHook::Changed,
            RelationHook::Departed,
            RelationHook::Broken,
        ] {
            if let Some(endpoint) = name.strip_suffix(&format!("-relation-{}", kind.as_str())) {
                if !endpoint.is_empty() {
                    return Event::Relation {
                        endpoint: endpoint.to_string(),
                        kind,
                    };
                }
            }
        }
        for (suffix, kind) in [
            ("-storage-attached", StorageHook::Attached),
            ("-storage-detaching", StorageHook::Detaching),
        ] {
            if let Some(storage) = name.strip_suffix(suffix) {
                if !storage.is_empty() {
                    return Event::Storage {
                        name: storage.to_string(),
                        kind,
                    };
                }
            }
        }
        Event::Unknown(name.to_string())
    }

    /// The hook name as Juju spells it (`peers-relation-changed`), or the action name.
    pub fn name(&self) -> String {
        match self {
            Event::Install => "install".into(),
            Event::Start => "start".into(),
            Event::Stop => "stop".into(),
            Event::Remove => "remove".into(),
            Event::ConfigChanged => "config-changed".into(),
            Event::UpgradeCharm => "upgrade-charm".into(),
            Event::UpdateStatus => "update-status".into(),
            Event::LeaderElected => "leader-elected".into(),
            Event::LeaderSettingsChanged => "leader-settings-changed".into(),
            Event::PreSeriesUpgrade => "pre-series-upgrade".into(),
            Event::PostSeriesUpgrade => "post-series-upgrade".into(),
            Event::Relation { endpoint, kind } => format!("{endpoint}-relation-{}", kind.as_str()),
            Event::Storage { name, kind } => match kind {
                StorageHook::Attached => format!("{name}-storage-attached"),
                StorageHook::Detaching => format!("{name}-storage-detaching"),
            },
            Event::Secret(s) => s.as_str().into(),
            Event::Action(name) | Event::Unknown(name) => name.clone(),
        }
    }

    pub fn is_action(&self) -> bool {
        matches!(self, Event::Action(_))
    }

    pub(crate) fn needs_relation(&self) -> bool {
        matches!(self, Event::Relation { .. })
    }

    pub(crate) fn needs_storage(&self) -> bool {
        matches!(self, Event::Storage { .. })
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Action(name) => write!(f, "action {name}"),
            other => f.write_str(&other.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hook_kind_round_trips() {
        let names = [
            "install",
            "start",
            "stop",
            "remove",
            "config-changed",
            "upgrade-charm",
            "update-status",
            "leader-elected",
            "leader-settings-changed",
            "pre-series-upgrade",
            "post-series-upgrade",
            "secret-changed",
            "secret-rotate",
            "secret-expired",
            "secret-remove",
            "peers-relation-created",
            "peers-relation-joined",
            "peers-relation-changed",
            "peers-relation-departed",
            "postgresql-relation-broken",
            "tsa-relation-joined",
            "flight-relation-changed",
            "monitoring-relation-created",
            "concourse-data-storage-attached",
            "concourse-data-storage-detaching",
        ];
        for name in names {
            let ev = Event::parse_dispatch_path(&format!("hooks/{name}")).unwrap();
            assert!(!matches!(ev, Event::Unknown(_)), "{name} parsed as unknown");
            assert_eq!(ev.name(), name);
        }
    }

    #[test]
    fn relation_and_storage_fields() {
        assert_eq!(
            Event::from_hook_name("my-db-relation-departed"),
            Event::Relation {
                endpoint: "my-db".into(),
                kind: RelationHook::Departed
            }
        );
        assert_eq!(
            Event::from_hook_name("concourse-data-storage-attached"),
            Event::Storage {
                name: "concourse-data".into(),
                kind: StorageHook::Attached
            }
        );
    }

    #[test]
    fn unknown_hooks_and_actions() {
        assert_eq!(
            Event::parse_dispatch_path("hooks/workload-pebble-ready").unwrap(),
            Event::Unknown("workload-pebble-ready".into())
        );
        assert_eq!(
            Event::from_hook_name("-relation-changed"),
            Event::Unknown("-relation-changed".into())
        );
        assert_eq!(
            Event::parse_dispatch_path("actions/upgrade").unwrap(),
            Event::Action("upgrade".into())
        );
        assert_eq!(
            Event::Action("upgrade".into()).to_string(),
            "action upgrade"
        );
    }

    #[test]
    fn malformed_paths() {
        for p in [
            "",
            "hooks",
            "hooks/",
            "install",
            "foo/install",
            "hooks/a/b",
            "actions/",
        ] {
            assert!(Event::parse_dispatch_path(p).is_err(), "{p:?}");
        }
    }
}
