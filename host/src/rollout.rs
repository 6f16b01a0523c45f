//! Rollouts: the rules a new version must keep to replace a serving one
//! ([`Guard`]), the versions held back because they reach further than the
//! one they would replace, and the contents an operator declined.
//!
//! A version whose [`Reach`] is wider than the serving version's (a new
//! imported interface such as `wasi:sockets/tcp`, a new directory, variable
//! or address in its policy) is **held**, not swapped: the serving version
//! goes on serving, an [`Event::Held`](crate::Event::Held) shows the
//! difference, and the embedder (or the operator, through `wasmplug run
//! --watch`) approves or refuses it by name
//! ([`Registry::approve`](crate::Registry::approve),
//! [`Registry::refuse`](crate::Registry::refuse)). A version the watcher
//! holds has run no guest code at all: it is compiled, not instantiated,
//! until it is approved.
//!
//! What was refused, or rolled back ([`Registry::rollback`](crate::Registry::rollback)),
//! is remembered by source and content hash: the watcher does not load the
//! same bytes from the same file again. A new content is a new decision.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::identity::ContentHash;
use crate::pool::Live;
use crate::reach::{Reach, Widening};
use crate::slot::SlotState;
use crate::{Identity, Plugin, Source, World};

/// Rules a new version must keep to be activated through
/// [`Registry::activate_guarded`](crate::Registry::activate_guarded), as the
/// [`Watcher`](crate::Watcher) does. The defaults ([`Guard::default`])
/// refuse a new file claiming a name that another source serves and a new
/// version that drops exports the serving version has, and hold a version
/// that reaches further than the serving one until it is approved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guard {
    /// Let any source take over a name another source serves (and receive
    /// its handoff state). Off: a name belongs to the source that first
    /// claimed it, until that source's versions are all gone.
    pub shared_names: bool,
    /// Let a new version whose exports are a strict subset of the serving
    /// version's replace it (off: refused, as it would break callers of
    /// the missing exports; typically a truncated or wrong file).
    pub shrinking_exports: bool,
    /// Let a new version that imports interfaces the serving version does
    /// not, or whose policy grants more, replace it at once. Off: it is
    /// held, and the serving version goes on serving, until
    /// [`Registry::approve`](crate::Registry::approve).
    pub widening: bool,
}

impl Guard {
    /// Everything allowed: what [`Registry::activate`](crate::Registry::activate) uses.
    pub fn trusting() -> Self {
        Guard {
            shared_names: true,
            shrinking_exports: true,
            widening: true,
        }
    }

