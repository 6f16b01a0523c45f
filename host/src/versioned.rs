//! One host, plugins built against several versions of its world.
//!
//! A service's WIT changes over the years. Published versions are never
//! edited; a new one is added beside them (`pkg@1.1.0` beside `pkg@1.0.0`)
//! and only **adds**: new functions, new interfaces, new imports. With
//! [`versioned_world!`](crate::versioned_world) the host serves every
//! version of a major at once:
//!
//! * **Imports**: the newest version's `bindgen!` output links the host's
//!   imports. wasmtime matches import names semver-compatibly, so a 1.0
//!   plugin's `pkg/host@1.0.0` is answered by the 1.1 implementation, and
//!   imports new in 1.1 are simply not used by it.
//! * **Exports**: the embedder declares each exported function once, in
//!   Rust types of the newest bindings, marking the ones a later version
//!   added with `#[since = "1.1.0"]`. At load each function is looked up and
//!   **type-checked**; one the plugin's version lacks is bound as absent.
//! * **Calls** go through one API, the newest: `plugin.greeter().farewell(
//!   store, name)`. On a plugin whose version lacks the function the call
//!   returns [`Error::Unsupported`](crate::Error::Unsupported), naming the
//!   function and the plugin's world version, without running the guest:
//!   no trap, and the instance stays healthy. A declaration may instead
//!   name a default (`#[default = path]`): a function of the same arguments
//!   that answers for plugins without it.
//!
//! At load a plugin is bound to the newest version the host serves that is
//! not newer than the one it was built against (its target, read from the
//! versions in its import and export names). It must export every function
//! of that version, each with the declared type; a missing or mistyped one
//! refuses it, named. A plugin of another major (`pkg@2.0.0` on a 1.x host)
//! is refused before linking, with the version it targets and the ones the
//! host serves. A plugin built against a newer minor than the host knows is
//! bound as the host's newest, if its imports are ones the host has.
//!
//! What an embedder writes per new version: the version in `versions`, one
//! line per new function, and the host side of new imports. See
//! `docs/EVOLVING.md` and [`crate::reference::Greeter`].

use semver::Version;
use wasmtime::component::types::{ComponentFunc, ComponentItem};
use wasmtime::component::{Component, ComponentExportIndex, Func, Instance, InstancePre};
use wasmtime::{AsContextMut, Engine};

pub use crate::error::Unsupported;

/// What a versioned world's bindings carry into every call: the world
/// version the plugin is bound to. Generated code only.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub version: &'static str,
}

impl Bound {
    /// The refusal of a call to `function`, from the bindings at `origin`.
    pub fn unsupported<T: ?Sized>(
        &self,
        origin: &T,
        function: &str,
        since: Option<&'static str>,
    ) -> wasmtime::Error {
        wasmtime::Error::new(Unsupported {
            function: wit_name(function),
            world_version: self.version,
            since,
            origin: origin as *const T as *const u8 as usize,
        })
    }
}

/// One exported function as the embedder declared it. Generated code only.
#[doc(hidden)]
pub struct Declared<T: 'static> {
    /// WIT name of its interface, without package or version (`greeter`).
    pub interface: &'static str,
    /// Its Rust name (`farewell`); the WIT name is this in kebab case.
    pub name: &'static str,
    /// The version that added it; `None`: every version has it.
    pub since: Option<&'static str>,
    /// The declared parameters, `(name, Rust type)`, for errors.
    pub params: &'static [(&'static str, &'static str)],
    /// The declared result's Rust type, for errors.
    pub result: Option<&'static str>,
    /// `ComponentFunc::typecheck` with the declared parameter and result types.
    pub check: fn(&ComponentFunc, &InstancePre<T>) -> wasmtime::Result<()>,
}

/// A Rust name as WIT writes it: `get_user` → `get-user`, `r#type` → `type`.
fn wit_name(rust: &str) -> String {
    rust.replace("r#", "").replace('_', "-")
}

