//! wasmplug is not tied to its reference world: a service writes its own WIT
//! (`tests/wit/filter.wit`: no identity, no init, an import of its own),
//! runs `bindgen!` on it, implements `World`, and gets the same lifecycle.

use wasmplug::wasmtime::component::{HasSelf, Instance as RawInstance, InstancePre, Linker};
use wasmplug::wasmtime::{self, Store};
use wasmplug::{Error, Runtime, State, World};
use wasmplug_tests::guest;

wasmtime::component::bindgen!({
    path: "wit/filter.wit",
    world: "filter",
    wasmtime_crate: wasmplug::wasmtime,
});

/// The embedder's own per-instance state, behind its `settings` import.
#[derive(Default)]
pub struct Settings {
    mode: Option<String>,
}

impl acme::text::settings::Host for Settings {
    fn get(&mut self, key: String) -> Option<String> {
        match key.as_str() {
            "mode" => self.mode.clone(),
            _ => None,
        }
    }
}

impl World for Filter {
    type Data = Settings;
    type Indices = FilterIndices;

    fn add_to_linker(linker: &mut Linker<State<Settings>>) -> wasmtime::Result<()> {
        Filter::add_to_linker::<_, HasSelf<Settings>>(linker, State::data_mut)
    }

    fn indices(pre: &InstancePre<State<Settings>>) -> wasmtime::Result<FilterIndices> {
        FilterIndices::new(pre)
    }

    fn load(
        indices: &FilterIndices,
        store: &mut Store<State<Settings>>,
        instance: &RawInstance,
    ) -> wasmtime::Result<Self> {
        indices.load(store, instance)
    }
}

fn settings(mode: &str) -> Settings {
    Settings {
        mode: Some(mode.to_string()),
    }
}

#[test]
fn a_second_unrelated_world_gets_typed_calls_through_its_own_bindgen() {
    let rt = Runtime::<Filter>::new().unwrap();
    let plugin = rt.load(guest("text-filter")).unwrap();
    // No identity export: named after its file, version 0.0.0.
    assert_eq!(plugin.label(), "text-filter@0.0.0");

    let mut upper = plugin.instantiate_with(settings("upper")).unwrap();
    let mut reverse = plugin.instantiate_with(settings("reverse")).unwrap();
    let mut plain = plugin.instantiate().unwrap();

    let apply = |i: &mut wasmplug::Instance<Filter>, s: &str| {
        i.call(|filter, store| filter.call_apply(store, s)).unwrap()
    };
    assert_eq!(apply(&mut upper, "hello, wörld"), "HELLO, WÖRLD");
    assert_eq!(apply(&mut reverse, "hello"), "olleh");
    assert_eq!(apply(&mut plain, "hello"), "hello");

    // Each instance reads its own host state, and the embedder may change it.
    upper.data_mut().mode = Some("reverse".into());
    assert_eq!(apply(&mut upper, "abc"), "cba");
    assert_eq!(reverse.data().mode.as_deref(), Some("reverse"));
}

#[test]
fn a_plugin_of_the_reference_world_is_refused_by_a_filter_host() {
    let rt = Runtime::<Filter>::new().unwrap();
    let err = rt.load(guest("hello-v1")).unwrap_err();
    assert!(matches!(err, Error::Load { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("hello-v1.wasm"), "{message}");
    assert!(message.contains("imports do not match"), "{message}");
    assert!(message.contains("wasmplug:plugin/host@1.0.0"), "{message}");
}
