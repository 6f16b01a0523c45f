//! `wasmplug test PLUGIN CASES`: a plugin author's test harness, for a
//! plugin written in any language, without writing a host.
//!
//! A case file (TOML) lists calls written in WAVE with the answers they
//! should give, and the answers of the host imports the plugin calls:
//!
//! ```toml
//! [mocks]                          # every case's import answers (WAVE)
//! "config.get" = 'some("Hej")'
//!
//! [[case]]
//! name = "greets with the setting"
//! call = 'welcome("Ann")'
//! expect = '"Hej, Ann!"'
//! imports = ['config.get("greeting")']   # exactly these import calls, in order
//!
//! [[case]]
//! call = 'welcome("Ann")'
//! mocks = { "config.get" = 'none' }    # this case only
//! expect = '"Welcome, Ann!"'
//! ```
//!
//! Every import outside WASI is answered from the case file: the harness
//! defines each one in the linker ([`RuntimeBuilder::link`]), records the
//! arguments of every call, and answers with the mock's value. An import
//! that returns nothing needs no mock; one that returns something and has
//! none fails the call, naming the import and its type. WASI is the real
//! one, sandboxed as for `call` (nothing granted unless asked).
//!
//! Cases run in order on one instance (a plugin's state carries from case
//! to case, as it would in a host), after `init` (whose import calls the
//! mocks answer too, and which belong to no case). A case that fails with a
//! trap or error leaves the instance unusable, so the next case gets a
//! fresh one; `fresh = true` asks for one. Everything in the file (WAVE
//! syntax, types of mocks and expected values, import names) is checked
//! against the plugin before the first call: a typo is an error naming the
//! case, not a failing run.
//!
//! [`RuntimeBuilder::link`]: wasmplug::runtime::RuntimeBuilder::link

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{bail, Context as _};
use serde::Deserialize;
use wasmplug::wasmtime::component::types::{ComponentFunc, Type};
use wasmplug::wasmtime::component::{Linker, ResourceType, Val};
use wasmplug::{signature, Dynamic, Instance, Plugin, Policy, State};

use crate::flags::Cache;

/// A case file, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    /// Import answers for every case.
    #[serde(default)]
    mocks: BTreeMap<String, String>,
    #[serde(default, rename = "case")]
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Case {
    /// Shown in the report; the call when absent.
    name: Option<String>,
    /// The export and its arguments in WAVE: `welcome("Ann")`.
    call: String,
    /// The result in WAVE; absent: any result (but no error).
    expect: Option<String>,
    /// The call must fail with an error whose message contains this.
    expect_error: Option<String>,
    /// The import calls the case must make, in order, in WAVE; absent: not
    /// checked.
    imports: Option<Vec<String>>,
    /// Import answers for this case, over the file's.
    #[serde(default)]
    mocks: BTreeMap<String, String>,
    /// Run on a new instance (with its own `init`).
    #[serde(default)]
    fresh: bool,
}

/// One import function of the plugin, as wasmtime names and types it.
struct Import {
    /// `interface#function`, or `function` at the top level.
    full: String,
    ty: ComponentFunc,
}

/// What the plugin's imports see: the answers of the running case, and
/// the calls made so far.
#[derive(Default)]
struct Switchboard {
    answers: HashMap<String, Val>,
    /// Mocks as written, read while the plugin loads: its first `init`
    /// runs before the imports' types are known to parse them against.
    unparsed: BTreeMap<String, String>,
    /// The first [`MAX_RECORDED`] calls, with their arguments.
    made: Vec<(String, Vec<Val>)>,
    /// Calls beyond those.
    unrecorded: usize,
}

/// Import calls recorded per case: a plugin that calls an import in a loop
/// costs the harness a count, not its memory.
const MAX_RECORDED: usize = 10_000;

/// A value or list of calls is shown up to this many characters.
const MAX_SHOWN: usize = 1_000;

type Shared = Arc<Mutex<Switchboard>>;

/// A case, checked against the plugin and ready to run.
struct Ready {
    name: String,
    call: String,
    export: String,
    args: Vec<Val>,
    expect: Option<(String, Vec<Val>)>,
    expect_error: Option<String>,
    imports: Option<Vec<(String, Vec<Val>)>>,
    answers: HashMap<String, Val>,
    fresh: bool,
}

