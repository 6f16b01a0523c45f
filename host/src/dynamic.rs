//! The dynamic world: for hosts that learn a plugin's interface at run time.
//!
//! [`Dynamic`] accepts any component whose imports the host can satisfy
//! (WASI, and the reference world's `host` interface) and requires no
//! particular exports. Calls go through [`Instance::call_dynamic`] with
//! `Val`s, or [`Instance::call_wave`] with WAVE text, the `wasmplug` CLI's
//! path. If the component exports the reference `lifecycle` interface, its
//! identity is read and its `init` is run exactly as for a typed world.
//!
//!
//! The dynamic call path itself ([`Instance::call_dynamic`],
//! [`Instance::call_wave`], [`Instance::export_type`]) works on an instance
//! of any world, and lives here too: finding an export by name, checking
//! the arguments against its type before anything runs, and writing the
//! results as WAVE.

use std::panic::{catch_unwind, AssertUnwindSafe};

use wasmtime::component::types::{ComponentFunc, Type};
use wasmtime::component::{Func, Instance as RawInstance, InstancePre, Linker, ResourceAny, Val};
use wasmtime::Store;

use crate::error::{Error, Result};
use crate::reference::{self, WitIdentity, LIFECYCLE};
use crate::{signature, Identity, Instance, State, World};

/// A world with no required exports. See the module docs.
pub struct Dynamic {
    instance: RawInstance,
}

impl Dynamic {
    /// The raw component instance, for lookups of its exports.
    pub fn instance(&self) -> &RawInstance {
        &self.instance
    }

    fn lifecycle_func<P, R>(
        &self,
        store: &mut Store<State<()>>,
        name: &str,
    ) -> wasmtime::Result<Option<wasmtime::component::TypedFunc<P, R>>>
    where
        P: wasmtime::component::ComponentNamedList + wasmtime::component::Lower,
        R: wasmtime::component::ComponentNamedList + wasmtime::component::Lift,
    {
        let Some(iface) = self.instance.get_export_index(&mut *store, None, LIFECYCLE) else {
            return Ok(None);
        };
        let Some(func) = self
            .instance
            .get_export_index(&mut *store, Some(&iface), name)
        else {
            return Ok(None);
        };
        self.instance.get_typed_func::<P, R>(store, &func).map(Some)
    }
}

impl World for Dynamic {
    type Data = ();
    type Indices = ();

    fn add_to_linker(linker: &mut Linker<State<()>>) -> wasmtime::Result<()> {
        reference::add_host_to_linker(linker)
    }

    /// The reference world's `log`; not its `config`, whose answers are
    /// the embedder's settings.
    fn add_to_snapshot_linker(linker: &mut Linker<State<()>>) -> wasmtime::Result<()> {
        reference::add_log_to_linker(linker)
    }

    fn indices(_pre: &InstancePre<State<()>>) -> wasmtime::Result<()> {
        Ok(())
    }

    fn load(_: &(), _: &mut Store<State<()>>, instance: &RawInstance) -> wasmtime::Result<Self> {
        Ok(Dynamic {
            instance: *instance,
        })
    }

    fn identity(&self, store: &mut Store<State<()>>) -> wasmtime::Result<Option<Identity>> {
        let Some(func) = self.lifecycle_func::<(), (WitIdentity,)>(store, "identity")? else {
            return Ok(None);
        };
        let (id,) = func.call(&mut *store, ())?;
        Identity::parse(&id.name, &id.version)
            .map(Some)
            .map_err(wasmtime::Error::from_anyhow)
    }

    fn init(&self, store: &mut Store<State<()>>) -> wasmtime::Result<Result<(), String>> {
        match self.lifecycle_func::<(), (Result<(), String>,)>(store, "init")? {
            Some(func) => Ok(func.call(store, ())?.0),
            None => Ok(Ok(())),
        }
    }
}

