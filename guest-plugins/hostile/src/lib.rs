//! `hostile`: a malicious plugin that implements the reference world
//! correctly, so it loads, and then attacks its host from inside. It serves
//! the sandbox tests: wasmplug must survive every attack, keep other plugins
//! serving, and grant nothing the embedder did not grant.
//!
//! `hello`, `count` and `birthday` behave like `hello` 1.0.0. The attack is
//! chosen by the argument of `welcome(cmd)`:
//!
//! | `cmd` | what it does |
//! |---|---|
//! | `loop` | spins forever (needs fuel or epoch interruption to stop) |
//! | `alloc` | allocates and touches 1 MiB chunks until allocation fails (a trap) |
//! | `recurse` | unbounded recursion: a stack overflow (a trap) |
//! | `read:<path>` | `ok:<contents>` or `error:<why>` |
//! | `list:<path>` | `ok:<name>,<name>,...` or `error:<why>` |
//! | `write:<path>` | writes `pwned` there: `ok` or `error:<why>` |
//! | `env` | every environment variable as `K=V`, joined with `;` |
//! | `args` | the command-line arguments, joined with a space |
//! | `flood:<n>` | prints `n` bytes to stdout in lines of 99 `x`, returns `flooded` |
//! | `print:<msg>` | prints `msg` and a newline to stdout, as is, returns `printed` |
//! | `log:<msg>` | sends `msg` (newlines, escape sequences and all) through `host.log` at `warn`, returns `logged` |
//! | `logflood:<n>` | sends `n` bytes through `host.log`, in messages of 1,000 `x`, returns `logged` |
//! | `huge:<n>` | returns `n` bytes of `y` |
//! | `connect:<addr>` | opens a TCP connection: `connected` or `error:<why>` |
//! | `listen:<addr>` | binds a TCP listener there: `listening:<local addr>` or `error:<why>` |
//! | `udp:<addr>` | sends one UDP datagram there: `sent` or `error:<why>` |
//! | `lookup:<name>` | resolves a host name (DNS): `resolved:<addrs>` or `error:<why>` |
//! | `sleep:<ms>` | sleeps through WASI (`subscribe-duration` + `poll`): `slept` |
//! | `remove:<path>` | removes a directory tree: `ok` or `error:<why>` |
//! | `time` | the wall clock, in seconds since the Unix epoch |
//! | `random` | 8 random bytes as 16 hex digits (see [`random`]) |
//! | anything else | `Welcome, <cmd>!` |
//!
//! With the cargo feature `init-loop` it is `hostile-init-loop`, whose `init`
//! spins forever: loading it must not hang the host. With `init-sleep` it is
//! `hostile-init-sleep`, whose `init` sleeps 60 s in a WASI host call, where
//! epoch interruption cannot reach it.

use std::hint::black_box;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

wit_bindgen::generate!({
    world: "greeter-plugin",
    path: "../../wit",
});

use exports::wasmplug::plugin::{greeter, lifecycle};
use wasmplug::plugin::host::log;
use wasmplug::plugin::types::{Identity, Level, User};

#[cfg(not(any(feature = "init-loop", feature = "init-sleep")))]
const NAME: &str = "hostile";
#[cfg(feature = "init-loop")]
const NAME: &str = "hostile-init-loop";
#[cfg(feature = "init-sleep")]
const NAME: &str = "hostile-init-sleep";
const VERSION: &str = "1.0.0";

/// One allocation of the `alloc` attack.
const CHUNK: usize = 1 << 20;
/// Write one byte every this many bytes, so every page (the host's 4 KiB
/// pages, hence every 64 KiB wasm page too) is really touched.
const TOUCH_STRIDE: usize = 4096;
/// Bytes per line of the `flood` attack: 99 `x` and a newline.
const FLOOD_LINE: usize = 100;
/// Bytes per message of the `logflood` attack.
const LOG_LINE: usize = 1000;