impl<T> Declared<T> {
    /// The declaration as Rust: `fn farewell(name: &str) -> String`.
    fn rust(&self) -> String {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(n, t)| format!("{n}: {t}"))
            .collect();
        let result = self.result.map(|r| format!(" -> {r}")).unwrap_or_default();
        format!(
            "fn {}({}){result}",
            self.name.trim_start_matches("r#"),
            params.join(", ")
        )
    }
}

/// The export lookups of a loaded plugin of world `W`, resolved and
/// type-checked once against `W`'s declarations. Tied to `W`: indices
/// checked for one world cannot be loaded as another's.
pub struct Indices<W> {
    version: &'static str,
    funcs: Vec<Option<ComponentExportIndex>>,
    world: std::marker::PhantomData<fn() -> W>,
}

impl<W> Clone for Indices<W> {
    fn clone(&self) -> Self {
        Indices {
            version: self.version,
            funcs: self.funcs.clone(),
            world: std::marker::PhantomData,
        }
    }
}

impl<W> Indices<W> {
    /// The world version the plugin is bound to.
    pub fn version(&self) -> &'static str {
        self.version
    }

    /// Generated code only: the functions of a fresh instance, in declared
    /// order (`None` where the plugin's version lacks one), and what its
    /// bindings carry.
    #[doc(hidden)]
    pub fn load(
        &self,
        mut store: impl AsContextMut,
        instance: &Instance,
    ) -> wasmtime::Result<(Bound, std::vec::IntoIter<Option<Func>>)> {
        let mut funcs = Vec::with_capacity(self.funcs.len());
        for index in &self.funcs {
            funcs.push(match index {
                Some(index) => Some(instance.get_func(&mut store, index).ok_or_else(|| {
                    wasmtime::format_err!("an export checked at load is missing from the instance")
                })?),
                None => None,
            });
        }
        let bound = Bound {
            version: self.version,
        };
        Ok((bound, funcs.into_iter()))
    }
}

/// `pkg/interface@version` names among a component's imports or exports, for
/// `package`: (the name, its version).
fn package_names(
    component: &Component,
    engine: &Engine,
    package: &str,
) -> Vec<(String, Option<Version>)> {
    let ty = component.component_type();
    let prefix = format!("{package}/");
    ty.imports(engine)
        .map(|(name, _)| name)
        .chain(ty.exports(engine).map(|(name, _)| name))
        .filter(|name| name.starts_with(&prefix))
        .map(|name| {
            let version = name
                .split_once('@')
                .and_then(|(_, v)| Version::parse(v).ok());
            (name.to_string(), version)
        })
        .collect()
}

/// The semver track of a version, as wasmtime links names: `1` for `1.y.z`,
/// `0.2` for `0.2.z`; a pre-release, or a `0.0.z`, is a track of its own
/// (its whole version). Two names link when their tracks are equal.
pub fn track(version: &Version) -> String {
    match version {
        v if !v.pre.is_empty() => v.to_string(),
        v if v.major != 0 => v.major.to_string(),
        v if v.minor != 0 => format!("0.{}", v.minor),
        v => v.to_string(),
    }
}

/// Two versions on one semver track: what wasmtime links to each other.
fn compatible(a: &Version, b: &Version) -> bool {
    track(a) == track(b)
}

fn served_list(package: &str, versions: &[&str]) -> String {
    let listed: Vec<String> = versions.iter().map(|v| format!("{package}@{v}")).collect();
    listed.join(", ")
}

/// The version of `package` a component was built against: the newest
/// version among its import and export names of that package. `None` when
/// it names none (or none versioned).
pub fn target(component: &Component, engine: &Engine, package: &str) -> Option<Version> {
    package_names(component, engine, package)
        .into_iter()
        .filter_map(|(_, v)| v)
        .max()
}

