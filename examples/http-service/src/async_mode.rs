//! Mode `async` (the default): wasmplug's tokio API. The axum handler awaits
//! [`Handle::try_call_async`]: no thread of the service's own, no queue of its
//! own. wasmplug does what the other modes do by hand:
//!
//! * a call runs on the request's task and moves to wasmplug's guest threads
//!   if it computes past one epoch tick, so a handler burning CPU to its
//!   deadline never holds an executor thread (and `/healthz` stays fast);
//! * each version serves through a pool of `workers` instances; a request
//!   waits at most `max_wait` for one, then gets 503 (`Error::Overloaded`);
//! * a request the client abandons stops its guest and its instance is
//!   replaced, never reused half-called;
//! * every call is counted, by outcome, and timed (`wasmplug::telemetry`),
//!   into the recorder `/metrics` reads.

use std::time::Duration;

use anyhow::Context as _;
use wasmplug::runtime::GuestPriority;
use wasmplug::wasmtime::component::{Instance as RawInstance, InstancePre, Linker};
use wasmplug::wasmtime::{self, Store};
use wasmplug::world::BoxFuture;
use wasmplug::{Identity, Policy, Registry, Runtime, State, World};

use crate::threads::{check_exports, classify, versions_of};
use crate::types::{HttpRequest, HttpResponse, Outcome, VersionGauge};
use crate::{Following, Sources};

/// `bindgen!` for `wit/handler.wit`, with async exports: what
/// `call_async` calls.
mod bindings {
    ::wasmplug::wasmtime::component::bindgen!({
        path: "wit/handler.wit",
        world: "http-handler",
        wasmtime_crate: ::wasmplug::wasmtime,
        exports: { default: async },
    });
}

use bindings::wasmplug::http_handler::types::Request as WitRequest;
use bindings::{HttpHandler, HttpHandlerIndices};

impl World for HttpHandler {
    const ASYNC: bool = true;
    type Data = ();
    type Indices = HttpHandlerIndices;

    fn add_to_linker(_: &mut Linker<State<()>>) -> wasmtime::Result<()> {
        Ok(()) // the world imports nothing but WASI, which wasmplug adds
    }

    fn indices(pre: &InstancePre<State<()>>) -> wasmtime::Result<HttpHandlerIndices> {
        check_exports(pre)?;
        HttpHandlerIndices::new(pre)
    }

    fn load(
        indices: &HttpHandlerIndices,
        store: &mut Store<State<()>>,
        instance: &RawInstance,
    ) -> wasmtime::Result<Self> {
        indices.load(store, instance)
    }

    fn identity_async<'a>(
        &'a self,
        store: &'a mut Store<State<()>>,
    ) -> BoxFuture<'a, wasmtime::Result<Option<Identity>>> {
        Box::pin(async move {
            let id = self
                .wasmplug_http_handler_lifecycle()
                .call_identity(&mut *store)
                .await?;
            Identity::parse(&id.name, &id.version)
                .map(Some)
                .map_err(wasmtime::Error::from_anyhow)
        })
    }

    fn init_async<'a>(
        &'a self,
        store: &'a mut Store<State<()>>,
    ) -> BoxFuture<'a, wasmtime::Result<Result<(), String>>> {
        Box::pin(self.wasmplug_http_handler_lifecycle().call_init(store))
    }
}

/// How the async mode runs.
pub struct Options {
    /// Instances per version: calls on one version at once.
    pub workers: usize,
    /// How long a request waits for an instance before it is answered 503.
    pub max_wait: Duration,
    /// Per-call deadline.
    pub deadline: Duration,
    /// Linear memory cap per instance, in bytes.
    pub memory_limit: usize,
    /// The OS priority of the threads that run computing guests.
    pub guest_priority: GuestPriority,
    /// How many threads run computing guests (default: one per CPU).
    pub guest_threads: Option<usize>,
}

/// The service on wasmplug's async API.
pub struct Service {
    registry: Registry<HttpHandler>,
    _sources: Following,
}

impl Service {
    /// Load every plugin from `sources` and keep following them. Blocks
    /// while the first components compile: call it off the executor.
    pub fn start(sources: &Sources, options: Options) -> anyhow::Result<super::Backend> {
        let policy = Policy::default()
            .deadline(options.deadline)
            .memory_limit(options.memory_limit);
        let mut runtime = Runtime::<HttpHandler>::builder()
            .policy(policy)
            .guest_priority(options.guest_priority);
        if let Some(threads) = options.guest_threads {
            runtime = runtime.guest_threads(threads);
        }
        let runtime = runtime.build().context("building the wasmplug runtime")?;
        let registry = Registry::<HttpHandler>::with_pool_size(options.workers)
            .with_max_wait(Some(options.max_wait));
        let following = sources.start(runtime, registry.clone())?;
        Ok(super::Backend::Async(Service {
            registry,
            _sources: following,
        }))
    }

    /// Call plugin `name` with `req`: awaited on the request's own task.
    pub async fn call(&self, name: &str, req: HttpRequest) -> Outcome {
        let Ok(handle) = self.registry.get(name) else {
            return Outcome::NotLoaded;
        };
        let req = WitRequest {
            method: req.method,
            path: req.path,
            query: req.query,
            headers: req.headers,
            body: req.body,
        };
        let answer = handle
            .try_call_async(move |plugin, store| {
                Box::pin(async move {
                    plugin
                        .wasmplug_http_handler_handler()
                        .call_handle(store, &req)
                        .await
                })
            })
            .await;
        match answer {
            Ok(resp) => Outcome::Answered(HttpResponse {
                status: resp.status,
                headers: resp.headers,
                body: resp.body,
            }),
            Err(err) => classify(err),
        }
    }

    /// Every loaded version.
    pub fn versions(&self) -> Vec<VersionGauge> {
        versions_of(&self.registry)
    }
}