static INITIALISED: AtomicBool = AtomicBool::new(false);
static COUNTER: AtomicU32 = AtomicU32::new(0);

fn require_init() {
    if !INITIALISED.load(Ordering::Relaxed) {
        panic!("greeter called before init");
    }
}

/// Spin forever. `black_box` keeps the optimiser from proving the loop has
/// no effect and deleting it (an infinite loop without side effects would
/// otherwise be fair game).
fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = black_box(n).wrapping_add(1);
    }
}

/// Allocate 1 MiB chunks, touch every page of each, and keep them all,
/// until an allocation fails (`handle_alloc_error` aborts: a trap).
fn hoard() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // A zeroed allocation may come from fresh, untouched memory (dlmalloc
        // skips the memset then), hence the explicit writes.
        let mut chunk = vec![0u8; CHUNK];
        for byte in chunk.iter_mut().step_by(TOUCH_STRIDE) {
            *byte = 0xA5;
        }
        hoard.push(black_box(chunk));
        black_box(&hoard);
    }
}

/// Recurse without bound. The local array and the use of the result after
/// the call keep this a real, non-tail recursion with a real stack frame;
/// the (never true) `black_box` test keeps it from being flagged as
/// unconditional recursion.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    if black_box(depth) == u64::MAX {
        return 0;
    }
    let mut frame = [0u8; 256];
    frame[(depth % 256) as usize] = depth as u8;
    black_box(&mut frame);
    let below = recurse(black_box(depth + 1));
    black_box(below.wrapping_add(u64::from(frame[(depth % 256) as usize])))
}

fn read(path: &str) -> String {
    match std::fs::read_to_string(path) {
        Ok(contents) => format!("ok:{contents}"),
        Err(e) => format!("error:{e}"),
    }
}

fn list(path: &str) -> String {
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) => return format!("error:{e}"),
    };
    let mut names = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => names.push(entry.file_name().to_string_lossy().into_owned()),
            Err(e) => return format!("error:{e}"),
        }
    }
    format!("ok:{}", names.join(","))
}

fn write(path: &str) -> String {
    match std::fs::write(path, "pwned") {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("error:{e}"),
    }
}

fn env() -> String {
    std::env::vars()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}

fn args() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

/// Print `n` bytes to stdout: lines of 99 `x` and a newline, the last line
/// shorter, so exactly `n` bytes and every line ends in a newline.
fn flood(n: &str) -> String {
    let n: usize = match n.parse() {
        Ok(n) => n,
        Err(e) => return format!("error:{e}"),
    };
    let mut line = [b'x'; FLOOD_LINE];
    line[FLOOD_LINE - 1] = b'\n';
    // Write many lines per call: one host call per 100 bytes would make a
    // large flood slow for the guest, not for the host.
    let block = line.repeat(100);
    let mut out = std::io::stdout().lock();
    let mut left = n;
    while left >= FLOOD_LINE {
        let whole = (left / FLOOD_LINE).min(100) * FLOOD_LINE;
        if let Err(e) = out.write_all(&block[..whole]) {
            return format!("error:{e}");
        }
        left -= whole;
    }
    if left > 0 {
        let mut last = vec![b'x'; left];
        last[left - 1] = b'\n';
        if let Err(e) = out.write_all(&last) {
            return format!("error:{e}");
        }
    }
    if let Err(e) = out.flush() {
        return format!("error:{e}");
    }
    "flooded".to_string()
}

/// Send `n` bytes through `host.log`, in messages of [`LOG_LINE`] `x`, the
/// last one shorter.
fn log_flood(n: &str) -> String {
    let mut left: usize = match n.parse() {
        Ok(n) => n,
        Err(e) => return format!("error:{e}"),
    };
    let line = "x".repeat(LOG_LINE);
    while left > 0 {
        let len = left.min(LOG_LINE);
        log(Level::Info, &line[..len]);
        left -= len;
    }
    "logged".to_string()
}