/// The dynamic call path, for any world: calls by export name with `Val`s
/// or WAVE text.
impl<W: World> Instance<W> {
    /// Call an export by name with dynamic values: the path for hosts that
    /// learn a plugin's interface at run time, and for the CLI.
    ///
    /// `export` is `function` for a top-level export, or
    /// `interface#function`, where `interface` is the full name
    /// (`wasmplug:plugin/greeter@1.0.0`) or its short form (`greeter`). A
    /// bare `function` also finds a function in an exported interface when
    /// exactly one interface has it. `greeter.count` is the same as
    /// `greeter#count`.
    ///
    /// Arguments are checked against the export's parameter types before
    /// anything runs: a mismatch is an [`Error::BadCall`] and leaves the
    /// instance healthy. Any failure after that is the guest's, including an
    /// answer that breaks the canonical ABI (a string pointer out of bounds,
    /// invalid UTF-8): an [`Error::Trap`] that poisons the instance. Resource
    /// handles among the results are the caller's to drop
    /// (`ResourceAny::resource_drop`).
    ///
    /// # Errors
    /// [`Error::BadCall`] when no export has that name or the arguments do not
    /// fit its type (nothing ran); [`Error::Trap`] when the guest traps, runs
    /// past its deadline or a cap, or answers outside the canonical ABI (the
    /// instance is poisoned).
    pub fn call_dynamic(&mut self, export: &str, args: &[Val]) -> Result<Vec<Val>> {
        crate::telemetry::export(export);
        let func = self.find_func(export)?;
        self.invoke(export, func, args)
    }

    /// Call an export written as a WAVE function call, e.g.
    /// `hello({name: "Zoë", age: 30})` or `greeter.count()`, and get its
    /// results as WAVE text. Arguments are checked against the export's
    /// parameter types; a syntax error points at its column.
    ///
    /// A result WAVE cannot write (a resource, a future, a stream, a map) is
    /// an [`Error::BadCall`] naming the export and its result type: the call
    /// ran, its result is dropped (resources handed back to the guest, so
    /// the instance stays consistent and usable). Use
    /// [`call_dynamic`](Self::call_dynamic) for such exports.
    ///
    /// # Errors
    /// As [`call_dynamic`](Self::call_dynamic), and [`Error::BadCall`] for WAVE
    /// that does not parse (pointing at the column) or a result WAVE cannot
    /// write.
    pub fn call_wave(&mut self, call: &str) -> Result<Vec<String>> {
        let parsed = wasm_wave::untyped::UntypedFuncCall::parse(call)
            .map_err(|e| self.bad_call(signature::wave_error(call, &e)))?;
        let export = parsed.name().to_string();
        crate::telemetry::export(&export);
        let func = self.find_func(&export)?;
        let params: Vec<Type> = func.ty(&self.store).params().map(|(_, ty)| ty).collect();
        let args: Vec<Val> = parsed.to_wasm_params::<Val>(params.iter()).map_err(|e| {
            self.bad_call(format!(
                "arguments of `{export}`: {}",
                signature::wave_error(call, &e)
            ))
        })?;
        let results = self.invoke(&export, func, &args)?;
        if let Some(what) = results.iter().find_map(unwritable_in_wave) {
            // The guest ran and answered; only the answer cannot be shown.
            // Give back what it handed over so its handle table stays
            // consistent: the instance stays usable.
            let types: Vec<String> = func
                .ty(&self.store)
                .results()
                .map(|ty| signature::value(&ty))
                .collect();
            self.drop_resources(&results)?;
            return Err(self.bad_call(format!(
                "`{export}` returned {what} (result type `{}`), which is unsupported in \
                 WAVE; the call ran and its result was dropped; call it through \
                 `call_dynamic` to get the value",
                types.join(", ")
            )));
        }
        results
            .iter()
            .map(|val| {
                // wasm_wave's writer panics on a value kind it cannot write
                // instead of returning an error. `unwritable_in_wave` has
                // refused every such kind it knows of; this keeps one it does
                // not (a new kind, a writer bug) an error of this call rather
                // than a panic that takes the host down.
                let written = catch_unwind(AssertUnwindSafe(|| wasm_wave::to_string(val)));
                let why = match written {
                    Ok(Ok(text)) => return Ok(text),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "a value WAVE does not support".to_string(),
                };
                Err(self.bad_call(format!("writing a result of `{export}` as WAVE: {why}")))
            })
            .collect()
    }

