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
use wasmtime::component::types::{ComponentFunc, Type};
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
    /// Each call's deadline in epoch ticks, computed once (from the policy,
    /// or from [`set_deadline`](Self::set_deadline)), not on every call.
    deadline_ticks: u64,
}

impl<W: World> Instance<W> {
    pub(crate) fn new(
        plugin: Plugin<W>,
        store: Store<State<W::Data>>,
        instance: wasmtime::component::Instance,
        bindings: W,
    ) -> Self {
        plugin.instance_started();
        let inner = &plugin.inner;
        let deadline_ticks = inner.runtime.deadline_ticks(inner.policy.deadline_value());
        Instance {
            plugin,
            store,
            instance,
            bindings,
            poisoned: false,
            deadline_ticks,
        }
    }

    /// Call the guest through the world's typed bindings.
    ///
    /// `f` gets the `bindgen!` struct and the store; whatever it returns is
    /// the call's result. A trap, deadline or memory cap inside becomes
    /// [`Error::Trap`] and poisons this instance.
    ///
    /// ```no_run
    /// # use wasmplug::reference::GreeterPlugin;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let runtime = wasmplug::Runtime::<GreeterPlugin>::new()?;
    /// let mut instance = runtime.load("hello.wasm")?.instantiate()?;
    /// let greeting = instance.call(|plugin, store| {
    ///     plugin.wasmplug_plugin_greeter().call_welcome(store, "Zoë")
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn call<R>(
        &mut self,
        f: impl FnOnce(&W, &mut Store<State<W::Data>>) -> wasmtime::Result<R>,
    ) -> Result<R> {
        self.enter()?;
        match f(&self.bindings, &mut self.store) {
            Ok(value) => Ok(value),
            Err(err) => Err(self.crashed(err)),
        }
    }

    /// Mark the instance poisoned and classify the error, with the resource
    /// limit the guest hit just before, if any.
    fn crashed(&mut self, err: wasmtime::Error) -> Error {
        self.poisoned = true;
        let limit = self.store.data_mut().limits.hit.take();
        Error::from_call(self.plugin.plugin_ref(), err, limit)
    }

    /// Use `deadline` for this instance's calls from now on, instead of the
    /// policy's (`None`: no deadline).
    pub fn set_deadline(&mut self, deadline: Option<std::time::Duration>) {
        self.deadline_ticks = self.plugin.inner.runtime.deadline_ticks(deadline);
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
        self.invoke(export, func, args)
    }

    /// Call an export written as a WAVE function call, e.g.
    /// `hello({name: "Zoë", age: 30})` or `greeter.count()`, and get its
    /// results as WAVE text. Arguments are checked against the export's
    /// parameter types; a syntax error points at its column.
    pub fn call_wave(&mut self, call: &str) -> Result<Vec<String>> {
        let parsed = wasm_wave::untyped::UntypedFuncCall::parse(call)
            .map_err(|e| self.bad_call(wave_error(call, &e)))?;
        let export = parsed.name().to_string();
        let func = self.find_func(&export)?;
        let params: Vec<Type> = func.ty(&self.store).params().map(|(_, ty)| ty).collect();
        let args: Vec<Val> = parsed.to_wasm_params::<Val>(params.iter()).map_err(|e| {
            self.bad_call(format!("arguments of `{export}`: {}", wave_error(call, &e)))
        })?;
        let results = self.invoke(&export, func, &args)?;
        results
            .iter()
            .map(|val| {
                wasm_wave::to_string(val).map_err(|e| {
                    self.bad_call(format!("writing a result of `{export}` as WAVE: {e}"))
                })
            })
            .collect()
    }

    /// The type of an export, found as [`call_dynamic`](Self::call_dynamic)
    /// finds it.
    pub fn export_type(&mut self, export: &str) -> Result<ComponentFunc> {
        let func = self.find_func(export)?;
        Ok(func.ty(&self.store))
    }

    fn invoke(&mut self, export: &str, func: Func, args: &[Val]) -> Result<Vec<Val>> {
        self.enter()?;
        let results = func.ty(&self.store).results().len();
        let mut out = vec![Val::Bool(false); results];
        match func.call(&mut self.store, args, &mut out) {
            Ok(()) => Ok(out),
            Err(err) => {
                // A type error in the arguments is caught before the guest
                // runs, and leaves the instance healthy.
                if err.downcast_ref::<wasmtime::Trap>().is_none() && !entered_guest(&err) {
                    return Err(self.bad_call(format!("calling `{export}`: {err:#}")));
                }
                Err(self.crashed(err))
            }
        }
    }

    /// The raw component instance and its store, for lookups by name.
    pub(crate) fn raw_parts(
        &mut self,
    ) -> (&wasmtime::component::Instance, &mut Store<State<W::Data>>) {
        (&self.instance, &mut self.store)
    }

    pub(crate) fn bad_call(&self, message: String) -> Error {
        Error::BadCall {
            plugin: self.plugin.plugin_ref(),
            message,
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
            .export_names()
            .iter()
            .filter(|name| match name.rsplit_once('#') {
                Some((i, f)) => {
                    f == func && iface.as_deref().is_none_or(|want| short_matches(i, want))
                }
                None => iface.is_none() && **name == func,
            })
            .cloned()
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
        self.bad_call(format!(
            "cannot call `{export}`: {why}; it exports: {}",
            self.plugin.export_names().join(", ")
        ))
    }

    /// Refuse a poisoned instance; arm the call's deadline, and its fuel
    /// when the runtime meters fuel.
    fn enter(&mut self) -> Result<()> {
        if self.poisoned {
            return Err(Error::Trap {
                plugin: self.plugin.plugin_ref(),
                trap: None,
                limit: None,
                cause: anyhow!(
                    "this instance trapped earlier and was discarded; instantiate a new one"
                ),
            });
        }
        let inner = &self.plugin.inner;
        inner.runtime.arm_ticks(
            &mut self.store,
            self.deadline_ticks,
            inner.policy.fuel_value(),
        );
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

    /// The linear memory this instance holds, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.store.data().limits.memory_bytes
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

/// Whether a dynamic call's error came from inside the guest. wasmtime checks
/// argument types before entering; those errors carry no wasm backtrace.
fn entered_guest(err: &wasmtime::Error) -> bool {
    err.downcast_ref::<wasmtime::WasmBacktrace>().is_some()
}

/// A WAVE parse error, pointing at its column under the text.
fn wave_error(text: &str, err: &wasm_wave::parser::ParserError) -> String {
    let start = err.span().start.min(text.len());
    let column = text[..start].chars().count() + 1;
    let detail = err.detail().map(|d| format!(": {d}")).unwrap_or_default();
    format!(
        "bad WAVE at column {column}: {}{detail}\n    {text}\n    {}^",
        err.kind(),
        " ".repeat(column - 1)
    )
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