/// Refuse, before linking, a component the host cannot serve: one that uses
/// nothing of `package`, or targets a version of another major than every
/// served one. Generated code calls it from [`World::accepts`](crate::World::accepts).
///
/// # Errors
/// The refusal, naming the version the component targets (with the import
/// or export that says so) and the versions the host serves.
pub fn accepts(
    component: &Component,
    engine: &Engine,
    package: &str,
    versions: &[&'static str],
) -> wasmtime::Result<()> {
    validate(versions, std::iter::empty())?;
    let served: Vec<Version> = versions
        .iter()
        .filter_map(|v| Version::parse(v).ok())
        .collect();
    let names = package_names(component, engine, package);
    if names.is_empty() {
        wasmtime::bail!(
            "it imports and exports nothing of `{package}`: it is not a plugin of this \
             world (the host serves {})",
            served_list(package, versions)
        );
    }
    for (name, version) in &names {
        let Some(version) = version else {
            wasmtime::bail!(
                "`{name}` names no version of `{package}`; the host serves {}",
                served_list(package, versions)
            );
        };
        if !served.iter().any(|s| compatible(s, version)) {
            wasmtime::bail!(
                "it targets world `{package}@{version}` (it uses `{name}`), a version this \
                 host does not serve; the host serves {}",
                served_list(package, versions)
            );
        }
    }
    Ok(())
}

/// Resolve and type-check a plugin's exports against the declared
/// functions, and pick the world version it is bound to. Generated code
/// calls it from [`World::indices`](crate::World::indices).
///
/// # Safety
/// Each `declared` entry's `check` must type-check exactly the parameter
/// and result types `W`'s generated calls use for that function: those
/// calls skip the check (`TypedFunc::new_unchecked`). The macro emits both
/// from one declaration, in one scope.
///
/// # Errors
/// A declared function the plugin's version must have but lacks, or one it
/// exports with another type (both types named); a plugin of no served
/// version; a malformed `versions` list.
#[doc(hidden)]
pub unsafe fn indices<W, T: 'static>(
    pre: &InstancePre<T>,
    package: &str,
    versions: &[&'static str],
    declared: &[Declared<T>],
) -> wasmtime::Result<Indices<W>> {
    let component = pre.component();
    let engine = pre.engine();
    validate(versions, declared.iter().filter_map(|d| d.since))?;
    let newest = versions[0];
    let parse = |v: &str| {
        Version::parse(v)
            .map_err(|e| wasmtime::format_err!("world version `{v}` is not semver: {e}"))
    };
    // Bound to the newest served version not newer than its target.
    let target = target(component, engine, package);
    let mut version = None;
    for v in versions {
        let parsed = parse(v)?;
        if target.as_ref().is_none_or(|t| *t >= parsed) {
            version = Some((*v, parsed));
            break;
        }
    }
    let (version, bound) = version.ok_or_else(|| {
        wasmtime::format_err!(
            "it targets `{package}@{}`, older than every version this host serves ({})",
            target.as_ref().map(ToString::to_string).unwrap_or_default(),
            served_list(package, versions)
        )
    })?;
    let mut funcs = Vec::with_capacity(declared.len());
    for decl in declared {
        let interface = format!("{package}/{}@{newest}", decl.interface);
        let wit_name = wit_name(decl.name);
        let path = format!("{package}/{}#{wit_name}", decl.interface);
        let required = match decl.since {
            Some(since) => parse(since)? <= bound,
            None => true,
        };
        let found = component
            .get_export_index(None, &interface)
            .and_then(|parent| component.get_export(Some(&parent), &wit_name));
        let Some((item, index)) = found else {
            if required {
                wasmtime::bail!(
                    "it targets `{package}@{version}` but does not export `{path}` ({}), \
                     which that version has",
                    decl.rust()
                );
            }
            funcs.push(None);
            continue;
        };
        let ComponentItem::ComponentFunc(func) = &item else {
            wasmtime::bail!(
                "its export `{path}` is not a function; the host expects `{}`",
                decl.rust()
            );
        };
        (decl.check)(func, pre).map_err(|e| {
            wasmtime::format_err!(
                "its export `{path}` has the wrong type: the host expects `{}`, the plugin \
                 has `{}` ({e:#})",
                decl.rust(),
                crate::signature::func(func)
            )
        })?;
        funcs.push(Some(index));
    }
    Ok(Indices {
        version,
        funcs,
        world: std::marker::PhantomData,
    })
}

/// The embedder's `versions` list and `#[since]` attributes: at least one
/// version, newest first, no pre-releases, all on the newest's semver
/// track (one major), and every `since` one of them. A mistake here refuses
/// every plugin, saying what is wrong with the list.
fn validate<'a>(versions: &[&str], since: impl Iterator<Item = &'a str>) -> wasmtime::Result<()> {
    let bad =
        |why: String| wasmtime::format_err!("the host's versioned world is misdeclared: {why}");
    let parsed: Vec<Version> = versions
        .iter()
        .map(|v| Version::parse(v).map_err(|e| bad(format!("version `{v}` is not semver: {e}"))))
        .collect::<Result<_, _>>()?;
    let newest = parsed
        .first()
        .ok_or_else(|| bad("`versions` is empty".into()))?;
    for (v, next) in parsed.iter().zip(parsed.iter().skip(1)) {
        if v <= next {
            return Err(bad(format!(
                "`versions` must be newest first: {v} before {next}"
            )));
        }
    }
    for v in &parsed {
        if !v.pre.is_empty() {
            return Err(bad(format!("version {v} is a pre-release")));
        }
        if !compatible(newest, v) {
            return Err(bad(format!(
                "versions {newest} and {v} are of different majors: one world per major"
            )));
        }
    }
    for s in since {
        if !versions.contains(&s) {
            return Err(bad(format!("#[since = \"{s}\"] is not one of `versions`")));
        }
    }
    Ok(())
}

