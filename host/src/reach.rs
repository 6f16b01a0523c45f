//! What a version can reach, and what a new version would add to it.
//!
//! A plugin reaches the world through two doors: the interfaces it imports
//! (a `wasi:sockets/tcp` import is a request for the network whatever the
//! policy grants today) and the grants of its [`Policy`] (directories,
//! variables, addresses). A swap compares the new version's [`Reach`] with
//! the serving version's; anything new is a [`Widening`], and the
//! registry's [`Guard`](crate::registry::Guard) holds such a version until
//! the embedder approves it, as a browser holds an extension update that
//! asks for more permissions.

use std::collections::BTreeSet;
use std::fmt;

use crate::policy::{Grant, Policy};

/// The imports and grants of one version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reach {
    /// Imported interfaces (and root functions), without their version:
    /// `wasi:sockets/tcp@0.2.0` and `@0.2.6` are one door.
    pub imports: BTreeSet<String>,
    /// What the policy grants.
    pub grants: BTreeSet<Grant>,
}

impl Reach {
    /// The reach of a component importing `imports` (as the component
    /// names them) under `policy`.
    pub fn new<S: AsRef<str>>(imports: impl IntoIterator<Item = S>, policy: &Policy) -> Self {
        Reach {
            imports: imports
                .into_iter()
                .map(|name| unversioned(name.as_ref()).to_string())
                .collect(),
            grants: policy.grants().into_iter().collect(),
        }
    }

    /// What `next` reaches that `self` does not: new imports, and grants
    /// no grant of `self` covers (a read-write directory covers the same
    /// directory read-only; nothing else covers another grant). Empty
    /// when `next` reaches no further.
    pub fn widening_to(&self, next: &Reach) -> Widening {
        Widening {
            imports: next.imports.difference(&self.imports).cloned().collect(),
            grants: next
                .grants
                .iter()
                .filter(|new| !self.grants.iter().any(|old| old.covers(new)))
                .cloned()
                .collect(),
        }
    }
}

/// `wasi:sockets/tcp` for `wasi:sockets/tcp@0.2.0`.
fn unversioned(name: &str) -> &str {
    name.split('@').next().unwrap_or(name)
}

/// What a new version would reach beyond the serving one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Widening {
    /// Interfaces it imports that the serving version does not.
    pub imports: Vec<String>,
    /// Grants its policy adds.
    pub grants: Vec<Grant>,
}

impl Widening {
    /// Whether it adds nothing.
    pub fn is_empty(&self) -> bool {
        self.imports.is_empty() && self.grants.is_empty()
    }
}

impl fmt::Display for Widening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("nothing new");
        }
        let mut parts: Vec<String> = self
            .imports
            .iter()
            .map(|name| format!("imports {name}"))
            .collect();
        parts.extend(self.grants.iter().map(ToString::to_string));
        write!(f, "{}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::DirAccess;

    fn reach(imports: &[&str], policy: &Policy) -> Reach {
        Reach::new(imports.iter().copied(), policy)
    }

    #[test]
    fn the_same_reach_under_another_interface_version_widens_nothing() {
        let policy = Policy::default();
        let old = reach(
            &["wasi:cli/stdout@0.2.0", "wasmplug:plugin/log@1.0.0"],
            &policy,
        );
        let new = reach(
            &["wasi:cli/stdout@0.2.6", "wasmplug:plugin/log@1.1.0"],
            &policy,
        );
        assert!(old.widening_to(&new).is_empty());
        // Dropping an import narrows: nothing to approve.
        let fewer = reach(&["wasi:cli/stdout@0.2.6"], &policy);
        assert!(old.widening_to(&fewer).is_empty());
    }

    #[test]
    fn a_new_import_or_grant_is_named_in_the_widening() {
        let tmp = std::env::temp_dir();
        let base = Policy::default().preopen_dir(&tmp, "/data", DirAccess::ReadOnly);
        let old = reach(&["wasi:cli/stdout@0.2.0"], &base);
        let wider = base
            .clone()
            .env("API_KEY", "x")
            .allow_connect("127.0.0.1:80".parse().unwrap());
        let new = reach(&["wasi:cli/stdout@0.2.0", "wasi:sockets/tcp@0.2.0"], &wider);
        let widening = old.widening_to(&new);
        assert_eq!(widening.imports, vec!["wasi:sockets/tcp".to_string()]);
        assert_eq!(
            widening.grants,
            vec![
                Grant::Env("API_KEY".into()),
                Grant::Connect("127.0.0.1:80".parse().unwrap())
            ]
        );
        let shown = widening.to_string();
        assert!(shown.contains("imports wasi:sockets/tcp"), "{shown}");
        assert!(shown.contains("connect 127.0.0.1:80"), "{shown}");
        assert!(shown.contains("env API_KEY"), "{shown}");
    }

    #[test]
    fn write_access_to_a_directory_read_before_is_a_widening_and_not_the_reverse() {
        let tmp = std::env::temp_dir();
        let read = reach(
            &[],
            &Policy::default().preopen_dir(&tmp, "/data", DirAccess::ReadOnly),
        );
        let write = reach(
            &[],
            &Policy::default().preopen_dir(&tmp, "/data", DirAccess::ReadWrite),
        );
        let elsewhere = reach(
            &[],
            &Policy::default().preopen_dir(&tmp, "/other", DirAccess::ReadOnly),
        );
        assert_eq!(read.widening_to(&write).grants.len(), 1);
        assert!(write.widening_to(&read).is_empty());
        // The same host directory under another guest path is another door.
        assert_eq!(read.widening_to(&elsewhere).grants.len(), 1);
    }
}
