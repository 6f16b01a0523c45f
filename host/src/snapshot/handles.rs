//! Standard streams that `init` left open, opened again in every instance
//! of its snapshot.
//!
//! A guest built for `wasip1` runs through WASI's preview1 adapter, which
//! opens stdin, stdout and stderr on its first WASI call and keeps their
//! handles (Go's runtime makes that call while it starts). A snapshot keeps
//! the handle numbers, which live in the adapter's memory, but not the
//! table they index, which belongs to each instance. So the snapshot gets
//! one export per open stream, `wasmplug-replay-h0`, `-h1`, …, each calling
//! the getter (`get-stdin`, `get-stdout` or `get-stderr`) that made the
//! handle numbered 1, 2, …; every instance of the snapshot calls them in
//! that order before anything else ([`replay`]), and checks it was handed
//! exactly those numbers. Each stream comes from the new instance's own
//! store: its policy's stdio, never the snapshot's.
//!
//! Why the numbers are known: an instance's handle table and the store's
//! resource table both reuse the slot freed last and otherwise take the
//! next one. When every handle the guest holds came from a host resource,
//! pushed to the store's table as it was handed to the guest and removed
//! as the guest dropped it, the two tables move in step, and the guest's
//! handle for a resource is its index in the store's table plus one. The
//! component must therefore make no handles of its own: it may lift, lower
//! and drop, but not define resources, use the async built-ins or nest
//! components that lift, lower or hold modules, whose handle tables are
//! their own ([`add_replay`] refuses it otherwise), and `init` receives no handles. The snapshot is taken
//! only when the streams are all the store holds and sit at indices 0 to
//! n-1 (`snapshot.rs`). A world's snapshot imports
//! (`World::add_to_snapshot_linker`) must hand the guest no resources.
//!
//! The exports are found by name in a compiled snapshot (one from the disk
//! cache too), so a component that exports such a name itself is refused
//! a snapshot ([`claims_replay`]): every one found is the host's.

use anyhow::{anyhow, bail, Context as _};
use wasm_encoder::{
    Alias, CanonicalFunctionSection, ComponentAliasSection, ComponentExportKind,
    ComponentExportSection, ComponentSection as _, ComponentTypeSection, ComponentValType,
    ExportKind, ExportSection, Function, FunctionSection, ImportSection, InstanceSection,
    Instruction, Module, ModuleArg, ModuleSection, PrimitiveValType, TypeSection,
};
use wasmparser::{
    CanonicalFunction, ComponentAlias, ComponentExternalKind, ComponentOuterAliasKind,
    ComponentTypeRef, Parser, Payload,
};
use wasmtime::component::{Component, ComponentExportIndex, Instance};
use wasmtime::AsContextMut;

/// A standard stream a guest can open, by the WASI getter that opens it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stdio {
    Stdin,
    Stdout,
    Stderr,
}

impl Stdio {
    /// The WASI interface exporting its getter, up to its version:
    /// `wasi:cli/stdin@`.
    pub(crate) fn interface(self) -> &'static str {
        match self {
            Stdio::Stdin => "wasi:cli/stdin@",
            Stdio::Stdout => "wasi:cli/stdout@",
            Stdio::Stderr => "wasi:cli/stderr@",
        }
    }

    pub(crate) fn getter(self) -> &'static str {
        match self {
            Stdio::Stdin => "get-stdin",
            Stdio::Stdout => "get-stdout",
            Stdio::Stderr => "get-stderr",
        }
    }
}

/// The prefix of the replay exports' names.
const REPLAY: &str = "wasmplug-replay-h";

/// The name of the export re-opening the handle numbered `k + 1`.
fn export_name(k: usize) -> String {
    format!("{REPLAY}{k}")
}

/// Whether `export` (a top-level function's name) is a replay export.
pub(crate) fn is_replay(export: &str) -> bool {
    export.starts_with(REPLAY)
}

/// The replay exports of a compiled component, in order; empty for one
/// that needs none.
pub(crate) fn exports(component: &Component) -> Vec<ComponentExportIndex> {
    (0..)
        .map_while(|k| component.get_export_index(None, export_name(k)))
        .collect()
}