fn huge(n: &str) -> String {
    match n.parse::<usize>() {
        Ok(n) => "y".repeat(n),
        Err(e) => format!("error:{e}"),
    }
}

fn connect(addr: &str) -> String {
    match std::net::TcpStream::connect(addr) {
        Ok(_) => "connected".to_string(),
        Err(e) => format!("error:{e}"),
    }
}

fn listen(addr: &str) -> String {
    match std::net::TcpListener::bind(addr) {
        Ok(listener) => match listener.local_addr() {
            Ok(local) => format!("listening:{local}"),
            Err(e) => format!("error:{e}"),
        },
        Err(e) => format!("error:{e}"),
    }
}

fn udp(addr: &str) -> String {
    let socket = match std::net::UdpSocket::bind("0.0.0.0:0") {
        Ok(socket) => socket,
        Err(e) => return format!("error:{e}"),
    };
    match socket.send_to(b"exfiltrated", addr) {
        Ok(_) => "sent".to_string(),
        Err(e) => format!("error:{e}"),
    }
}

fn lookup(name: &str) -> String {
    use std::net::ToSocketAddrs;
    match (name, 80).to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
            format!("resolved:{}", addrs.join(","))
        }
        Err(e) => format!("error:{e}"),
    }
}

fn sleep(ms: &str) -> String {
    match ms.parse() {
        Ok(ms) => {
            std::thread::sleep(std::time::Duration::from_millis(ms));
            "slept".to_string()
        }
        Err(e) => format!("error:{e}"),
    }
}

fn remove(path: &str) -> String {
    match std::fs::remove_dir_all(path) {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("error:{e}"),
    }
}

fn time() -> String {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(since) => since.as_secs().to_string(),
        Err(e) => format!("error:{e}"),
    }
}

/// 8 random bytes as 16 hex digits. Stable std has no random API, so this
/// hashes nothing with a fresh `RandomState`, whose keys std draws from the
/// host's random source; good enough to tell whether the host provides one.
fn random() -> String {
    use std::hash::{BuildHasher, Hasher};
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{bits:016x}")
}

struct Hostile;

impl lifecycle::Guest for Hostile {
    fn identity() -> Identity {
        Identity {
            name: NAME.to_string(),
            version: VERSION.to_string(),
        }
    }

    fn init() -> Result<(), String> {
        log(Level::Info, &format!("init {NAME}@{VERSION}"));
        if cfg!(feature = "init-loop") {
            spin();
        }
        if cfg!(feature = "init-sleep") {
            std::thread::sleep(std::time::Duration::from_secs(60));
        }
        INITIALISED.store(true, Ordering::Relaxed);
        Ok(())
    }
}

impl greeter::Guest for Hostile {
    fn welcome(cmd: String) -> String {
        require_init();
        match cmd.as_str() {
            "loop" => spin(),
            "alloc" => hoard(),
            "recurse" => recurse(0).to_string(),
            "env" => env(),
            "args" => args(),
            "time" => time(),
            "random" => random(),
            _ => match cmd.split_once(':') {
                Some(("read", path)) => read(path),
                Some(("list", path)) => list(path),
                Some(("write", path)) => write(path),
                Some(("flood", n)) => flood(n),
                Some(("print", msg)) => {
                    println!("{msg}");
                    "printed".to_string()
                }
                Some(("log", msg)) => {
                    log(Level::Warn, msg);
                    "logged".to_string()
                }
                Some(("logflood", n)) => log_flood(n),
                Some(("huge", n)) => huge(n),
                Some(("connect", addr)) => connect(addr),
                Some(("listen", addr)) => listen(addr),
                Some(("udp", addr)) => udp(addr),
                Some(("lookup", name)) => lookup(name),
                Some(("sleep", ms)) => sleep(ms),
                Some(("remove", path)) => remove(path),
                _ => format!("Welcome, {cmd}!"),
            },
        }
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

export!(Hostile);