/// The value of a call's results tuple: `()` for none, `T` for `(T,)`.
/// Generated code only.
#[doc(hidden)]
pub trait Results {
    type Out;
    fn out(self) -> Self::Out;
}

impl Results for () {
    type Out = ();
    fn out(self) {}
}

impl<T> Results for (T,) {
    type Out = T;
    fn out(self) -> T {
        self.0
    }
}

/// Call a function with its arguments as a tuple: a declared `#[default]`
/// answering for a plugin without the function. Generated code only.
#[doc(hidden)]
pub trait Apply<Args> {
    type Out;
    fn apply(self, args: Args) -> Self::Out;
}

macro_rules! apply_tuples {
    ($( ($($a:ident),*) )*) => {$(
        impl<F: FnOnce($($a),*) -> R, R, $($a),*> Apply<($($a,)*)> for F {
            type Out = R;
            #[allow(non_snake_case)]
            fn apply(self, ($($a,)*): ($($a,)*)) -> R {
                self($($a),*)
            }
        }
    )*};
}

apply_tuples! {
    () (A) (A, B) (A, B, C) (A, B, C, D) (A, B, C, D, E) (A, B, C, D, E, G)
    (A, B, C, D, E, G, H) (A, B, C, D, E, G, H, I) (A, B, C, D, E, G, H, I, J)
    (A, B, C, D, E, G, H, I, J, K) (A, B, C, D, E, G, H, I, J, K, L)
    (A, B, C, D, E, G, H, I, J, K, L, M) (A, B, C, D, E, G, H, I, J, K, L, M, N)
    (A, B, C, D, E, G, H, I, J, K, L, M, N, O)
    (A, B, C, D, E, G, H, I, J, K, L, M, N, O, P)
    (A, B, C, D, E, G, H, I, J, K, L, M, N, O, P, Q)
}

/// `Some(value)` or `None`, for the generated code.
#[doc(hidden)]
#[macro_export]
macro_rules! __wasmplug_some {
    () => {
        ::core::option::Option::None
    };
    ($value:expr) => {
        ::core::option::Option::Some($value)
    };
}

