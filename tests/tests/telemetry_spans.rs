//! The spans the library opens (`wasmplug::telemetry`), read by a real
//! `tracing` subscriber. In a test binary of its own: tracing caches
//! whether a callsite is wanted, and a test on another thread with no
//! subscriber could cache "no" under this test's scoped one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;
use wasmplug::reference::{GreeterPlugin, User};
use wasmplug::{Registry, Runtime};
use wasmplug_tests::guest;

/// A closed span: its name and fields.
type Closed = (String, BTreeMap<String, String>);

/// The spans closed so far.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<Closed>>>);

struct Fields(BTreeMap<String, String>);

struct Visitor<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Visitor(&mut fields));
        ctx.span(id)
            .unwrap()
            .extensions_mut()
            .insert(Fields(fields));
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let span = ctx.span(id).unwrap();
        let mut extensions = span.extensions_mut();
        let fields = extensions.get_mut::<Fields>().unwrap();
        values.record(&mut Visitor(&mut fields.0));
    }
    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let span = ctx.span(&id).unwrap();
        let fields = span.extensions().get::<Fields>().unwrap().0.clone();
        self.0
            .lock()
            .unwrap()
            .push((span.name().to_string(), fields));
    }
}

#[test]
fn each_call_load_and_swap_has_a_span_with_its_outcome_and_duration() {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    tracing::subscriber::with_default(subscriber, || {
        let runtime = Runtime::<GreeterPlugin>::new().unwrap();
        let registry = Registry::new();
        registry
            .activate(runtime.load(guest("hello-v1")).unwrap())
            .unwrap();
        let handle = registry.get("hello").unwrap();
        handle.call(|i| i.count()).unwrap();
        // A typed call names its export itself.
        handle
            .call(|i| {
                wasmplug::telemetry::export("greeter.welcome");
                i.call(|p, store| p.wasmplug_plugin_greeter().call_welcome(store, "Zoë"))
            })
            .unwrap();
        let nobody = User {
            name: String::new(),
            age: 1,
        };
        handle.call(|i| i.birthday(&nobody)).unwrap_err();
        registry
            .activate(runtime.load(guest("hello-v2")).unwrap())
            .unwrap();
        runtime.load_bytes("junk", b"junk").unwrap_err();
    });
    let spans = spans.0.lock().unwrap().clone();
    let named = |name: &str| -> Vec<&BTreeMap<String, String>> {
        spans
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, f)| f)
            .collect()
    };
    let calls = named("call");
    assert_eq!(calls.len(), 3, "{spans:#?}");
    let expected = [
        ("greeter.count", "ok"),
        ("greeter.welcome", "ok"),
        ("greeter.birthday", "guest"),
    ];
    for (call, (export, outcome)) in calls.iter().zip(expected) {
        assert_eq!(call["plugin"], "hello@1.0.0", "{call:?}");
        assert_eq!(call["export"], export, "{call:?}");
        assert_eq!(call["outcome"], outcome, "{call:?}");
        assert!(call["duration_us"].parse::<u64>().is_ok(), "{call:?}");
    }
    let loads = named("load");
    assert_eq!(loads.len(), 3, "{spans:#?}");
    assert_eq!(loads[0]["plugin"], "hello@1.0.0");
    assert_eq!(loads[0]["outcome"], "ok");
    assert_eq!(loads[2]["outcome"], "load", "{:?}", loads[2]);
    assert!(loads[2]["source"].contains("junk"), "{:?}", loads[2]);
    let activations = named("activate");
    let outcomes: Vec<&str> = activations.iter().map(|a| a["outcome"].as_str()).collect();
    assert_eq!(outcomes, ["installed", "swapped"]);
    assert_eq!(activations[1]["plugin"], "hello@2.0.0");
}
