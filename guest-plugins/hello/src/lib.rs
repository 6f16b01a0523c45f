//! `hello`: the reference greeter plugin, the component answer to the Go
//! seed's `welcom` plugin. One source builds two versions: 1.0.0 by default
//! and 2.0.0 with the cargo feature `v2` (different greetings), so the tests
//! can load two versions of one plugin side by side (pitfall 2), the same
//! bytes twice or under another name (pitfalls 1 and 3), pass the shared
//! `user` record (pitfall 5), and prove each instance has its own counter and
//! ran its own `init`.
//!
//! Version 2.0.0 has one deliberate bug: `hello` traps for a user aged
//! `u32::MAX` (an overflow). The tests use it to prove a trap poisons only the
//! instance it happened in.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

wit_bindgen::generate!({
    world: "greeter-plugin",
    path: "../../wit",
});

use exports::wasmplug::plugin::{greeter, lifecycle};
use wasmplug::plugin::host::log;
use wasmplug::plugin::types::{Identity, Level, User};

#[cfg(not(feature = "v2"))]
const VERSION: &str = "1.0.0";
#[cfg(feature = "v2")]
const VERSION: &str = "2.0.0";

/// Set by `init`. Every instance has its own linear memory, so its own flag.
static INITIALISED: AtomicBool = AtomicBool::new(false);
/// This instance's counter; never shared with another instance.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Trap (panic = abort) if the host skipped `init` for this instance.
fn require_init() {
    if !INITIALISED.load(Ordering::Relaxed) {
        panic!("greeter called before init");
    }
}

struct Hello;

impl lifecycle::Guest for Hello {
    fn identity() -> Identity {
        Identity {
            name: "hello".to_string(),
            version: VERSION.to_string(),
        }
    }

    fn init() -> Result<(), String> {
        INITIALISED.store(true, Ordering::Relaxed);
        log(Level::Info, &format!("init hello@{VERSION}"));
        Ok(())
    }
}

impl greeter::Guest for Hello {
    fn welcome(name: String) -> String {
        require_init();
        if cfg!(feature = "v2") {
            format!("Welcome back, {name}!")
        } else {
            format!("Welcome, {name}!")
        }
    }

    fn hello(who: User) -> String {
        require_init();
        if cfg!(feature = "v2") {
            // A deliberate bug, kept for the crash-isolation tests: a user
            // aged u32::MAX overflows here and the instance traps.
            let next = who.age.checked_add(1).expect("age overflow");
            format!("Hello, {}, age {}! Next year {next}.", who.name, who.age)
        } else {
            format!("Hello, {}!", who.name)
        }
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

export!(Hello);
