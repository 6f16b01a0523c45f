//! Component types written the way WIT writes them, for error messages and
//! listings: `func(who: record { name: string, age: u32 }) -> string`.
//!
//! Component types carry structure, not names (a `user` record is a record
//! with fields `name` and `age`), so records, variants and enums are written
//! out in full.

use wasmtime::component::types::{ComponentExtern, ComponentFunc, ComponentItem, Type};
use wasmtime::Engine;

/// The functions among a component's imports or exports, as
/// `interface#function` (or just `function` at the top level), with their
/// types. Pass `component.component_type().exports(engine)` (or `imports`).
pub fn funcs<'a>(
    engine: &Engine,
    items: impl Iterator<Item = (&'a str, ComponentExtern<'a>)>,
) -> Vec<(String, ComponentFunc)> {
    let mut funcs = Vec::new();
    for (name, item) in items {
        match item.ty {
            ComponentItem::ComponentFunc(func) => funcs.push((name.to_string(), func)),
            ComponentItem::ComponentInstance(inst) => {
                for (func_name, item) in inst.exports(engine) {
                    if let ComponentItem::ComponentFunc(func) = item.ty {
                        funcs.push((format!("{name}#{func_name}"), func));
                    }
                }
            }
            _ => {}
        }
    }
    funcs
}

/// Does `wanted`, a function name as a person writes it, name the function
/// `full` (`interface#function`, or `function` at the top level, as
/// [`funcs`] lists them)? `wanted` is `function`, `interface.function` or
/// `interface#function`, the interface in full (`wasmplug:plugin/greeter@1.0.0`),
/// without its version, or short (`greeter`). The `.` form needs a short
/// or unversioned interface: a full name's version has dots of its own.
pub fn names(full: &str, wanted: &str) -> bool {
    let split = match wanted.rsplit_once('#') {
        Some(split) => Some(split),
        None if !wanted.contains(['@', ':']) => wanted.rsplit_once('.'),
        None => None,
    };
    match (full.rsplit_once('#'), split) {
        (Some((iface, func)), Some((want_iface, want_func))) => {
            func == want_func && interface_matches(iface, want_iface)
        }
        (Some((_, func)), None) => func == wanted,
        (None, None) => full == wanted,
        (None, Some(_)) => false,
    }
}

fn interface_matches(full: &str, wanted: &str) -> bool {
    let unversioned = full.split('@').next().unwrap_or(full);
    let short = unversioned.rsplit('/').next().unwrap_or(unversioned);
    full == wanted || unversioned == wanted || short == wanted
}

/// A function type as WIT text.
pub fn func(ty: &ComponentFunc) -> String {
    let params: Vec<String> = ty
        .params()
        .map(|(name, ty)| format!("{name}: {}", value(&ty)))
        .collect();
    let results: Vec<String> = ty.results().map(|ty| value(&ty)).collect();
    match results.as_slice() {
        [] => format!("func({})", params.join(", ")),
        [one] => format!("func({}) -> {one}", params.join(", ")),
        many => format!("func({}) -> ({})", params.join(", "), many.join(", ")),
    }
}

/// A value type as WIT text.
pub fn value(ty: &Type) -> String {
    match ty {
        Type::Bool => "bool".into(),
        Type::S8 => "s8".into(),
        Type::U8 => "u8".into(),
        Type::S16 => "s16".into(),
        Type::U16 => "u16".into(),
        Type::S32 => "s32".into(),
        Type::U32 => "u32".into(),
        Type::S64 => "s64".into(),
        Type::U64 => "u64".into(),
        Type::Float32 => "f32".into(),
        Type::Float64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "string".into(),
        Type::List(list) => format!("list<{}>", value(&list.ty())),
        Type::FixedLengthList(list) => format!("list<{}, {}>", value(&list.ty()), list.len()),
        Type::Map(map) => format!("map<{}, {}>", value(&map.key()), value(&map.value())),
        Type::Record(record) => {
            let fields: Vec<String> = record
                .fields()
                .map(|f| format!("{}: {}", f.name, value(&f.ty)))
                .collect();
            format!("record {{ {} }}", fields.join(", "))
        }
        Type::Tuple(tuple) => {
            let types: Vec<String> = tuple.types().map(|t| value(&t)).collect();
            format!("tuple<{}>", types.join(", "))
        }
        Type::Variant(variant) => {
            let cases: Vec<String> = variant
                .cases()
                .map(|c| match &c.ty {
                    Some(ty) => format!("{}({})", c.name, value(ty)),
                    None => c.name.to_string(),
                })
                .collect();
            format!("variant {{ {} }}", cases.join(", "))
        }
        Type::Enum(e) => format!("enum {{ {} }}", e.names().collect::<Vec<_>>().join(", ")),
        Type::Flags(f) => format!("flags {{ {} }}", f.names().collect::<Vec<_>>().join(", ")),
        Type::Option(opt) => format!("option<{}>", value(&opt.ty())),
        Type::Result(result) => {
            let part = |t: Option<Type>| t.map(|t| value(&t)).unwrap_or_else(|| "_".into());
            match (result.ok(), result.err()) {
                (None, None) => "result".into(),
                (ok, err) => format!("result<{}, {}>", part(ok), part(err)),
            }
        }
        Type::Own(_) => "own<resource>".into(),
        Type::Borrow(_) => "borrow<resource>".into(),
        Type::Future(_) => "future".into(),
        Type::Stream(_) => "stream".into(),
        Type::ErrorContext => "error-context".into(),
    }
}

/// A WAVE parse error as a message: what is wrong, and a caret under the
/// column of `text` where it is.
pub fn wave_error(text: &str, err: &wasm_wave::parser::ParserError) -> String {
    let start = err.span().start.min(text.len());
    let column = text[..start].chars().count() + 1;
    let detail = err.detail().map(|d| format!(": {d}")).unwrap_or_default();
    format!(
        "bad WAVE at column {column}: {}{detail}\n    {text}\n    {}^",
        err.kind(),
        " ".repeat(column - 1)
    )
}
