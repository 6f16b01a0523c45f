//! `hello-mistyped`: a deliberately wrong plugin. It is built from its own
//! copy of the WIT (`wit/plugin.wit` in this crate), which claims to be
//! `wasmplug:plugin@1.0.0` but declares `greeter.hello` with a `string`
//! instead of the `user` record. It serves the seed's pitfall 5 (host and
//! plugin disagreeing on a type): wasmplug must refuse it when it is loaded,
//! with an error naming `hello` and both the expected and the found type,
//! not fail at the first call.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

#[cfg(not(feature = "wit-1-1"))]
wit_bindgen::generate!({
    world: "greeter-plugin",
    path: "wit",
});
// With feature `wit-1-1`: world 1.1.0 whose `farewell` returns a `u32`
// (`wit/v1.1/plugin.wit`); `hello` is right there, so `farewell` is the one
// wrong item.
#[cfg(feature = "wit-1-1")]
wit_bindgen::generate!({
    world: "greeter-plugin",
    path: "wit/v1.1",
});

use exports::wasmplug::plugin::{greeter, lifecycle};
use wasmplug::plugin::host::log;
use wasmplug::plugin::types::{Identity, Level, User};

const NAME: &str = "hello-mistyped";
const VERSION: &str = "1.0.0";

static INITIALISED: AtomicBool = AtomicBool::new(false);
static COUNTER: AtomicU32 = AtomicU32::new(0);

fn require_init() {
    if !INITIALISED.load(Ordering::Relaxed) {
        panic!("greeter called before init");
    }
}

struct HelloMistyped;

impl lifecycle::Guest for HelloMistyped {
    fn identity() -> Identity {
        Identity {
            name: NAME.to_string(),
            version: VERSION.to_string(),
        }
    }

    fn init() -> Result<(), String> {
        INITIALISED.store(true, Ordering::Relaxed);
        log(Level::Info, &format!("init {NAME}@{VERSION}"));
        Ok(())
    }
}

impl greeter::Guest for HelloMistyped {
    fn welcome(name: String) -> String {
        require_init();
        format!("Welcome, {name}!")
    }

    /// The wrong signature: a `string`, not a `user`.
    #[cfg(not(feature = "wit-1-1"))]
    fn hello(who: String) -> String {
        require_init();
        format!("Hello, {who}!")
    }

    #[cfg(feature = "wit-1-1")]
    fn hello(who: User) -> String {
        require_init();
        format!("Hello, {}!", who.name)
    }

    /// The wrong signature: a `u32`, not a `string`.
    #[cfg(feature = "wit-1-1")]
    fn farewell(name: String) -> u32 {
        require_init();
        name.len() as u32
    }

    fn count() -> u32 {
        require_init();
        COUNTER.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn birthday(who: User) -> Result<User, String> {
        require_init();
        if who.name.is_empty() {
            return Err("a user needs a name".to_string());
        }
        Ok(User {
            name: who.name,
            age: who.age.saturating_add(1),
        })
    }
}

export!(HelloMistyped);
