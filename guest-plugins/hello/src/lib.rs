//! `hello`: the reference greeter plugin, the component answer to the Go
//! seed's `welcom` plugin. One source builds two versions: 1.0.0 by default
//! and 2.0.0 with the cargo feature `v2` (different greetings), so the tests
//! can load two versions of one plugin side by side (pitfall 2), the same
//! bytes twice or under another name (pitfalls 1 and 3), pass the shared
//! `user` record (pitfall 5), and prove each instance has its own counter and
//! ran its own `init`.
//!
//! It exports `handoff`, so a hot swap carries its counter over. Version
//! 3.0.0 (feature `v3`) refuses the state of earlier versions.
//!
//! Version 1.1.0 (feature `wit-1-1`) is built against world 1.1.0
//! (`wit/v1.1`): it adds `farewell`, and its `welcome` uses the embedder's
//! `greeting` setting (the 1.1 `config` import) when there is one. It reads
//! and writes the same handoff state as 1.0.0, so a swap between the two
//! carries the counter either way.
//!
//! With the feature `random-init`, 1.0.0's `init` reads random numbers
//! (it makes a hash map's keys), which a snapshot must not freeze.
//!
//! Version 2.0.0 has one deliberate bug: `hello` traps for a user aged
//! `u32::MAX` (an overflow). The tests use it to prove a trap poisons only the
//! instance it happened in.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

#[cfg(not(feature = "wit-1-1"))]
wit_bindgen::generate!({
    world: "greeter-plugin-stateful",
    path: "../../wit",
});
#[cfg(feature = "wit-1-1")]
wit_bindgen::generate!({
    world: "greeter-plugin-stateful",
    path: "../../wit/v1.1",
});

use exports::wasmplug::plugin::{greeter, handoff, lifecycle};
use wasmplug::plugin::host::log;
use wasmplug::plugin::types::{Identity, Level, User};

#[cfg(not(any(feature = "v2", feature = "v3", feature = "wit-1-1")))]
const VERSION: &str = "1.0.0";
#[cfg(feature = "wit-1-1")]
const VERSION: &str = "1.1.0";
#[cfg(all(feature = "v2", not(feature = "v3")))]
const VERSION: &str = "2.0.0";
#[cfg(feature = "v3")]
const VERSION: &str = "3.0.0";

/// The format of this plugin's handoff state: a tag, then the counter as
/// little-endian u32. Versions 1 and 2 read it; version 3 refuses it.
const STATE_TAG: &[u8] = b"hello-state/1:";

/// Set by `init`. Every instance has its own linear memory, so its own flag.
static INITIALISED: AtomicBool = AtomicBool::new(false);
/// This instance's counter; never shared with another instance.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// What `init` drew from a hash map's random keys (feature `random-init`).
#[cfg(feature = "random-init")]
static SEED: AtomicU32 = AtomicU32::new(0);

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
        // A hash map's keys are random: an `init` that a snapshot must not
        // freeze (feature `random-init`, host/tests/snapshot.rs).
        #[cfg(feature = "random-init")]
        {
            use std::hash::BuildHasher;
            let keys = std::collections::hash_map::RandomState::new();
            SEED.store(keys.hash_one(0u8) as u32, Ordering::Relaxed);
        }
        log(Level::Info, &format!("init hello@{VERSION}"));
        Ok(())
    }
}

/// `welcome("spin:N")`: N rounds of arithmetic (three times N in the
/// `slow` variant), for a call of a chosen cost.
fn spin(rounds: u64) -> u64 {
    let rounds = if cfg!(feature = "slow") {
        rounds * 3
    } else {
        rounds
    };
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    for i in 0..rounds {
        x = std::hint::black_box(x.rotate_left(5) ^ i).wrapping_mul(0x100_0000_01b3);
    }
    x
}

impl greeter::Guest for Hello {
    fn welcome(name: String) -> String {
        require_init();
        if let Some(rounds) = name.strip_prefix("spin:").and_then(|n| n.parse().ok()) {
            return format!("spun {:x}", spin(rounds));
        }
        #[cfg(feature = "flaky")]
        if let Some(n) = name
            .rsplit(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|digits| digits.parse::<u64>().ok())
        {
            assert!(n % 20 != 0, "flaky: input {n} is a multiple of 20");
        }
        #[cfg(feature = "sockets")]
        if let Some(addr) = name.strip_prefix("tcp:") {
            return match std::net::TcpStream::connect(addr) {
                Ok(_) => format!("connected to {addr}"),
                Err(e) => format!("no connection to {addr}: {e}"),
            };
        }
        #[cfg(feature = "wit-1-1")]
        if let Some(greeting) = wasmplug::plugin::config::get("greeting") {
            return format!("{greeting}, {name}!");
        }
        if cfg!(feature = "v3") {
            format!("Greetings, {name}!")
        } else if cfg!(feature = "v2") {
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

    #[cfg(feature = "wit-1-1")]
    fn farewell(name: String) -> String {
        require_init();
        format!("Goodbye, {name}!")
    }
}

impl handoff::Guest for Hello {
    fn snapshot() -> Vec<u8> {
        let mut state = STATE_TAG.to_vec();
        state.extend_from_slice(&COUNTER.load(Ordering::Relaxed).to_le_bytes());
        state
    }

    fn restore(state: Vec<u8>) -> Result<(), String> {
        if cfg!(feature = "v3") {
            return Err(format!(
                "hello@{VERSION} cannot read state of earlier versions"
            ));
        }
        let count = state
            .strip_prefix(STATE_TAG)
            .and_then(|rest| <[u8; 4]>::try_from(rest).ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| "unrecognised hello state".to_string())?;
        COUNTER.store(count, Ordering::Relaxed);
        Ok(())
    }
}

export!(Hello);
