//! `just demo`: the six pitfalls of Go's `plugin` package, each shown with
//! live plugins: what Go does, then what wasmplug does.

use wasmplug::reference::{GreeterPlugin, User};
use wasmplug::Runtime;
use wasmplug_tests::{guest, guest_bytes, rss_kib, with_custom_section, TempDir};

type Result<T = ()> = anyhow::Result<T>;

fn heading(n: u32, title: &str, go: &str) {
    println!("\n{n}. {title}");
    println!("   Go:       {go}");
}

fn ours(text: impl AsRef<str>) {
    println!("   wasmplug: {}", text.as_ref());
}

fn main() -> Result {
    println!("wasmplug demo: Go's plugin pitfalls, with live WebAssembly component plugins");
    let rt = Runtime::<GreeterPlugin>::new()?;

    heading(
        1,
        "The same file loaded twice",
        "plugin.Open returns the same object and init() runs once: no second copy.",
    );
    let first = rt.load(guest("hello-v1"))?;
    let second = rt.load(guest("hello-v1"))?;
    let (mut a, mut b) = (first.instantiate()?, second.instantiate()?);
    let counts_a = [a.count()?, a.count()?, a.count()?];
    ours(format!(
        "two plugins sharing compiled code ({}); init ran in each instance; \
         instance A counts {counts_a:?} while B counts [{}]",
        first.shares_code_with(&second),
        b.count()?
    ));

    heading(
        2,
        "Two versions of one plugin",
        "plugin.Open(\"./lib/welcom\"): plugin already loaded",
    );
    let v2 = rt.load(guest("hello-v2"))?;
    let mut two = v2.instantiate()?;
    ours(format!("{} says {:?}", first.label(), a.welcome("Gopher")?));
    ours(format!("{} says {:?}", v2.label(), two.welcome("Gopher")?));

    heading(
        3,
        "A byte-identical copy under another name",
        "plugin already loaded",
    );
    let dir = TempDir::new("demo");
    let copy = dir.path().join("hello-copy.wasm");
    std::fs::copy(guest("hello-v1"), &copy)?;
    let twin = rt.load(&copy)?;
    ours(format!(
        "{} loaded from {} beside the original (same hash {}, compiled once: {}); it says {:?}",
        twin.label(),
        copy.file_name().unwrap().to_string_lossy(),
        twin.content_hash().short(),
        twin.shares_code_with(&first),
        twin.instantiate()?.welcome("twin")?
    ));

    heading(
        4,
        "Two plugins built against two versions of a shared crate",
        "globals are shared, and: plugin was built with a different version of package test_plugin/shared",
    );
    let mut s1 = rt.load(guest("uses-shared-v1"))?.instantiate()?;
    let mut s2 = rt.load(guest("uses-shared-v2"))?.instantiate()?;
    let global_1 = [s1.count()?, s1.count()?, s1.count()?];
    ours(format!("{:?}", s1.welcome("A")?));
    ours(format!("{:?}", s2.welcome("B")?));
    ours(format!(
        "the crate's global counter: {global_1:?} in one plugin, [{}] in the other: not shared",
        s2.count()?
    ));

    heading(
        5,
        "The host's User and the plugin's User",
        "interface conversion: plugin.Symbol is func(*main.User), not func(*main.User) (types from different scopes)",
    );
    let gopher = User {
        name: "Gopher".into(),
        age: 13,
    };
    ours(format!("hello(user) -> {:?}", two.hello(&gopher)?));
    match rt.load(guest("hello-mistyped")) {
        Ok(_) => anyhow::bail!("the mistyped plugin loaded: the load-time type check is broken"),
        Err(err) => ours(format!(
            "a mistyped plugin is refused at load:\n             {err}"
        )),
    }

    heading(
        6,
        "Unloading",
        "plugins can never be unloaded: +1,836 KiB RSS per version (200 versions: 4.5 MB -> 372 MB)",
    );
    drop((first, second, a, b, v2, two, twin, s1, s2));
    unloading(&rt)?;
    Ok(())
}

fn unloading(rt: &Runtime<GreeterPlugin>) -> Result {
    let base = guest_bytes("hello-v1");
    let load_call_drop = |n: u32| -> Result {
        let bytes = with_custom_section(&base, "wasmplug-demo-version", &n.to_le_bytes());
        let plugin = rt.load_bytes(&format!("hello-build-{n}"), &bytes)?;
        plugin.instantiate()?.count()?;
        Ok(())
    };
    for n in 0..20 {
        load_call_drop(n)?; // warm-up
    }
    let baseline = rss_kib();
    println!("   wasmplug: each version is a distinct component (its own hash), compiled, called, dropped");
    println!(
        "             {:>28}  {:>10}  {:>10}",
        "", "RSS KiB", "growth"
    );
    println!(
        "             {:>28}  {baseline:>10}  {:>10}",
        "after warm-up", ""
    );
    for n in 1..=200u32 {
        load_call_drop(1_000 + n)?;
        if n % 50 == 0 {
            let rss = rss_kib();
            let row = format!("after {n} versions");
            println!(
                "             {row:>28}  {rss:>10}  {:>+10}",
                rss as i64 - baseline as i64
            );
        }
    }
    let plugin = rt.load(guest("hello-v1"))?;
    for _ in 0..10_000 {
        plugin.instantiate()?.count()?;
    }
    let rss = rss_kib();
    let row = "+ 10,000 instances";
    println!(
        "             {row:>28}  {rss:>10}  {:>+10}",
        rss as i64 - baseline as i64
    );
    drop(plugin);
    println!(
        "             compiled components still alive: {} (Go would hold 200 versions: ~{} MiB)",
        rt.compiled_count(),
        200 * 1836 / 1024
    );
    Ok(())
}
