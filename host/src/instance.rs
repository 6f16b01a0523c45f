//! An instance: one live, isolated copy of a plugin.
//!
//! Each instance owns its own wasmtime `Store`, so its linear memory, globals,
//! tables and WASI context belong to it alone (invariant 1). Nothing is shared
//! with another instance unless the embedder puts shared state in its own
//! `World::Data`. **Dropping an instance unloads it**: the store, the instance
//! and its memory go with it (a pooled slot is returned, its pages
//! decommitted).
//!
//! Calls run to completion on the calling thread. An instance is `Send` but
//! not shared: a call takes `&mut self`. After a trap (a crash, a deadline, a
//! memory cap) the instance is *poisoned*: further calls are refused with
//! [`Error::Trap`] rather than run on a guest whose state is undefined. Make a
//! new instance from its [`Plugin`].

use std::fmt::Display;

use anyhow::anyhow;
use wasmtime::component::{Func, Val};
use wasmtime::Store;

use crate::error::{Error, Result};
use crate::{Plugin, State, World};

/// One live instance of a plugin. See the module docs.
pub struct Instance<W: World> {
    plugin: Plugin<W>,
    store: Store<State<W::Data>>,
    instance: wasmtime::component::Instance,
    bindings: W,
    poisoned: bool,
}

impl<W: World> Instance<W> {
    pub(crate) fn new(
        plugin: Plugin<W>,
        store: Store<State<W::Data>>,
        instance: wasmtime::component::Instance,
        bindings: W,
    ) -> Self {
        plugin.instance_started();
        Instance {
            plugin,
            store,
            instance,
            bindings,
            poisoned: false,
        }
    }

    /// Call the guest through the world's typed bindings.
    ///
    /// `f` gets the `bindgen!` struct and the store; whatever it returns is
    /// the call's result. A trap, deadline or memory cap inside becomes
    /// [`Error::Trap`] and poisons this instance.
    ///
    /// ```ignore
    /// let out = instance.call(|filter, store| filter.call_apply(store, "hi"))?;
    /// ```
    pub fn call<R>(
        &mut self,
        f: impl FnOnce(&W, &mut Store<State<W::Data>>) -> wasmtime::Result<R>,
    ) -> Result<R> {
        self.enter()?;
        match f(&self.bindings, &mut self.store) {
            Ok(value) => Ok(value),
            Err(err) => {
                self.poisoned = true;
                Err(Error::from_call(self.plugin.plugin_ref(), err))
            }
        }
    }

    /// [`call`](Self::call) for an export that returns a WIT `result`: the
    /// guest's own error becomes [`Error::Guest`] (the plugin said no; the
    /// instance stays healthy), a trap stays [`Error::Trap`].
    pub fn try_call<T, E: Display>(
        &mut self,
        f: impl FnOnce(&W, &mut Store<State<W::Data>>) -> wasmtime::Result<std::result::Result<T, E>>,
    ) -> Result<T> {
        self.call(f)?.map_err(|e| Error::Guest {
            plugin: self.plugin.plugin_ref(),
            message: e.to_string(),
        })
    }

    /// Call an export by name with dynamic values: the path for hosts that
    /// learn a plugin's interface at run time, and for the CLI.
    ///
    /// `export` is `function` for a top-level export, or
    /// `interface#function`, where `interface` is the full name
    /// (`wasmplug:plugin/greeter@1.0.0`) or its short form (`greeter`). A
    /// bare `function` also finds a function in an exported interface when
    /// exactly one interface has it. `greeter.count` is the same as
    /// `greeter#count`.
    pub fn call_dynamic(&mut self, export: &str, args: &[Val]) -> Result<Vec<Val>> {
        let func = self.find_func(export)?;
        self.enter()?;
        let results = func.ty(&self.store).results().len();
        let mut out = vec![Val::Bool(false); results];
        match func.call(&mut self.store, args, &mut out) {
            Ok(()) => Ok(out),
            Err(err) => {
                // A type error in the arguments is caught before the guest
                // runs, and leaves the instance healthy.
                if err.downcast_ref::<wasmtime::Trap>().is_none() && !self.entered_guest(&err) {
                    return Err(Error::BadCall {
                        plugin: self.plugin.plugin_ref(),
                        message: format!("calling `{export}`: {err:#}"),
                    });
                }
                self.poisoned = true;
                Err(Error::from_call(self.plugin.plugin_ref(), err))
            }
        }
    }