    /// Drop the resources among `results` (wasmtime requires it of every
    /// handle), the guest's destructors running as they would for any drop.
    /// A trap in one poisons the instance like any other.
    fn drop_resources(&mut self, results: &[Val]) -> Result<()> {
        let mut handles = Vec::new();
        for val in results {
            resources(val, &mut handles);
        }
        for resource in handles {
            if let Err(err) = resource.resource_drop(&mut self.store) {
                return Err(self.crashed(err));
            }
        }
        Ok(())
    }

    /// The type of an export, found as [`call_dynamic`](Self::call_dynamic)
    /// finds it.
    ///
    /// # Errors
    /// [`Error::BadCall`] when no export has that name.
    pub fn export_type(&mut self, export: &str) -> Result<ComponentFunc> {
        let func = self.find_func(export)?;
        Ok(func.ty(&self.store))
    }

    fn invoke(&mut self, export: &str, func: Func, args: &[Val]) -> Result<Vec<Val>> {
        if W::ASYNC {
            return Err(self.bad_call(format!(
                "calling `{export}`: dynamic calls need a world with blocking bindings; \
                 this one's are async (World::ASYNC)"
            )));
        }
        self.enter()?;
        let ty = func.ty(&self.store);
        // Every argument is checked against the export's types here, before
        // anything runs: a wrong call is the caller's, and leaves the
        // instance healthy. (wasmtime checks too, but while it lowers the
        // arguments, after it may already have called into the guest to
        // allocate room for an earlier one.)
        check_args(&ty, args).map_err(|why| self.bad_call(format!("calling `{export}`: {why}")))?;
        let mut out = vec![Val::Bool(false); ty.results().len()];
        match func.call(&mut self.store, args, &mut out) {
            Ok(()) => Ok(out),
            // The call was well-formed, so whatever failed is the guest's
            // doing: a trap, a deadline, a cap, or an answer that breaks the
            // canonical ABI (a string pointer out of bounds, invalid UTF-8,
            // a bad discriminant). Its state is not to be trusted again.
            Err(err) => Err(self.crashed(err)),
        }
    }