    /// The version `plugin` would be compared with: the one loaded from the
    /// same source, else the current version of its name.
    pub(crate) fn serving<'a, W: World>(
        state: &'a SlotState<W>,
        current: Option<&'a std::sync::Arc<Live<W>>>,
        source: &Source,
    ) -> Option<&'a std::sync::Arc<Live<W>>> {
        state
            .versions
            .iter()
            .find(|l| l.plugin.source() == source)
            .or(current)
    }

    /// What `plugin` reaches beyond `serving`, if this guard holds
    /// widenings; `None` when it may go ahead.
    pub(crate) fn holds<W: World>(
        &self,
        serving: &Plugin<W>,
        plugin: &Plugin<W>,
    ) -> Option<Widening> {
        if self.widening {
            return None;
        }
        let widening = reach_of(serving).widening_to(&reach_of(plugin));
        (!widening.is_empty()).then_some(widening)
    }

    pub(crate) fn check<W: World>(&self, state: &SlotState<W>, plugin: &Plugin<W>) -> Result<()> {
        let refuse = |cause: String| {
            Err(Error::Load {
                plugin: plugin.plugin_ref(),
                cause: anyhow::anyhow!(cause),
            })
        };
        if !self.shared_names {
            if let Some(owner) = state
                .versions
                .iter()
                .find(|l| l.plugin.source() != plugin.source())
            {
                return refuse(format!(
                    "the name `{}` belongs to {} (serving {}); {} claims it too, and was \
                     refused (allow it with shared names)",
                    plugin.identity().name,
                    owner.plugin.source(),
                    owner.plugin.identity(),
                    plugin.source(),
                ));
            }
        }
        if !self.shrinking_exports {
            let serving = state
                .versions
                .iter()
                .find(|l| l.plugin.source() == plugin.source());
            if let Some(serving) = serving {
                let old = serving.plugin.export_names();
                let new = plugin.export_names();
                let missing: Vec<&str> = old
                    .iter()
                    .filter(|name| !new.contains(name))
                    .map(String::as_str)
                    .collect();
                if !missing.is_empty() && new.iter().all(|name| old.contains(name)) {
                    return refuse(format!(
                        "it exports only part of what {} exports (missing: {}); refused \
                         so callers of those keep working (a truncated or wrong file?)",
                        serving.plugin.identity(),
                        missing.join(", ")
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What a loaded version reaches.
pub(crate) fn reach_of<W: World>(plugin: &Plugin<W>) -> Reach {
    Reach::new(plugin.imports(), plugin.policy())
}

/// A version held back until the embedder approves it: what it would add,
/// and what it would replace. [`Registry::held`](crate::Registry::held)
/// lists them.
#[derive(Debug, Clone)]
pub struct HeldInfo {
    /// The name it would serve: the name of the version it would replace.
    pub name: String,
    /// The version serving the name, which goes on serving meanwhile.
    pub serving: Identity,
    /// Its own name and version, when known. A version the watcher holds
    /// has run no guest code, so it has not said who it is yet: `None`.
    pub candidate: Option<Identity>,
    /// Where it came from.
    pub source: Source,
    /// The SHA-256 of its bytes.
    pub content_hash: ContentHash,
    /// What it reaches that the serving version does not.
    pub widening: Widening,
    /// When it was held.
    pub since: SystemTime,
}

/// Makes a held version's [`Plugin`] when it is approved (the watcher's
/// held versions are only compiled until then).
pub(crate) type Pending<W> = Box<dyn FnOnce() -> Result<Plugin<W>> + Send>;

pub(crate) struct Held<W: World> {
    pub(crate) info: HeldInfo,
    /// The rules it is activated under once approved (widening allowed).
    pub(crate) guard: Guard,
    pub(crate) pending: Pending<W>,
    /// Whether approving it also removes versions loaded earlier from its
    /// source under another name (a watched file whose content changed its
    /// name).
    pub(crate) replaces_source: bool,
}

/// The held versions, by the name they would serve, and the contents
/// declined (refused, or rolled back), by source and content hash.
pub(crate) struct Holds<W: World> {
    held: HashMap<String, Held<W>>,
    declined: HashSet<(Source, ContentHash)>,
}

impl<W: World> Default for Holds<W> {
    fn default() -> Self {
        Holds {
            held: HashMap::new(),
            declined: HashSet::new(),
        }
    }
}

impl<W: World> Holds<W> {
    /// Hold `held`, in place of whatever was held for its name or from its
    /// source (a newer file supersedes an older one still waiting).
    pub(crate) fn hold(&mut self, held: Held<W>) {
        self.drop_source(&held.info.source);
        self.held.insert(held.info.name.clone(), held);
    }

    /// Forget what is held from `source` (a new content of that source was
    /// activated, or the source is gone).
    pub(crate) fn drop_source(&mut self, source: &Source) {
        self.held.retain(|_, h| h.info.source != *source);
    }

    pub(crate) fn take(&mut self, name: &str) -> Option<Held<W>> {
        self.held.remove(name)
    }

    pub(crate) fn list(&self) -> Vec<HeldInfo> {
        let mut out: Vec<HeldInfo> = self.held.values().map(|h| h.info.clone()).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Remember that `hash` from `source` was declined, until a content of
    /// that source goes live.
    pub(crate) fn decline(&mut self, source: &Source, hash: ContentHash) {
        self.declined.insert((source.clone(), hash));
    }

    /// Whether `hash` from `source` is held or was declined: nothing for
    /// the watcher to do until the file changes.
    pub(crate) fn settled(&self, source: &Source, hash: ContentHash) -> bool {
        self.declined.contains(&(source.clone(), hash))
            || self
                .held
                .values()
                .any(|h| h.info.source == *source && h.info.content_hash == hash)
    }

    /// A content of `source` went live: earlier decisions about it are moot.
    pub(crate) fn activated(&mut self, source: &Source) {
        self.drop_source(source);
        self.declined.retain(|(s, _)| s != source);
    }
}

/// The error for a rollout command with nothing to act on.
pub(crate) fn nothing_to(name: &str, what: impl Into<String>) -> Error {
    Error::Rollout {
        name: name.to_string(),
        message: what.into(),
    }
}