/// Call `exports` in order on a new instance of a snapshot: its table
/// then holds the streams the snapshot's memory numbers 1, 2, ….
///
/// # Errors
/// A trap, or a handle other than the one the snapshot expects.
pub(crate) fn replay(
    mut store: impl AsContextMut,
    instance: &Instance,
    exports: &[ComponentExportIndex],
) -> wasmtime::Result<()> {
    for (k, export) in exports.iter().enumerate() {
        let open = instance.get_typed_func::<(), (u32,)>(&mut store, export)?;
        let (handle,) = open.call(&mut store, ())?;
        check(k, handle)?;
    }
    Ok(())
}

/// [`replay`] for an async world's store.
pub(crate) async fn replay_async<T: Send>(
    mut store: impl AsContextMut<Data = T>,
    instance: &Instance,
    exports: &[ComponentExportIndex],
) -> wasmtime::Result<()> {
    for (k, export) in exports.iter().enumerate() {
        let open = instance.get_typed_func::<(), (u32,)>(&mut store, export)?;
        let (handle,) = open.call_async(&mut store, ()).await?;
        check(k, handle)?;
    }
    Ok(())
}

fn check(k: usize, handle: u32) -> wasmtime::Result<()> {
    let expected = u32::try_from(k + 1).unwrap_or(u32::MAX);
    if handle != expected {
        wasmtime::bail!(
            "re-opening the standard streams its snapshot holds gave handle {handle} where \
             {expected} was expected"
        );
    }
    Ok(())
}

/// The sizes of a component's index spaces, counted over its top-level
/// sections: where appended items land.
#[derive(Default)]
struct Spaces {
    funcs: u32,
    core_funcs: u32,
    modules: u32,
    core_instances: u32,
    types: u32,
    instances: u32,
}

impl Spaces {
    fn add(&mut self, kind: ComponentExternalKind) {
        match kind {
            ComponentExternalKind::Func => self.funcs += 1,
            ComponentExternalKind::Module => self.modules += 1,
            ComponentExternalKind::Type => self.types += 1,
            ComponentExternalKind::Instance => self.instances += 1,
            ComponentExternalKind::Component | ComponentExternalKind::Value => {}
        }
    }
}