    fn find_func(&mut self, export: &str) -> Result<Func> {
        // `iface#func`, or `iface.func` when the interface is a short name
        // (a full name's version has dots of its own).
        let split = match export.rsplit_once('#') {
            Some(split) => Some(split),
            None if !export.contains(['@', ':']) => export.rsplit_once('.'),
            None => None,
        };
        let (iface, func) = match split {
            Some((iface, func)) => (Some(iface.to_string()), func.to_string()),
            None => (None, export.to_string()),
        };
        let matches: Vec<String> = self
            .plugin
            .exports()
            .into_iter()
            .filter(|name| match name.rsplit_once('#') {
                Some((i, f)) => {
                    f == func && iface.as_deref().is_none_or(|want| short_matches(i, want))
                }
                None => iface.is_none() && *name == func,
            })
            .collect();
        let full = match matches.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(self.no_such_export(export, "no exported function by that name"));
            }
            many => {
                return Err(self.no_such_export(
                    export,
                    &format!("ambiguous; qualify it as one of: {}", many.join(", ")),
                ))
            }
        };
        let component = &self.plugin.inner.compiled.component;
        let index = match full.rsplit_once('#') {
            Some((i, f)) => component
                .get_export_index(None, i)
                .and_then(|parent| component.get_export_index(Some(&parent), f)),
            None => component.get_export_index(None, &full),
        };
        index
            .and_then(|index| self.instance.get_func(&mut self.store, index))
            .ok_or_else(|| self.no_such_export(export, "export listed but not a function"))
    }

    fn no_such_export(&self, export: &str, why: &str) -> Error {
        Error::BadCall {
            plugin: self.plugin.plugin_ref(),
            message: format!(
                "cannot call `{export}`: {why}; it exports: {}",
                self.plugin.exports().join(", ")
            ),
        }
    }

    /// Whether a dynamic call's error came from inside the guest. wasmtime
    /// checks argument types before entering; those errors carry no wasm
    /// backtrace.
    fn entered_guest(&self, err: &wasmtime::Error) -> bool {
        err.downcast_ref::<wasmtime::WasmBacktrace>().is_some()
    }

    /// Refuse a poisoned instance; arm the per-call deadline.
    fn enter(&mut self) -> Result<()> {
        if self.poisoned {
            return Err(Error::Trap {
                plugin: self.plugin.plugin_ref(),
                trap: None,
                cause: anyhow!(
                    "this instance trapped earlier and was discarded; instantiate a new one"
                ),
            });
        }
        let policy = &self.plugin.inner.policy;
        let ticks = self
            .plugin
            .inner
            .runtime
            .deadline_ticks(policy.deadline_value());
        self.store.set_epoch_deadline(ticks);
        Ok(())
    }

    /// The plugin this is an instance of.
    pub fn plugin(&self) -> &Plugin<W> {
        &self.plugin
    }

    /// True once a call has trapped: the instance refuses further calls.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The embedder's per-instance data.
    pub fn data(&self) -> &W::Data {
        self.store.data().data()
    }

    /// The embedder's per-instance data, mutably.
    pub fn data_mut(&mut self) -> &mut W::Data {
        self.store.data_mut().data_mut()
    }
}

impl<W: World> Drop for Instance<W> {
    fn drop(&mut self) {
        self.plugin.instance_ended();
    }
}

/// Does an exported interface name match what a caller wrote? Either the
/// full name, or its short form: `wasmplug:plugin/greeter@1.0.0` matches
/// `greeter` and `wasmplug:plugin/greeter`.
fn short_matches(full: &str, wanted: &str) -> bool {
    let unversioned = full.split('@').next().unwrap_or(full);
    let short = unversioned.rsplit('/').next().unwrap_or(unversioned);
    full == wanted || unversioned == wanted || short == wanted
}

#[cfg(test)]
mod tests {
    use super::short_matches;

    #[test]
    fn interface_names_match_in_full_and_short_form() {
        let full = "wasmplug:plugin/greeter@1.0.0";
        assert!(short_matches(full, full));
        assert!(short_matches(full, "wasmplug:plugin/greeter"));
        assert!(short_matches(full, "greeter"));
        assert!(!short_matches(full, "greet"));
        assert!(!short_matches(full, "lifecycle"));
    }
}