    fn find_func(&mut self, export: &str) -> Result<Func> {
        let matches: Vec<String> = self
            .plugin
            .export_names()
            .iter()
            .filter(|name| signature::names(name, export))
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
}

/// Check dynamic arguments against an export's parameter types, the way
/// wasmtime's lowering would, but before anything runs: counts, kinds, record
/// fields in order, variant cases and their payloads, enum and flags names,
/// list and tuple elements, option and result payloads, resource types.
fn check_args(ty: &ComponentFunc, args: &[Val]) -> std::result::Result<(), String> {
    if ty.async_() {
        return Err("it is an async export; wasmplug calls exports synchronously".into());
    }
    let params: Vec<(&str, Type)> = ty.params().collect();
    if params.len() != args.len() {
        return Err(format!(
            "expected {} argument(s), got {}; its type is `{}`",
            params.len(),
            args.len(),
            signature::func(ty)
        ));
    }
    for ((name, ty), arg) in params.iter().zip(args) {
        check_val(ty, arg).map_err(|why| format!("argument `{name}`: {why}"))?;
    }
    Ok(())
}

/// Whether `val` is a value of type `ty`, and if not, where and why.
fn check_val(ty: &Type, val: &Val) -> std::result::Result<(), String> {
    let payload = |ty: Option<Type>, val: &Option<Box<Val>>, case: &str| match (ty, val) {
        (Some(ty), Some(val)) => check_val(&ty, val).map_err(|why| format!("{case}: {why}")),
        (None, None) => Ok(()),
        (Some(ty), None) => Err(format!(
            "{case} needs a payload of type `{}`",
            signature::value(&ty)
        )),
        (None, Some(_)) => Err(format!("{case} takes no payload")),
    };
    let elements = |ty: Type, items: &[Val]| {
        items.iter().enumerate().try_for_each(|(i, item)| {
            check_val(&ty, item).map_err(|why| format!("element {i}: {why}"))
        })
    };
    match (ty, val) {
        (Type::Bool, Val::Bool(_))
        | (Type::S8, Val::S8(_))
        | (Type::U8, Val::U8(_))
        | (Type::S16, Val::S16(_))
        | (Type::U16, Val::U16(_))
        | (Type::S32, Val::S32(_))
        | (Type::U32, Val::U32(_))
        | (Type::S64, Val::S64(_))
        | (Type::U64, Val::U64(_))
        | (Type::Float32, Val::Float32(_))
        | (Type::Float64, Val::Float64(_))
        | (Type::Char, Val::Char(_))
        | (Type::String, Val::String(_))
        | (Type::Future(_), Val::Future(_))
        | (Type::Stream(_), Val::Stream(_))
        | (Type::ErrorContext, Val::ErrorContext(_)) => Ok(()),
        (Type::List(list), Val::List(items)) => elements(list.ty(), items),
        (Type::FixedLengthList(list), Val::FixedLengthList(items)) => {
            if usize::try_from(list.len()).ok() != Some(items.len()) {
                return Err(format!(
                    "expected {} elements, got {}",
                    list.len(),
                    items.len()
                ));
            }
            elements(list.ty(), items)
        }
        (Type::Map(map), Val::Map(pairs)) => {
            let (key, value) = (map.key(), map.value());
            pairs.iter().enumerate().try_for_each(|(i, (k, v))| {
                check_val(&key, k).map_err(|why| format!("key {i}: {why}"))?;
                check_val(&value, v).map_err(|why| format!("value {i}: {why}"))
            })
        }
        (Type::Record(record), Val::Record(fields)) => {
            let want: Vec<_> = record.fields().collect();
            if want.len() != fields.len() {
                return Err(format!(
                    "expected {} fields, got {}: `{}`",
                    want.len(),
                    fields.len(),
                    signature::value(ty)
                ));
            }
            for (field, (name, value)) in want.iter().zip(fields) {
                if field.name != name {
                    return Err(format!("expected field `{}`, got `{name}`", field.name));
                }
                check_val(&field.ty, value).map_err(|why| format!("field `{name}`: {why}"))?;
            }
            Ok(())
        }
        (Type::Tuple(tuple), Val::Tuple(items)) => {
            let want: Vec<Type> = tuple.types().collect();
            if want.len() != items.len() {
                return Err(format!(
                    "expected a tuple of {}, got {}",
                    want.len(),
                    items.len()
                ));
            }
            want.iter()
                .zip(items)
                .enumerate()
                .try_for_each(|(i, (ty, item))| {
                    check_val(ty, item).map_err(|why| format!("element {i}: {why}"))
                })
        }
        (Type::Variant(variant), Val::Variant(name, value)) => {
            let Some(case) = variant.cases().find(|case| case.name == name) else {
                return Err(format!("no case `{name}` in `{}`", signature::value(ty)));
            };
            payload(case.ty, value, &format!("case `{name}`"))
        }
        (Type::Enum(e), Val::Enum(name)) => {
            if e.names().any(|n| n == name) {
                Ok(())
            } else {
                Err(format!("no case `{name}` in `{}`", signature::value(ty)))
            }
        }
        (Type::Flags(f), Val::Flags(names)) => {
            match names.iter().find(|n| !f.names().any(|m| m == *n)) {
                Some(name) => Err(format!("no flag `{name}` in `{}`", signature::value(ty))),
                None => Ok(()),
            }
        }
        (Type::Option(option), Val::Option(value)) => match value {
            Some(value) => check_val(&option.ty(), value).map_err(|why| format!("some: {why}")),
            None => Ok(()),
        },
        (Type::Result(result), Val::Result(value)) => match value {
            Ok(value) => payload(result.ok(), value, "ok"),
            Err(value) => payload(result.err(), value, "err"),
        },
        (Type::Own(want) | Type::Borrow(want), Val::Resource(resource)) => {
            if resource.ty() == *want {
                Ok(())
            } else {
                Err("a resource of another type".into())
            }
        }
        _ => Err(format!(
            "expected `{}`, got {}",
            signature::value(ty),
            kind(val)
        )),
    }
}

/// What kind of value `val` is, for error messages.
fn kind(val: &Val) -> &'static str {
    match val {
        Val::Bool(_) => "a bool",
        Val::S8(_) => "an s8",
        Val::U8(_) => "a u8",
        Val::S16(_) => "an s16",
        Val::U16(_) => "a u16",
        Val::S32(_) => "an s32",
        Val::U32(_) => "a u32",
        Val::S64(_) => "an s64",
        Val::U64(_) => "a u64",
        Val::Float32(_) => "an f32",
        Val::Float64(_) => "an f64",
        Val::Char(_) => "a char",
        Val::String(_) => "a string",
        Val::List(_) => "a list",
        Val::FixedLengthList(_) => "a fixed-length list",
        Val::Map(_) => "a map",
        Val::Record(_) => "a record",
        Val::Tuple(_) => "a tuple",
        Val::Variant(..) => "a variant",
        Val::Enum(_) => "an enum",
        Val::Option(_) => "an option",
        Val::Result(_) => "a result",
        Val::Flags(_) => "flags",
        Val::Resource(_) => "a resource",
        Val::Future(_) => "a future",
        Val::Stream(_) => "a stream",
        Val::ErrorContext(_) => "an error-context",
    }
}