/// Whether `component` exports, at its top level, a name a replay export
/// would have.
///
/// # Errors
/// When it does not parse.
pub(crate) fn claims_replay(component: &[u8]) -> anyhow::Result<bool> {
    let mut depth = 0u32;
    for payload in Parser::new(0).parse_all(component) {
        match payload.context("parsing it")? {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth -= 1,
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    if is_replay(export?.name.name) {
                        return Ok(true);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(false)
}

/// `component` with the replay exports for `order`: the getter that made
/// the handle numbered 1, then 2, …
///
/// # Errors
/// When the component makes handles of its own (so the numbers cannot be
/// known), does not import a getter in `order`, or the result does not
/// validate.
pub(crate) fn add_replay(component: &[u8], order: &[Stdio]) -> anyhow::Result<Vec<u8>> {
    let mut spaces = Spaces::default();
    // The component instance each getter's interface was imported as.
    let mut imported: Vec<(Stdio, u32)> = Vec::new();
    let mut depth = 0u32;
    for payload in Parser::new(0).parse_all(component) {
        let payload = payload.context("parsing the snapshot")?;
        match payload {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth -= 1,
            // A nested component has handle tables of its own: one that
            // lowers or lifts (or holds modules that could) may hold a
            // stream the store's table counts, and the numbers no longer
            // match. wit-component's shims only re-export types and
            // functions.
            Payload::ComponentCanonicalSection(_) | Payload::ModuleSection { .. } if depth > 1 => {
                bail!(
                    "a component nested in it lifts, lowers or holds modules, with handle \
                     tables of its own, so the numbers of the streams its init left open \
                     cannot be known"
                )
            }
            _ if depth != 1 => {}
            Payload::ComponentImportSection(reader) => {
                for import in reader {
                    let import = import?;
                    match import.ty {
                        ComponentTypeRef::Module(_) => spaces.modules += 1,
                        ComponentTypeRef::Func(_) => spaces.funcs += 1,
                        ComponentTypeRef::Type(_) => spaces.types += 1,
                        ComponentTypeRef::Instance(_) => {
                            for stdio in [Stdio::Stdin, Stdio::Stdout, Stdio::Stderr] {
                                if import.name.name.starts_with(stdio.interface()) {
                                    imported.push((stdio, spaces.instances));
                                }
                            }
                            spaces.instances += 1;
                        }
                        ComponentTypeRef::Value(_) | ComponentTypeRef::Component(_) => {}
                    }
                }
            }
            Payload::ComponentExportSection(reader) => {
                for export in reader {
                    spaces.add(export?.kind);
                }
            }
            Payload::ComponentAliasSection(reader) => {
                for alias in reader {
                    match alias? {
                        ComponentAlias::InstanceExport { kind, .. } => spaces.add(kind),
                        ComponentAlias::CoreInstanceExport { kind, .. } => {
                            if matches!(
                                kind,
                                wasmparser::ExternalKind::Func
                                    | wasmparser::ExternalKind::FuncExact
                            ) {
                                spaces.core_funcs += 1;
                            }
                        }
                        ComponentAlias::Outer { kind, .. } => match kind {
                            ComponentOuterAliasKind::CoreModule => spaces.modules += 1,
                            ComponentOuterAliasKind::Type => spaces.types += 1,
                            ComponentOuterAliasKind::CoreType
                            | ComponentOuterAliasKind::Component => {}
                        },
                    }
                }
            }
            Payload::ComponentCanonicalSection(reader) => {
                for canon in reader {
                    match canon? {
                        CanonicalFunction::Lift { .. } => spaces.funcs += 1,
                        CanonicalFunction::Lower { .. }
                        | CanonicalFunction::ResourceDrop { .. } => spaces.core_funcs += 1,
                        other => bail!(
                            "it makes handles of its own ({}), so the numbers of the \
                             streams its init left open cannot be known",
                            format!("{other:?}")
                                .split([' ', '{', '('])
                                .next()
                                .unwrap_or("a canonical built-in")
                        ),
                    }
                }
            }
            Payload::ComponentTypeSection(reader) => spaces.types += reader.count(),
            Payload::ModuleSection { .. } => spaces.modules += 1,
            Payload::InstanceSection(reader) => spaces.core_instances += reader.count(),
            Payload::ComponentInstanceSection(reader) => spaces.instances += reader.count(),
            _ => {}
        }
    }

    // The getters used, once each, and the component instance of each.
    let mut getters: Vec<(Stdio, u32)> = Vec::new();
    for &stdio in order {
        if getters.iter().all(|(s, _)| *s != stdio) {
            let (_, instance) = imported
                .iter()
                .find(|(s, _)| *s == stdio)
                .ok_or_else(|| anyhow!("it does not import `{}`", stdio.interface()))?;
            getters.push((stdio, *instance));
        }
    }
    let position = |stdio: Stdio| getters.iter().position(|(s, _)| *s == stdio);

    let mut out = component.to_vec();
    // The getters as component functions, then lowered to core ones.
    let mut aliases = ComponentAliasSection::new();
    for (stdio, instance) in &getters {
        aliases.alias(Alias::InstanceExport {
            instance: *instance,
            kind: ComponentExportKind::Func,
            name: stdio.getter(),
        });
    }
    aliases.append_to_component(&mut out);
    let mut lowered = CanonicalFunctionSection::new();
    for j in 0..getters.len() {
        lowered.lower(spaces.funcs + j as u32, []);
    }
    lowered.append_to_component(&mut out);

    // A module calling them in order, one function per handle.
    let mut module = Module::new();
    let mut types = TypeSection::new();
    types.ty().function([], [wasm_encoder::ValType::I32]);
    module.section(&types);
    let mut imports = ImportSection::new();
    for j in 0..getters.len() {
        imports.import("", &format!("g{j}"), wasm_encoder::EntityType::Function(0));
    }
    module.section(&imports);
    let mut functions = FunctionSection::new();
    for _ in order {
        functions.function(0);
    }
    module.section(&functions);
    let mut exports = ExportSection::new();
    let calls = getters.len() as u32;
    for k in 0..order.len() {
        exports.export(&format!("h{k}"), ExportKind::Func, calls + k as u32);
    }
    module.section(&exports);
    let mut code = wasm_encoder::CodeSection::new();
    for &stdio in order {
        let mut f = Function::new([]);
        let j = position(stdio).expect("every getter in order was added");
        f.instruction(&Instruction::Call(j as u32));
        f.instruction(&Instruction::End);
        code.function(&f);
    }
    module.section(&code);
    ModuleSection(&module).append_to_component(&mut out);

    let mut instances = InstanceSection::new();
    instances.export_items((0..getters.len()).map(|j| {
        (
            format!("g{j}"),
            ExportKind::Func,
            spaces.core_funcs + j as u32,
        )
    }));
    instances.instantiate(
        spaces.modules,
        [("", ModuleArg::Instance(spaces.core_instances))],
    );
    instances.append_to_component(&mut out);

    // Its functions, lifted as `func() -> u32` and exported.
    let mut aliases = ComponentAliasSection::new();
    for k in 0..order.len() {
        aliases.alias(Alias::CoreInstanceExport {
            instance: spaces.core_instances + 1,
            kind: ExportKind::Func,
            name: &format!("h{k}"),
        });
    }
    aliases.append_to_component(&mut out);
    let mut types = ComponentTypeSection::new();
    types
        .function()
        .params(std::iter::empty::<(&str, ComponentValType)>())
        .result(Some(ComponentValType::Primitive(PrimitiveValType::U32)));
    types.append_to_component(&mut out);
    let mut lifted = CanonicalFunctionSection::new();
    let first_core = spaces.core_funcs + getters.len() as u32;
    for k in 0..order.len() {
        lifted.lift(first_core + k as u32, spaces.types, []);
    }
    lifted.append_to_component(&mut out);
    let mut exported = ComponentExportSection::new();
    let first_func = spaces.funcs + getters.len() as u32;
    for k in 0..order.len() {
        exported.export(
            export_name(k).as_str(),
            ComponentExportKind::Func,
            first_func + k as u32,
            None,
        );
    }
    exported.append_to_component(&mut out);

    wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
        .validate_all(&out)
        .context("the snapshot with its stream replay does not validate")?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::Engine;

    /// A component importing stdout and stderr as the adapter does, and
    /// defining nothing of its own.
    const GUEST: &str = r#"(component
        (import "wasi:io/streams@0.2.6" (instance $streams
            (export "output-stream" (type (sub resource)))))
        (alias export $streams "output-stream" (type $out))
        (import "wasi:cli/stdout@0.2.6" (instance $stdout
            (alias outer 1 $out (type $o))
            (export "output-stream" (type (eq $o)))
            (type $own (own $o))
            (export "get-stdout" (func (result $own)))))
        (import "wasi:cli/stderr@0.2.6" (instance $stderr
            (alias outer 1 $out (type $o))
            (export "output-stream" (type (eq $o)))
            (type $own (own $o))
            (export "get-stderr" (func (result $own)))))
    )"#;

    #[test]
    fn the_replay_exports_come_in_order_and_validate() {
        let guest = wat::parse_str(GUEST).unwrap();
        let out = add_replay(&guest, &[Stdio::Stderr, Stdio::Stdout, Stdio::Stderr]).unwrap();
        let engine = Engine::default();
        let component = Component::new(&engine, &out).unwrap();
        assert_eq!(exports(&component).len(), 3);
        assert!(exports(&Component::new(&engine, &guest).unwrap()).is_empty());
    }

    #[test]
    fn a_getter_not_imported_or_a_handle_made_inside_is_refused() {
        let guest = wat::parse_str(GUEST).unwrap();
        let err = add_replay(&guest, &[Stdio::Stdin]).unwrap_err();
        assert!(err.to_string().contains("wasi:cli/stdin"), "{err:#}");

        let own = wat::parse_str(
            r#"(component
                (type $r (resource (rep i32)))
                (core func (canon resource.new $r)))"#,
        )
        .unwrap();
        let err = add_replay(&own, &[]).unwrap_err();
        assert!(
            err.to_string().contains("handles of its own (ResourceNew"),
            "{err:#}"
        );

        // A nested component that lowers a function keeps what it gets in
        // a handle table of its own.
        let nested = wat::parse_str(
            r#"(component
                (import "wasi:cli/stdout@0.2.6" (instance $stdout
                    (export "output-stream" (type $o (sub resource)))
                    (type $own (own $o))
                    (export "get-stdout" (func (result $own)))))
                (component $inner
                    (import "get" (func $get (result u32)))
                    (core func (canon lower (func $get))))
            )"#,
        )
        .unwrap();
        let err = add_replay(&nested, &[Stdio::Stdout]).unwrap_err();
        assert!(err.to_string().contains("nested in it"), "{err:#}");
    }

    #[test]
    fn a_component_exporting_a_replay_name_itself_is_noticed() {
        let claims = wat::parse_str(
            r#"(component
                (core module $m (func (export "f") (result i32) i32.const 1))
                (core instance $i (instantiate $m))
                (func $f (result u32) (canon lift (core func $i "f")))
                (export "wasmplug-replay-h0" (func $f)))"#,
        )
        .unwrap();
        assert!(claims_replay(&claims).unwrap());
        assert!(!claims_replay(&wat::parse_str(GUEST).unwrap()).unwrap());
    }
}
