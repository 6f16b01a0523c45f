//! `http-handler`: the handler plugin of the example HTTP service
//! (`examples/http-service`, world `wasmplug:http-handler/http-handler`). It
//! calls itself `echo`, so the service mounts it at `/echo/`. One source
//! builds two versions: 1.0.0 by default and 2.0.0 with the cargo feature
//! `v2`, whose body reads differently, so a hot swap shows from outside.
//!
//! * any path: 200, `text/plain`, the body names the version, the method and
//!   the path (v2 adds the query, the header count and the body size), then
//!   the request body; the response carries `x-plugin: echo@VERSION` and
//!   every `x-echo-*` request header back;
//! * `/status/NNN`: a response with status NNN, the plugin's own answer (not
//!   an error);
//! * `/error`: the plugin returns an error (the host answers 500 and counts
//!   an error);
//! * `/trap`: the plugin panics, which traps its instance (500, counted as a
//!   trap; the host replaces the instance);
//! * `/spin/MS`: burns CPU for MS milliseconds (at most 5,000) before
//!   answering as for any path: a slow handler, for the deadline and for
//!   measuring what slow guest code does to the host.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

wit_bindgen::generate!({
    world: "http-handler",
    path: "../../examples/http-service/wit/handler.wit",
});

use exports::wasmplug::http_handler::{handler, lifecycle};
use wasmplug::http_handler::types::{Identity, Request, Response};

#[cfg(not(feature = "v2"))]
const VERSION: &str = "1.0.0";
#[cfg(feature = "v2")]
const VERSION: &str = "2.0.0";

/// Set by `init`. Every instance has its own linear memory, so its own flag.
static INITIALISED: AtomicBool = AtomicBool::new(false);

struct Echo;

impl lifecycle::Guest for Echo {
    fn identity() -> Identity {
        Identity {
            name: "echo".to_string(),
            version: VERSION.to_string(),
        }
    }

    fn init() -> Result<(), String> {
        INITIALISED.store(true, Ordering::Relaxed);
        Ok(())
    }
}

impl handler::Guest for Echo {
    fn handle(req: Request) -> Result<Response, String> {
        // Trap (panic = abort) if the host skipped `init` for this instance.
        assert!(
            INITIALISED.load(Ordering::Relaxed),
            "handle called before init"
        );
        match req.path.as_str() {
            "/error" => {
                return Err(format!(
                    "deliberate error from echo@{VERSION} for {} {}",
                    req.method, req.path
                ))
            }
            "/trap" => panic!("deliberate trap in echo@{VERSION}"),
            _ => {}
        }
        if let Some(ms) = req.path.strip_prefix("/spin/") {
            let ms: u64 = ms.parse().map_err(|_| format!("not a duration: {ms}"))?;
            spin(Duration::from_millis(ms.min(5_000)));
        }
        let status = match req.path.strip_prefix("/status/") {
            Some(code) => code
                .parse::<u16>()
                .map_err(|_| format!("not a status code: {code}"))?,
            None => 200,
        };

        let mut headers = vec![
            (
                "content-type".to_string(),
                "text/plain; charset=utf-8".to_string(),
            ),
            ("x-plugin".to_string(), format!("echo@{VERSION}")),
        ];
        headers.extend(
            req.headers
                .iter()
                .filter(|(name, _)| name.starts_with("x-echo-"))
                .cloned(),
        );

        let mut body = if cfg!(feature = "v2") {
            let query = if req.query.is_empty() {
                String::new()
            } else {
                format!("?{}", req.query)
            };
            format!(
                "echo@{VERSION} says: {} {}{query} ({} headers, {} body bytes)\n",
                req.method,
                req.path,
                req.headers.len(),
                req.body.len()
            )
        } else {
            format!("echo@{VERSION}: {} {}\n", req.method, req.path)
        }
        .into_bytes();
        body.extend_from_slice(&req.body);

        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// Busy-wait for `how_long`: pure guest CPU, no host call but the clock.
fn spin(how_long: Duration) {
    let until = Instant::now() + how_long;
    let mut n = 0u64;
    while Instant::now() < until {
        for _ in 0..1_000 {
            n = std::hint::black_box(n.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

export!(Echo);
