//! `broken-init`: a correctly typed greeter plugin whose `init` fails. By
//! default `init` returns `Err("missing configuration: greeting")`; with the
//! cargo feature `trap` it panics (a trap) instead. It serves the tests that
//! a plugin whose `init` fails is refused (no instance is handed out) and
//! that a new version failing to initialise never replaces a working one in
//! a hot swap. The other exports work normally, so any failure the host
//! reports can only come from `init`.

use std::sync::atomic::{AtomicU32, Ordering};

wit_bindgen::generate!({
    world: "greeter-plugin",
    path: "../../wit",
});

use exports::wasmplug::plugin::{greeter, lifecycle};
use wasmplug::plugin::host::log;
use wasmplug::plugin::types::{Identity, Level, User};

const NAME: &str = "broken-init";
const VERSION: &str = "1.0.0";

static COUNTER: AtomicU32 = AtomicU32::new(0);

struct BrokenInit;

impl lifecycle::Guest for BrokenInit {
    fn identity() -> Identity {
        Identity {
            name: NAME.to_string(),
            version: VERSION.to_string(),
        }
    }

    #[cfg(not(feature = "trap"))]
    fn init() -> Result<(), String> {
        log(Level::Error, &format!("init {NAME}@{VERSION} failed"));
        Err("missing configuration: greeting".to_string())
    }

    #[cfg(feature = "trap")]
    fn init() -> Result<(), String> {
        log(
            Level::Error,
            &format!("init {NAME}@{VERSION} is about to trap"),
        );
        panic!("init exploded")
    }
}

impl greeter::Guest for BrokenInit {
    fn welcome(name: String) -> String {
        format!("Welcome, {name}!")
    }

    fn hello(who: User) -> String {
        format!("Hello, {}!", who.name)
    }

    fn count() -> u32 {
        COUNTER.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn birthday(who: User) -> Result<User, String> {
        if who.name.is_empty() {
            return Err("a user needs a name".to_string());
        }
        Ok(User {
            name: who.name,
            age: who.age.saturating_add(1),
        })
    }
}

export!(BrokenInit);