pub fn run(cache: &Cache, plugin: &Path, cases: &Path, policy: Policy) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(cases).with_context(|| format!("reading {}", cases.display()))?;
    let file: CaseFile =
        toml::from_str(&text).with_context(|| format!("{} is not a case file", cases.display()))?;
    if file.cases.is_empty() {
        bail!(
            "{} has no cases: add `[[case]]` tables with a `call`",
            cases.display()
        );
    }
    let bytes = std::fs::read(plugin).with_context(|| format!("reading {}", plugin.display()))?;
    let names = import_names(&bytes)
        .with_context(|| format!("{} is not a WebAssembly component", plugin.display()))?;

    // The load runs `init` once: the file's mocks and the first case's answer
    // the imports it calls.
    let board = Shared::default();
    {
        let mut unparsed = file.mocks.clone();
        unparsed.extend(file.cases[0].mocks.clone());
        board
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unparsed = unparsed;
    }
    let runtime = cache.runtime_with::<Dynamic>(policy, |builder| {
        let board = board.clone();
        let names = names.clone();
        builder.link(move |linker| define_mocks(linker, &names, &board))
    })?;
    let loaded = runtime.load(plugin)?;
    std::mem::take(
        &mut board
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unparsed,
    );
    let engine = runtime.engine();
    let imports: Vec<Import> =
        signature::funcs(engine, loaded.component().component_type().imports(engine))
            .into_iter()
            .filter(|(full, _)| !is_wasi(full))
            .map(|(full, ty)| Import { full, ty })
            .collect();

    // Everything checked before anything runs; one instance to read the
    // export types from (and to run the first cases on).
    let mut instance = Some(instantiate(&loaded, &board)?);
    let answers = mock_answers(&file.mocks, &imports)
        .with_context(|| format!("{}: [mocks]", cases.display()))?;
    let mut ready = Vec::new();
    for (i, case) in file.cases.iter().enumerate() {
        let name = case.name.clone().unwrap_or_else(|| case.call.clone());
        let checked = prepare(case, &name, &answers, &imports, instance.as_mut().unwrap())
            .with_context(|| format!("{}: case {} ({name})", cases.display(), i + 1))?;
        ready.push(checked);
    }

    let (mut passed, mut failed) = (0, 0);
    for case in &ready {
        let outcome = run_case(case, &loaded, &board, &mut instance);
        match outcome {
            Ok(()) => {
                passed += 1;
                outln!("ok    {}", case.name);
            }
            Err(why) => {
                failed += 1;
                outln!("FAIL  {}", case.name);
                if case.name != case.call {
                    outln!("      call:     {}", case.call);
                }
                for line in why.lines() {
                    outln!("      {line}");
                }
            }
        }
    }
    outln!(
        "{passed} passed, {failed} failed ({} in {})",
        loaded.label(),
        plugin.display()
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn is_wasi(full: &str) -> bool {
    full.starts_with("wasi:")
}

/// The plugin's imports outside WASI, read from its bytes without
/// compiling them: `(interface, functions, resources)`, the interface
/// `None` for the top level.
type Names = Vec<(Option<String>, Vec<String>, Vec<String>)>;

fn import_names(bytes: &[u8]) -> anyhow::Result<Names> {
    use wit_component::DecodedWasm;
    use wit_parser::{TypeDefKind, WorldItem};
    // wasmtime reads the text format too, so the harness does.
    let bytes = wat::parse_bytes(bytes)?;
    let DecodedWasm::Component(resolve, world) = wit_component::decode(&bytes)? else {
        bail!("it is a WIT package, not a component");
    };
    let mut top = (None, Vec::new(), Vec::new());
    let mut names = Vec::new();
    for (key, item) in &resolve.worlds[world].imports {
        match item {
            WorldItem::Interface { id, .. } => {
                let name = resolve.name_world_key(key);
                if is_wasi(&name) {
                    continue;
                }
                let iface = &resolve.interfaces[*id];
                let funcs = iface.functions.keys().cloned().collect();
                let resources = iface
                    .types
                    .iter()
                    .filter(|(_, ty)| matches!(resolve.types[**ty].kind, TypeDefKind::Resource))
                    .map(|(name, _)| name.clone())
                    .collect();
                names.push((Some(name), funcs, resources));
            }
            WorldItem::Function(func) => top.1.push(func.name.clone()),
            WorldItem::Type { id, .. } => {
                if let TypeDefKind::Resource = resolve.types[*id].kind {
                    top.2.extend(resolve.types[*id].name.clone());
                }
            }
        }
    }
    names.push(top);
    Ok(names)
}

/// A resource the plugin imports: the harness can hand out none, but the
/// plugin must link.
struct MockResource;

fn define_mocks(
    linker: &mut Linker<State<()>>,
    names: &Names,
    board: &Shared,
) -> wasmplug::wasmtime::Result<()> {
    for (iface, funcs, resources) in names {
        let mut instance = match iface {
            Some(name) => linker.instance(name)?,
            None => linker.root(),
        };
        for resource in resources {
            instance.resource(
                resource,
                ResourceType::host::<MockResource>(),
                |_, _| Ok(()),
            )?;
        }
        for func in funcs {
            let full = match iface {
                Some(iface) => format!("{iface}#{func}"),
                None => func.clone(),
            };
            let board = board.clone();
            instance.func_new(func, move |_store, ty, params, results| {
                let mut board = board.lock().unwrap_or_else(PoisonError::into_inner);
                if board.made.len() < MAX_RECORDED {
                    board.made.push((full.clone(), params.to_vec()));
                } else {
                    board.unrecorded += 1;
                }
                if results.is_empty() {
                    return Ok(());
                }
                let answer = match board.answers.get(&full) {
                    Some(answer) => Some(answer.clone()),
                    None => unparsed_answer(&board.unparsed, &full, &ty)?,
                };
                match answer {
                    Some(answer) => {
                        results[0] = answer;
                        Ok(())
                    }
                    None => Err(wasmplug::wasmtime::format_err!(
                        "the plugin called `{}`, but the case file gives it no answer: add \
                         `\"{}\" = '<WAVE>'` under [mocks] or the case's `mocks` (its type: {})",
                        short(&full),
                        short(&full),
                        signature::func(&ty)
                    )),
                }
            })?;
        }
    }
    Ok(())
}

/// The answer of a mock as written for import `full`, parsed against its
/// result type.
fn unparsed_answer(
    mocks: &BTreeMap<String, String>,
    full: &str,
    ty: &ComponentFunc,
) -> wasmplug::wasmtime::Result<Option<Val>> {
    let Some((key, text)) = mocks.iter().find(|(key, _)| signature::names(full, key)) else {
        return Ok(None);
    };
    let Some(result) = ty.results().next() else {
        return Ok(None);
    };
    parse_value(text, &result)
        .map(Some)
        .map_err(|e| wasmplug::wasmtime::format_err!("mock `{key}`: {e:#}"))
}

/// `greeter#welcome` for `wasmplug:plugin/greeter@1.0.0#welcome`.
fn short(full: &str) -> String {
    match full.rsplit_once('#') {
        Some((iface, func)) => {
            let unversioned = iface.split('@').next().unwrap_or(iface);
            let short = unversioned.rsplit('/').next().unwrap_or(unversioned);
            format!("{short}.{func}")
        }
        None => full.to_string(),
    }
}

fn instantiate(plugin: &Plugin<Dynamic>, board: &Shared) -> anyhow::Result<Instance<Dynamic>> {
    let instance = plugin
        .instantiate()
        .context("instantiating (and running `init`)");
    // Import calls `init` made belong to no case.
    board
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .made
        .clear();
    board
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .unrecorded = 0;
    instance
}

fn find_import<'a>(imports: &'a [Import], name: &str) -> anyhow::Result<&'a Import> {
    let found: Vec<&Import> = imports
        .iter()
        .filter(|i| signature::names(&i.full, name))
        .collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => {
            let all: Vec<String> = imports.iter().map(|i| short(&i.full)).collect();
            bail!(
                "the plugin imports no function `{name}`; it imports (outside WASI): {}",
                if all.is_empty() {
                    "nothing".to_string()
                } else {
                    all.join(", ")
                }
            )
        }
        many => {
            let all: Vec<&str> = many.iter().map(|i| i.full.as_str()).collect();
            bail!("`{name}` is ambiguous; write one of: {}", all.join(", "))
        }
    }
}