/// Define a [`World`](crate::World) that serves plugins built against any of
/// several versions of one WIT world: see the [module docs](crate::versioned).
///
/// `add_to_linker` links the **newest** version's imports (one `bindgen!`
/// run, for the newest version only); each `interface` lists the world's
/// exported functions in the newest version's Rust types, once. A
/// function a later version added carries `#[since = "x.y.z"]`, and may carry
/// `#[default = path]`: a function of the same arguments that answers for
/// plugins without it (otherwise such a call is
/// [`Error::Unsupported`](crate::Error::Unsupported)). `identity` and `init`
/// (optional) are functions `fn(&World, &mut Store<State<Data>>)` forwarding
/// [`World::identity`](crate::World::identity) and
/// [`World::init`](crate::World::init).
///
/// Each `interface x` becomes a module `x` beside the struct (its `Exports`
/// type) and an accessor `world.x()`; a WIT name in kebab case is written in
/// snake case.
///
/// **Async worlds**: write `pub async struct` and link the newest version's
/// `bindgen!` run with `imports: { default: async }, exports: { default: async }`.
/// The world is then [`ASYNC`](crate::World::ASYNC), its calls are `async
/// fn`s awaited inside [`Instance::call_async`](crate::Instance::call_async)
/// or [`Handle::call_async`](crate::Handle::call_async)
/// (`|plugin, store| Box::pin(plugin.greeter().farewell(store, "Ann"))`),
/// and `identity` and `init` return a
/// [`BoxFuture`](crate::world::BoxFuture).
///
/// ```no_run
/// use wasmplug::wasmtime::{self, component::Linker};
/// use wasmplug::{Runtime, State};
///
/// // `acme:text@1.1.0` added `filter.name` to 1.0's `filter.apply`. The
/// // world imports nothing, so linking its imports is nothing; a world with
/// // imports forwards to the newest version's `bindgen!` `add_to_linker`.
/// fn link(_: &mut Linker<State<()>>) -> wasmtime::Result<()> {
///     Ok(())
/// }
///
/// wasmplug::versioned_world! {
///     pub struct Text {
///         package: "acme:text",
///         versions: ["1.1.0", "1.0.0"], // newest first
///         data: (),
///         add_to_linker: link,
///         interface filter = "filter" {
///             fn apply(input: &str) -> String;
///             #[since = "1.1.0"]
///             fn name() -> String;
///         }
///     }
/// }
///
/// # fn main() -> anyhow::Result<()> {
/// let runtime = Runtime::<Text>::new()?;
/// let mut instance = runtime.load("plugins/upper.wasm")?.instantiate()?;
/// let out = instance.call(|plugin, store| plugin.filter().apply(store, "hi"))?;
/// match instance.call(|plugin, store| plugin.filter().name(store)) {
///     Ok(name) => println!("{name}: {out}"),
///     Err(err) if err.is_unsupported() => println!("a 1.0 filter: {out}"),
///     Err(err) => return Err(err.into()),
/// }
/// # Ok(()) }
/// ```
///
/// [`crate::reference::Greeter`] is the reference world's, in full.
#[macro_export]
macro_rules! versioned_world {
    (
        $(#[$meta:meta])*
        $vis:vis async struct $name:ident { $($body:tt)* }
    ) => {
        $crate::__wasmplug_versioned_world! { [async] $(#[$meta])* $vis struct $name { $($body)* } }
    };
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident { $($body:tt)* }
    ) => {
        $crate::__wasmplug_versioned_world! { [blocking] $(#[$meta])* $vis struct $name { $($body)* } }
    };
}

/// `versioned_world!`, for a mode: `blocking` or `async`.
#[doc(hidden)]
#[macro_export]
macro_rules! __wasmplug_versioned_world {
    (
        [$mode:ident]
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            package: $package:literal,
            versions: [$($version:literal),+ $(,)?],
            data: $data:ty,
            add_to_linker: $link:expr,
            $(identity: $identity:expr,)?
            $(init: $init:expr,)?
            $(
                $(#[doc = $idoc:literal])*
                interface $iface:ident = $iface_name:literal {
                    $(
                        $(#[doc = $doc:literal])*
                        $(#[since = $since:literal])?
                        $(#[default = $default:path])?
                        fn $fn:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?;
                    )*
                }
            )*
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            __bound: $crate::versioned::Bound,
            $( $iface: $iface::Exports, )*
        }

        impl $name {
            /// The world version this plugin is bound to: the newest the
            /// host serves that is not newer than the plugin's own.
            pub fn world_version(&self) -> &'static str {
                self.__bound.version
            }
            $(
                $(#[doc = $idoc])*
                pub fn $iface(&self) -> &$iface::Exports {
                    &self.$iface
                }
            )*
        }

        $(
            $(#[doc = $idoc])*
            $vis mod $iface {
                #[allow(unused_imports)]
                use super::*;

                /// The interface's exports, as the plugin's world version has them.
                pub struct Exports {
                    pub(super) __bound: $crate::versioned::Bound,
                    $( pub(super) $fn: ::core::option::Option<$crate::wasmtime::component::Func>, )*
                }

                impl Exports {
                    $(
                        $crate::__wasmplug_method! {
                            [$mode]
                            docs: [$(#[doc = $doc])*]
                            name: $fn,
                            interface: $iface_name,
                            since: [$($since)?],
                            default: [$($default)?],
                            params: [$($arg: $ty),*],
                            result: [$($ret)?]
                        }
                    )*
                }

                /// The declarations, with their type checks written here,
                /// where the calls above are: the same tokens, in the same
                /// scope, name the same types.
                pub(super) fn __declared(
                    out: &mut ::std::vec::Vec<$crate::versioned::Declared<$crate::State<$data>>>,
                ) {
                    $(
                        out.push($crate::versioned::Declared {
                            interface: $iface_name,
                            name: stringify!($fn),
                            since: $crate::__wasmplug_some!($($since)?),
                            params: &[$((stringify!($arg), stringify!($ty))),*],
                            result: $crate::__wasmplug_some!($(stringify!($ret))?),
                            check: |func, pre| {
                                func.typecheck::<($($ty,)*), ($($ret,)?)>(&pre.instance_type())
                            },
                        });
                    )*
                }
            }
        )*

        impl $crate::World for $name {
            type Data = $data;
            type Indices = $crate::versioned::Indices<$name>;

            fn add_to_linker(
                linker: &mut $crate::wasmtime::component::Linker<$crate::State<$data>>,
            ) -> $crate::wasmtime::Result<()> {
                ($link)(linker)
            }

            fn accepts(
                component: &$crate::wasmtime::component::Component,
                engine: &$crate::wasmtime::Engine,
            ) -> $crate::wasmtime::Result<()> {
                $crate::versioned::accepts(component, engine, $package, &[$($version),+])
            }

            fn indices(
                pre: &$crate::wasmtime::component::InstancePre<$crate::State<$data>>,
            ) -> $crate::wasmtime::Result<$crate::versioned::Indices<$name>> {
                #[allow(unused_mut)]
                let mut declared = ::std::vec::Vec::new();
                $( $iface::__declared(&mut declared); )*
                // SAFETY: each `check` was generated beside the call it
                // guards, from the same declaration (`__declared`).
                unsafe {
                    $crate::versioned::indices::<$name, _>(pre, $package, &[$($version),+], &declared)
                }
            }

            fn load(
                indices: &$crate::versioned::Indices<$name>,
                store: &mut $crate::wasmtime::Store<$crate::State<$data>>,
                instance: &$crate::wasmtime::component::Instance,
            ) -> $crate::wasmtime::Result<Self> {
                #[allow(unused_mut)]
                let (bound, mut funcs) = indices.load(&mut *store, instance)?;
                ::core::result::Result::Ok($name {
                    __bound: bound,
                    $( $iface: $iface::Exports {
                        __bound: bound,
                        $( $fn: funcs.next().flatten(), )*
                    }, )*
                })
            }

            fn world_version(indices: &$crate::versioned::Indices<$name>) -> ::core::option::Option<&'static str> {
                ::core::option::Option::Some(indices.version())
            }

            $crate::__wasmplug_hooks! {
                [$mode] $data;
                identity: [$($identity)?]
                init: [$($init)?]
            }
        }
    };
}

/// One generated call: blocking, or async (`call_async`, awaited).
#[doc(hidden)]
#[macro_export]
macro_rules! __wasmplug_method {
    (
        [blocking]
        docs: [$(#[doc = $doc:literal])*]
        name: $fn:ident,
        interface: $iface_name:literal,
        since: [$($since:literal)?],
        default: [$($default:path)?],
        params: [$($arg:ident: $ty:ty),*],
        result: [$($ret:ty)?]
    ) => {
        $(#[doc = $doc])*
        #[allow(unreachable_code, clippy::needless_return)]
        pub fn $fn<S: $crate::wasmtime::AsContextMut>(
            &self,
            mut store: S,
            $($arg: $ty),*
        ) -> $crate::wasmtime::Result<<($($ret,)?) as $crate::versioned::Results>::Out> {
            let ::core::option::Option::Some(func) = self.$fn else {
                return $crate::__wasmplug_method!(@missing self, $fn, $iface_name, [$($since)?], [$($default)?], [$($arg),*]);
            };
            let callee = $crate::__wasmplug_method!(@typed func, [$($ty),*], [$($ret)?]);
            let results = callee.call(
                $crate::wasmtime::AsContextMut::as_context_mut(&mut store),
                ($($arg,)*),
            )?;
            ::core::result::Result::Ok($crate::versioned::Results::out(results))
        }
    };
    (
        [async]
        docs: [$(#[doc = $doc:literal])*]
        name: $fn:ident,
        interface: $iface_name:literal,
        since: [$($since:literal)?],
        default: [$($default:path)?],
        params: [$($arg:ident: $ty:ty),*],
        result: [$($ret:ty)?]
    ) => {
        $(#[doc = $doc])*
        #[allow(unreachable_code, clippy::needless_return)]
        pub async fn $fn<S>(
            &self,
            mut store: S,
            $($arg: $ty),*
        ) -> $crate::wasmtime::Result<<($($ret,)?) as $crate::versioned::Results>::Out>
        where
            S: $crate::wasmtime::AsContextMut,
            S::Data: Send,
        {
            let ::core::option::Option::Some(func) = self.$fn else {
                return $crate::__wasmplug_method!(@missing self, $fn, $iface_name, [$($since)?], [$($default)?], [$($arg),*]);
            };
            let callee = $crate::__wasmplug_method!(@typed func, [$($ty),*], [$($ret)?]);
            let results = callee
                .call_async(
                    $crate::wasmtime::AsContextMut::as_context_mut(&mut store),
                    ($($arg,)*),
                )
                .await?;
            ::core::result::Result::Ok($crate::versioned::Results::out(results))
        }
    };
    // The function, typed without a check at the call.
    (@typed $func:ident, [$($ty:ty),*], [$($ret:ty)?]) => {
        // SAFETY: `World::indices` type-checked this export against exactly
        // these types (`__declared`, from the same tokens in the same
        // module), for this component.
        unsafe { $crate::wasmtime::component::TypedFunc::<($($ty,)*), ($($ret,)?)>::new_unchecked($func) }
    };
    // The answer for a plugin without the function: its `#[default]`, or
    // `Unsupported`.
    (@missing $this:tt, $fn:ident, $iface_name:literal, [$($since:literal)?], [$($default:path)?], [$($arg:ident),*]) => {{
        let args = ($($arg,)*);
        $( return ::core::result::Result::Ok($crate::versioned::Apply::apply($default, args)); )?
        let _ = args;
        ::core::result::Result::Err($this.__bound.unsupported(
            $this,
            concat!($iface_name, ".", stringify!($fn)),
            $crate::__wasmplug_some!($($since)?),
        ))
    }};
}

/// The `World` items that differ by mode: `ASYNC`, and the identity and
/// init hooks (blocking functions, or functions returning a `BoxFuture`).
#[doc(hidden)]
#[macro_export]
macro_rules! __wasmplug_hooks {
    ([blocking] $data:ty; identity: [$($identity:expr)?] init: [$($init:expr)?]) => {
        $(
            fn identity(
                &self,
                store: &mut $crate::wasmtime::Store<$crate::State<$data>>,
            ) -> $crate::wasmtime::Result<::core::option::Option<$crate::Identity>> {
                ($identity)(self, store)
            }
        )?
        $(
            fn init(
                &self,
                store: &mut $crate::wasmtime::Store<$crate::State<$data>>,
            ) -> $crate::wasmtime::Result<::core::result::Result<(), ::std::string::String>> {
                ($init)(self, store)
            }
        )?
    };
    ([async] $data:ty; identity: [$($identity:expr)?] init: [$($init:expr)?]) => {
        const ASYNC: bool = true;
        $(
            fn identity_async<'a>(
                &'a self,
                store: &'a mut $crate::wasmtime::Store<$crate::State<$data>>,
            ) -> $crate::world::BoxFuture<'a, $crate::wasmtime::Result<::core::option::Option<$crate::Identity>>> {
                ($identity)(self, store)
            }
        )?
        $(
            fn init_async<'a>(
                &'a self,
                store: &'a mut $crate::wasmtime::Store<$crate::State<$data>>,
            ) -> $crate::world::BoxFuture<'a, $crate::wasmtime::Result<::core::result::Result<(), ::std::string::String>>> {
                ($init)(self, store)
            }
        )?
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misdeclared_versions_list_is_named() {
        let check = |versions: &[&str], since: &[&str]| {
            validate(versions, since.iter().copied()).map_err(|e| e.to_string())
        };
        assert!(check(&["1.1.0", "1.0.0"], &["1.1.0"]).is_ok());
        assert!(check(&["0.3.1", "0.3.0"], &[]).is_ok());
        for (versions, since, expected) in [
            (&[][..], &[][..], "`versions` is empty"),
            (&["1.0.0", "1.1.0"], &[], "newest first: 1.0.0 before 1.1.0"),
            (&["1.1.0", "1.1.0"], &[], "newest first"),
            (&["2.0.0", "1.0.0"], &[], "different majors"),
            (&["0.3.0", "0.2.0"], &[], "different majors"),
            (&["1.1.0-rc.1", "1.0.0"], &[], "pre-release"),
            (&["1.1"], &[], "not semver"),
            (
                &["1.1.0", "1.0.0"],
                &["1.2.0"],
                "#[since = \"1.2.0\"] is not one of",
            ),
        ] {
            let err = check(versions, since).unwrap_err();
            assert!(
                err.contains(expected),
                "{versions:?}: `{expected}` in {err}"
            );
            assert!(err.contains("misdeclared"), "{err}");
        }
    }

    #[test]
    fn semver_tracks_are_wasmtimes() {
        let v = |s: &str| Version::parse(s).unwrap();
        assert!(compatible(&v("1.1.0"), &v("1.0.3")));
        assert!(!compatible(&v("2.0.0"), &v("1.9.0")));
        assert!(compatible(&v("0.2.1"), &v("0.2.0")));
        assert!(!compatible(&v("0.3.0"), &v("0.2.0")));
        assert!(!compatible(&v("1.1.0-rc.1"), &v("1.1.0")));
        assert!(compatible(&v("1.1.0-rc.1"), &v("1.1.0-rc.1")));
        // wasmtime links no 0.0.z to another (alternate_lookup_key: None).
        assert!(!compatible(&v("0.0.2"), &v("0.0.1")));
        assert!(compatible(&v("0.0.1"), &v("0.0.1")));
    }

    #[test]
    fn rust_names_become_wit_names() {
        assert_eq!(wit_name("get_user"), "get-user");
        assert_eq!(wit_name("r#type"), "type");
        assert_eq!(wit_name("farewell"), "farewell");
    }

    #[test]
    fn an_unsupported_call_tells_no_address() {
        let bindings = [0u8; 16];
        let refused =
            Bound { version: "1.0.0" }.unsupported(&bindings, "greeter.say_bye", Some("1.1.0"));
        let refused = refused.downcast_ref::<Unsupported>().unwrap();
        assert!(refused.came_from(&bindings));
        assert!(!refused.came_from(&[0u8; 16]));
        let debug = format!("{refused:?}");
        assert!(!debug.contains("origin"), "{debug}");
        assert_eq!(
            refused.to_string(),
            "it is served as world version 1.0.0, which has no `greeter.say-bye` (new in 1.1.0)"
        );
    }
}