/// The first value inside `val` that WAVE cannot write, by kind: resources,
/// futures, streams, error contexts and maps, at any depth. Every kind is
/// named, so a kind a new wasmtime adds has to be decided here.
fn unwritable_in_wave(val: &Val) -> Option<&'static str> {
    match val {
        Val::Resource(_) | Val::Future(_) | Val::Stream(_) | Val::ErrorContext(_) | Val::Map(_) => {
            Some(kind(val))
        }
        Val::List(items) | Val::Tuple(items) | Val::FixedLengthList(items) => {
            items.iter().find_map(unwritable_in_wave)
        }
        Val::Record(fields) => fields.iter().find_map(|(_, v)| unwritable_in_wave(v)),
        Val::Variant(_, Some(v))
        | Val::Option(Some(v))
        | Val::Result(Ok(Some(v)))
        | Val::Result(Err(Some(v))) => unwritable_in_wave(v),
        Val::Variant(_, None)
        | Val::Option(None)
        | Val::Result(Ok(None))
        | Val::Result(Err(None))
        | Val::Bool(_)
        | Val::S8(_)
        | Val::U8(_)
        | Val::S16(_)
        | Val::U16(_)
        | Val::S32(_)
        | Val::U32(_)
        | Val::S64(_)
        | Val::U64(_)
        | Val::Float32(_)
        | Val::Float64(_)
        | Val::Char(_)
        | Val::String(_)
        | Val::Enum(_)
        | Val::Flags(_) => None,
    }
}

/// Every resource handle inside `val`, at any depth.
fn resources(val: &Val, out: &mut Vec<ResourceAny>) {
    match val {
        Val::Resource(resource) => out.push(*resource),
        Val::List(items) | Val::Tuple(items) | Val::FixedLengthList(items) => {
            items.iter().for_each(|item| resources(item, out))
        }
        Val::Map(pairs) => pairs.iter().for_each(|(k, v)| {
            resources(k, out);
            resources(v, out);
        }),
        Val::Record(fields) => fields.iter().for_each(|(_, v)| resources(v, out)),
        Val::Variant(_, Some(v))
        | Val::Option(Some(v))
        | Val::Result(Ok(Some(v)))
        | Val::Result(Err(Some(v))) => resources(v, out),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use crate::signature::names;

    #[test]
    fn function_names_match_in_full_and_short_form() {
        let full = "wasmplug:plugin/greeter@1.0.0#count";
        assert!(names(full, full));
        assert!(names(full, "wasmplug:plugin/greeter#count"));
        assert!(names(full, "greeter#count"));
        assert!(names(full, "greeter.count"));
        assert!(names(full, "count"));
        assert!(!names(full, "greet.count"));
        assert!(!names(full, "lifecycle.count"));
        assert!(!names(full, "greeter.counts"));
        // A full name's version has dots: only `#` separates it.
        assert!(!names(full, "wasmplug:plugin/greeter@1.0.0.count"));
        assert!(names("count", "count"));
        assert!(!names("count", "greeter.count"));
    }
}