/// Parse `f(args)` in WAVE against `ty`'s parameters: the name as written,
/// and the arguments.
fn parse_call(
    text: &str,
    mut ty: impl FnMut(&str) -> anyhow::Result<ComponentFunc>,
) -> anyhow::Result<(String, Vec<Val>)> {
    let parsed = wasm_wave::untyped::UntypedFuncCall::parse(text)
        .map_err(|e| anyhow::anyhow!("{}", signature::wave_error(text, &e)))?;
    let name = parsed.name().to_string();
    let func = ty(&name)?;
    let params: Vec<Type> = func.params().map(|(_, ty)| ty).collect();
    let args = parsed.to_wasm_params::<Val>(params.iter()).map_err(|e| {
        anyhow::anyhow!("arguments of `{name}`: {}", signature::wave_error(text, &e))
    })?;
    Ok((name, args))
}

/// A value in WAVE against `ty`.
fn parse_value(text: &str, ty: &Type) -> anyhow::Result<Val> {
    wasm_wave::from_str::<Val>(ty, text).map_err(|e| {
        anyhow::anyhow!(
            "expected a value of type {}: {}",
            signature::value(ty),
            signature::wave_error(text, &e)
        )
    })
}

/// Mocks as written (`"config.get" = 'some("Hej")'`), checked against the
/// plugin's imports: answers by the import's full name.
fn mock_answers(
    mocks: &BTreeMap<String, String>,
    imports: &[Import],
) -> anyhow::Result<HashMap<String, Val>> {
    let mut answers = HashMap::new();
    for (key, text) in mocks {
        let import = find_import(imports, key).with_context(|| format!("mock `{key}`"))?;
        let results: Vec<Type> = import.ty.results().collect();
        let [ty] = results.as_slice() else {
            bail!(
                "mock `{key}`: `{}` returns nothing, so it needs no answer",
                short(&import.full)
            );
        };
        let val = parse_value(text, ty).with_context(|| format!("mock `{key}`"))?;
        answers.insert(import.full.clone(), val);
    }
    Ok(answers)
}

