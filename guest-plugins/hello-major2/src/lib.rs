//! `hello-major2`: a greeter built against world `wasmplug:plugin@2.0.0`
//! (`wit/plugin.wit` in this crate), a breaking change over 1.x: `welcome`
//! takes a `user`. A host serving 1.x must refuse it at load with an error
//! naming the world version it targets and the ones the host serves.

wit_bindgen::generate!({
    world: "greeter-plugin",
    path: "wit",
});

use exports::wasmplug::plugin::{greeter, lifecycle};
use wasmplug::plugin::types::{Identity, User};

struct HelloMajor2;

impl lifecycle::Guest for HelloMajor2 {
    fn identity() -> Identity {
        Identity {
            name: "hello".to_string(),
            version: "2.0.0".to_string(),
        }
    }

    fn init() -> Result<(), String> {
        Ok(())
    }
}

impl greeter::Guest for HelloMajor2 {
    fn welcome(who: User) -> String {
        format!("Welcome, {}!", who.name)
    }

    fn hello(who: User) -> String {
        format!("Hello, {}!", who.name)
    }

    fn count() -> u32 {
        0
    }

    fn birthday(who: User) -> Result<User, String> {
        Ok(who)
    }

    fn farewell(name: String) -> String {
        format!("Goodbye, {name}!")
    }
}

export!(HelloMajor2);
