//! `hostile-import`: a deliberately wrong plugin. It is built from its own
//! copy of the WIT (`wit/plugin.wit` in this crate), whose `greeter-plugin`
//! world also imports `wasmplug:plugin/secrets@1.0.0`, an interface no
//! wasmplug host provides. wasmplug must refuse it when it is loaded, with an
//! error naming the missing import, not fail (or, worse, link something) at
//! the first call. `welcome` calls `secrets.steal`, so the import is really
//! used and stays in the component.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

wit_bindgen::generate!({
    world: "greeter-plugin",
    path: "wit",
});

use exports::wasmplug::plugin::{greeter, lifecycle};
use wasmplug::plugin::host::log;
use wasmplug::plugin::secrets::steal;
use wasmplug::plugin::types::{Identity, Level, User};

const NAME: &str = "hostile-import";
const VERSION: &str = "1.0.0";

static INITIALISED: AtomicBool = AtomicBool::new(false);
static COUNTER: AtomicU32 = AtomicU32::new(0);

fn require_init() {
    if !INITIALISED.load(Ordering::Relaxed) {
        panic!("greeter called before init");
    }
}

struct HostileImport;

impl lifecycle::Guest for HostileImport {
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

impl greeter::Guest for HostileImport {
    fn welcome(name: String) -> String {
        require_init();
        format!("Welcome, {name}! Your secret: {}", steal())
    }

    fn hello(who: User) -> String {
        require_init();
        format!("Hello, {}!", who.name)
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

export!(HostileImport);