fn prepare(
    case: &Case,
    name: &str,
    file_answers: &HashMap<String, Val>,
    imports: &[Import],
    instance: &mut Instance<Dynamic>,
) -> anyhow::Result<Ready> {
    let mut export_ty = None;
    let (export, args) = parse_call(&case.call, |export| {
        let ty = instance.export_type(export).map_err(anyhow::Error::from)?;
        export_ty = Some(ty.clone());
        Ok(ty)
    })
    .context("`call`")?;
    let export_ty = export_ty.expect("parse_call looked the export up");
    let expect = match &case.expect {
        Some(text) => {
            let results: Vec<Type> = export_ty.results().collect();
            let vals = match results.as_slice() {
                [] if matches!(text.trim(), "" | "()") => Vec::new(),
                [] => bail!("`expect`: `{export}` returns nothing; leave `expect` out"),
                [ty] => vec![parse_value(text, ty).context("`expect`")?],
                _ => bail!("`expect`: `{export}` returns several values; WAVE writes one"),
            };
            Some((text.clone(), vals))
        }
        None => None,
    };
    if case.expect.is_some() && case.expect_error.is_some() {
        bail!("give `expect` or `expect-error`, not both");
    }
    let mut answers = file_answers.clone();
    answers.extend(mock_answers(&case.mocks, imports)?);
    let imports_wanted = match &case.imports {
        Some(list) => Some(
            list.iter()
                .map(|text| {
                    let mut full = String::new();
                    let (_, args) = parse_call(text, |name| {
                        let import = find_import(imports, name)?;
                        full = import.full.clone();
                        Ok(import.ty.clone())
                    })
                    .with_context(|| format!("`imports` entry {text}"))?;
                    Ok((full, args))
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
        ),
        None => None,
    };
    Ok(Ready {
        name: name.to_string(),
        call: case.call.clone(),
        export,
        args,
        expect,
        expect_error: case.expect_error.clone(),
        imports: imports_wanted,
        answers,
        fresh: case.fresh,
    })
}

/// Run one case; `Err` is why it failed, as lines for the report.
fn run_case(
    case: &Ready,
    plugin: &Plugin<Dynamic>,
    board: &Shared,
    slot: &mut Option<Instance<Dynamic>>,
) -> Result<(), String> {
    if case.fresh {
        *slot = None;
    }
    // The case's mocks answer a new instance's `init` too.
    board.lock().unwrap_or_else(PoisonError::into_inner).answers = case.answers.clone();
    if slot.is_none() {
        *slot = Some(instantiate(plugin, board).map_err(|e| format!("{e:#}"))?);
    }
    let instance = slot.as_mut().expect("made above");
    {
        let mut board = board.lock().unwrap_or_else(PoisonError::into_inner);
        board.made.clear();
        board.unrecorded = 0;
    }
    let outcome = instance.call_dynamic(&case.export, &case.args);
    let (made, unrecorded) = {
        let mut board = board.lock().unwrap_or_else(PoisonError::into_inner);
        (
            std::mem::take(&mut board.made),
            std::mem::take(&mut board.unrecorded),
        )
    };
    let mut why = Vec::new();
    match (&outcome, &case.expect, &case.expect_error) {
        (Ok(got), Some((text, want)), _) if got != want => {
            why.push(format!("expected: {text}"));
            why.push(format!("got:      {}", wave_list(got)));
        }
        (Ok(got), _, Some(text)) => {
            why.push(format!("expected an error containing: {text}"));
            why.push(format!("got:      {}", wave_list(got)));
        }
        (Ok(_), _, None) => {}
        (Err(err), _, Some(text)) if err.to_string().contains(text.as_str()) => {}
        (Err(err), _, want) => {
            if let Some(text) = want {
                why.push(format!("expected an error containing: {text}"));
            } else if let Some((text, _)) = &case.expect {
                why.push(format!("expected: {text}"));
            }
            why.push(format!("error:    {err}"));
        }
    }
    if outcome.is_err() {
        // A trapped or refused instance is not to be used again.
        *slot = None;
    }
    if let Some(wanted) = &case.imports {
        if *wanted != made || unrecorded > 0 {
            why.push(format!("expected imports: {}", calls_list(wanted, 0)));
            why.push(format!(
                "imports called:   {}",
                calls_list(&made, unrecorded)
            ));
        }
    } else if !why.is_empty() && !made.is_empty() {
        why.push(format!(
            "imports called:   {}",
            calls_list(&made, unrecorded)
        ));
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err(why.join("\n"))
    }
}

/// `text`, cut at [`MAX_SHOWN`] characters with what was left out said.
fn shown(text: String) -> String {
    match text.char_indices().nth(MAX_SHOWN) {
        None => text,
        Some((cut, _)) => format!(
            "{}… ({} more bytes not shown)",
            &text[..cut],
            text.len() - cut
        ),
    }
}

fn wave(val: &Val) -> String {
    wasm_wave::to_string(val).unwrap_or_else(|_| "<a value WAVE cannot write>".into())
}

fn wave_list(vals: &[Val]) -> String {
    shown(match vals {
        [] => "(nothing)".into(),
        [one] => wave(one),
        many => many.iter().map(wave).collect::<Vec<_>>().join(", "),
    })
}

fn calls_list(calls: &[(String, Vec<Val>)], unrecorded: usize) -> String {
    if calls.is_empty() {
        return "none".into();
    }
    let mut listed = String::new();
    for (i, (full, args)) in calls.iter().enumerate() {
        if listed.len() > MAX_SHOWN {
            listed.push_str(&format!(
                ", … ({} more calls)",
                calls.len() - i + unrecorded
            ));
            return listed;
        }
        if i > 0 {
            listed.push_str(", ");
        }
        let args: Vec<String> = args.iter().map(wave).collect();
        listed.push_str(&shown(format!("{}({})", short(full), args.join(", "))));
    }
    if unrecorded > 0 {
        listed.push_str(&format!(", … ({unrecorded} more calls, not recorded)"));
    }
    listed
}
