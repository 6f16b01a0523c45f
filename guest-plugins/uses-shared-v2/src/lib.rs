//! `uses-shared-v2`: a greeter plugin built against `shared-dep` 2.0.0,
//! while `uses-shared-v1` is built against the incompatible 1.0.0. The
//! seed's Go host refused the second of two such plugins ("plugin was built
//! with a different version of package"), and shared the package's globals
//! between plugins (pitfall 4). Here both load side by side, `count()` is
//! the shared crate's global counter: if globals were shared between plugins
//! (or instances), their counts would interleave.

use std::sync::atomic::{AtomicBool, Ordering};

wit_bindgen::generate!({
    world: "greeter-plugin",
    path: "../../wit",
});

use exports::wasmplug::plugin::{greeter, lifecycle};
use wasmplug::plugin::host::log;
use wasmplug::plugin::types::{Identity, Level, User};

const NAME: &str = "uses-shared-v2";
const VERSION: &str = "1.0.0";

/// Set by `init`. Every instance has its own linear memory, so its own flag.
static INITIALISED: AtomicBool = AtomicBool::new(false);

/// Trap (panic = abort) if the host skipped `init` for this instance.
fn require_init() {
    if !INITIALISED.load(Ordering::Relaxed) {
        panic!("greeter called before init");
    }
}

struct UsesShared;

impl lifecycle::Guest for UsesShared {
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

impl greeter::Guest for UsesShared {
    fn welcome(name: String) -> String {
        require_init();
        format!("Welcome, {name}! (shared-dep {})", shared_dep::VERSION)
    }

    fn hello(who: User) -> String {
        require_init();
        format!("Hello, {}! (shared-dep {})", who.name, shared_dep::VERSION)
    }

    fn count() -> u32 {
        require_init();
        shared_dep::bump(1)
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

export!(UsesShared);
