//! `just demo`: the six pitfalls of Go's `plugin` package, each shown with
//! live plugins: what Go does, then what wasmplug does. Then (7.) the same
//! scenarios with a Go plugin: wasmplug with the Go guest (hello-go), and,
//! where a Go toolchain is installed, Go's own `plugin` package on a native
//! build of the same greeter (guest-plugins/go-native/), both measured in
//! this run and printed side by side.
//!
//! `DEMO_GO_VERSIONS=N` sets how many distinct versions section 7 loads on
//! each side (default 30: each Go guest version compiles for about a second;
//! 200 takes the demo to about five minutes).

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wasmplug::reference::versions::Greeter;
use wasmplug::reference::{GreeterPlugin, User};
use wasmplug::Runtime;
use wasmplug_tests::{
    dist_dir, guest, guest_bytes, repo_root, rss_kib, with_custom_section, TempDir,
};

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

    go_side_by_side(&rt)?;
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

/// Section 7, the scenarios with a Go plugin: wasmplug with hello-go, then Go's own
/// plugin package (guest-plugins/go-native/), then both in one table.
fn go_side_by_side(rt: &Runtime<GreeterPlugin>) -> Result {
    let versions: u32 = match std::env::var("DEMO_GO_VERSIONS") {
        Ok(n) => n.parse()?,
        Err(_) => 30,
    };
    println!(
        "\n7. The same scenarios with a Go plugin: Go's plugin package vs wasmplug with the Go \
         guest (hello-go), both measured now ({versions} distinct versions each)"
    );
    let wasm = go_guest(rt, versions)?;
    let native = go_native(versions)?;
    if wasm.is_none() && native.is_none() {
        return Ok(());
    }
    let (have_wasm, have_native) = (wasm.is_some(), native.is_some());
    let wasm = wasm.unwrap_or_default();
    let native = native.unwrap_or_default();
    let go = |key: &str| native.get(key).cloned().unwrap_or_else(|| "-".into());
    let kib = |key: &str| native.get(key).and_then(|v| v.parse::<i64>().ok());
    let mut rows: Vec<[String; 3]> = Vec::new();
    let not_run = |ran: bool, text: String| {
        if ran {
            text
        } else {
            "not run (see above)".to_string()
        }
    };
    rows.push([
        "same file opened twice".into(),
        not_run(
            have_native,
            format!(
                "same object: {}; init ran {}x; counts A {} then B {}",
                go("twice.same_object"),
                go("twice.inits"),
                go("twice.counts_a"),
                go("twice.count_b")
            ),
        ),
        not_run(have_wasm, wasm.get("twice")),
    ]);
    rows.push([
        "first open / load (ms)".into(),
        not_run(have_native, format!("{} ms (dlopen)", go("first_open_ms"))),
        not_run(have_wasm, wasm.get("first_load")),
    ]);
    rows.push([
        "a second version, same package/name".into(),
        not_run(
            have_native,
            format!(
                "{} (RSS +{} KiB anyway)",
                go("second_version.error"),
                go("second_version.rss_growth_kib")
            ),
        ),
        not_run(have_wasm, wasm.get("versions")),
    ]);
    rows.push([
        "a byte-identical copy under another name".into(),
        not_run(
            have_native,
            format!(
                "{} (RSS +{} KiB anyway)",
                go("copy.error"),
                go("copy.rss_growth_kib")
            ),
        ),
        not_run(have_wasm, wasm.get("copy")),
    ]);
    rows.push([
        "two plugins, two versions of a shared package".into(),
        not_run(
            have_native,
            format!(
                "first loads (shared counter {}); second: {}",
                go("shared.first_counts"),
                go("shared.second_error")
            ),
        ),
        "no Go pair built: see 4. (Rust pair: both load, globals not shared)".into(),
    ]);
    let n = go("versions.n");
    let native_versions = match (kib("versions.baseline_kib"), kib("versions.final_kib")) {
        (Some(base), Some(last)) => {
            let per = kib("versions.n")
                .filter(|n| *n > 0)
                .map_or(0, |n| (last - base) / n);
            format!(
                "{n} opened, none can be closed: RSS {} -> {} MiB ({:+} KiB, {per:+} KiB per version); \
                 open {} ms each",
                base / 1024,
                last / 1024,
                last - base,
                go("versions.open_ms_each")
            )
        }
        _ => "-".into(),
    };
    rows.push([
        format!("{versions} distinct versions, one after another"),
        not_run(have_native, native_versions),
        not_run(have_wasm, wasm.get("unload")),
    ]);
    let title = format!(
        "Go plugin ({})",
        native.get("go.version").map_or("not run", String::as_str)
    );
    table(&["scenario", &title, "wasmplug (Go guest hello-go)"], &rows);
    Ok(())
}

#[derive(Default)]
struct Cells(BTreeMap<&'static str, String>);

impl Cells {
    fn get(&self, key: &str) -> String {
        self.0.get(key).cloned().unwrap_or_else(|| "-".into())
    }
}

/// wasmplug with hello-go: the scenarios, printed as they run, and the
/// table's cells. `None` (with how to build them) when the Go guests are
/// not in guest-plugins/dist/.
fn go_guest(rt: &Runtime<GreeterPlugin>, versions: u32) -> Result<Option<Cells>> {
    let missing: Vec<&str> = ["hello-go", "hello-go-v1.1"]
        .into_iter()
        .filter(|name| !dist_dir().join(format!("{name}.wasm")).is_file())
        .collect();
    if !missing.is_empty() {
        println!(
            "   wasmplug (Go guest): skipped: {} not in guest-plugins/dist/: build the Go guests \
             with `just guests` (the Go toolchain: guest-plugins/hello-go/setup.sh)",
            missing.join(".wasm, ") + ".wasm"
        );
        return Ok(None);
    }
    let mut cells = Cells::default();

    let started = Instant::now();
    let first = rt.load(guest("hello-go"))?;
    let load_took = started.elapsed();
    let second = rt.load(guest("hello-go"))?;
    let (mut a, mut b) = (first.instantiate()?, second.instantiate()?);
    let counts_a = [a.count()?, a.count()?, a.count()?];
    let count_b = b.count()?;
    let twice = format!(
        "two plugins sharing compiled code ({}); init ran in each instance (hello-go traps on a call before init); \
         counts A {counts_a:?} while B [{count_b}]",
        first.shares_code_with(&second)
    );
    ours(format!("1. {twice}"));
    cells.0.insert("twice", twice);
    let first_load = format!(
        "{:.0} ms (compiles the 2.4 MB component; a disk cache makes it ~20 ms)",
        load_took.as_secs_f64() * 1e3
    );
    cells.0.insert("first_load", first_load);

    // World 1.1 (hello-go-v1.1: `farewell` added) beside 1.0, in a host
    // that serves both world versions.
    let both: Runtime<Greeter> = Runtime::new()?;
    let (old, new) = (
        both.load(guest("hello-go"))?,
        both.load(guest("hello-go-v1.1"))?,
    );
    let (mut old_i, mut new_i) = (old.instantiate()?, new.instantiate()?);
    let versions_text = format!(
        "{} says {:?} beside {} saying {:?}, then {:?} (its new `farewell`)",
        old.label(),
        old_i.call(|p, s| p.greeter().welcome(s, "Gopher"))?,
        new.label(),
        new_i.call(|p, s| p.greeter().welcome(s, "Gopher"))?,
        new_i.call(|p, s| p.greeter().farewell(s, "Gopher"))?,
    );
    ours(format!("2. {versions_text}"));
    cells.0.insert("versions", versions_text);

    let dir = TempDir::new("demo-go");
    let copy = dir.path().join("hello-go-copy.wasm");
    std::fs::copy(guest("hello-go"), &copy)?;
    let twin = rt.load(&copy)?;
    let copy_text = format!(
        "{} loads from {} (same hash {}, compiled once: {}); it says {:?}",
        twin.label(),
        copy.file_name().unwrap().to_string_lossy(),
        twin.content_hash().short(),
        twin.shares_code_with(&first),
        twin.instantiate()?.welcome("twin")?
    );
    ours(format!("3. {copy_text}"));
    cells.0.insert("copy", copy_text);
    drop((first, second, a, b, twin, old, new, old_i, new_i, both));

    let base = guest_bytes("hello-go");
    let load_call_drop = |n: u32| -> Result<Duration> {
        let bytes = with_custom_section(&base, "wasmplug-demo-version", &n.to_le_bytes());
        let started = Instant::now();
        let plugin = rt.load_bytes(&format!("hello-go-build-{n}"), &bytes)?;
        let took = started.elapsed();
        let mut instance = plugin.instantiate()?;
        instance.count()?;
        instance.welcome("Gopher")?;
        Ok(took)
    };
    for n in 0..3 {
        load_call_drop(n)?; // warm-up
    }
    let baseline = rss_kib();
    println!(
        "   wasmplug: 6. {versions} distinct hello-go versions (each its own hash), compiled, \
         instantiated, called, dropped; RSS KiB: {baseline} after warm-up"
    );
    let mut compiling = Duration::ZERO;
    let mut peak = baseline;
    let mut first_step: Option<(u32, u64)> = None;
    for n in 1..=versions {
        compiling += load_call_drop(10_000 + n)?;
        if n % 50 == 0 || n == versions {
            let rss = rss_kib();
            peak = peak.max(rss);
            first_step.get_or_insert((n, rss));
            println!(
                "             after {n:>3} versions: {rss:>7} KiB ({:+} KiB)",
                rss as i64 - baseline as i64
            );
        }
    }
    let last = rss_kib();
    let steps = match first_step {
        Some((n, rss)) if n < versions => format!(
            ": {:+} KiB by version {n}, {:+} KiB over the {} after it",
            rss as i64 - baseline as i64,
            last as i64 - rss as i64,
            versions - n
        ),
        _ => String::new(),
    };
    // What is left above the baseline is free memory the C allocator kept
    // (compiling a 2.5 MB component uses tens of MiB): handing it back to
    // the OS shows nothing is held.
    // SAFETY: malloc_trim only returns free heap pages to the OS.
    unsafe { libc::malloc_trim(0) };
    let trimmed = rss_kib();
    let unload = format!(
        "each dropped after its call: RSS {} -> {} MiB ({:+} KiB{steps}; peak {} MiB); \
         compiled components alive: {}; after malloc_trim {} MiB ({:+} KiB: the rest was \
         free memory the allocator kept); load {:.0} ms each",
        baseline / 1024,
        last / 1024,
        last as i64 - baseline as i64,
        peak / 1024,
        rt.compiled_count(),
        trimmed / 1024,
        trimmed as i64 - baseline as i64,
        compiling.as_secs_f64() * 1e3 / f64::from(versions.max(1))
    );
    cells.0.insert("unload", unload);
    Ok(Some(cells))
}

/// Go's own plugin package: build guest-plugins/go-native/ into a temp dir
/// (build.sh), run its host and parse its `key=value` lines. `None` when
/// there is no Go toolchain or the build fails (said on stdout).
fn go_native(versions: u32) -> Result<Option<BTreeMap<String, String>>> {
    let dir = TempDir::new("demo-go-native");
    let script = repo_root().join("guest-plugins/go-native/build.sh");
    println!(
        "   Go:       building the native plugins (go build -buildmode=plugin: 4 + {versions} \
         distinct builds) into {}",
        dir.path().display()
    );
    let started = Instant::now();
    let build = Command::new("bash")
        .arg(&script)
        .arg(dir.path())
        .arg(versions.to_string())
        .stderr(Stdio::inherit())
        .output();
    let build = match build {
        Ok(build) => build,
        Err(err) => {
            println!("   Go:       skipped: bash {}: {err}", script.display());
            return Ok(None);
        }
    };
    let build_took = started.elapsed();
    if build.status.code() == Some(3) {
        println!("   Go:       Go toolchain not found: run guest-plugins/hello-go/setup.sh");
        return Ok(None);
    }
    if !build.status.success() {
        println!(
            "   Go:       skipped: {} failed ({}); see its output above",
            script.display(),
            build.status
        );
        return Ok(None);
    }
    let mut figures = parse_lines(&build.stdout);
    println!(
        "   Go:       built in {:.1} s: host {} s, 4 plugins {} s, {versions} plugins {} s",
        build_took.as_secs_f64(),
        figures.get("build.host_s").map_or("?", String::as_str),
        figures
            .get("build.four_plugins_s")
            .map_or("?", String::as_str),
        figures.get("build.many_s").map_or("?", String::as_str),
    );
    let run = Command::new(dir.path().join("host"))
        .arg(dir.path())
        .arg(versions.to_string())
        .stderr(Stdio::inherit())
        .output()?;
    if !run.status.success() {
        println!(
            "   Go:       the native host failed ({}); see its output above",
            run.status
        );
        return Ok(None);
    }
    let prefix = format!("{}/", dir.path().display());
    for (key, value) in parse_lines(&run.stdout) {
        figures.insert(key, value.replace(&prefix, ""));
    }
    if let (Some(base), Some(last)) = (
        figures.get("versions.baseline_kib"),
        figures.get("versions.final_kib"),
    ) {
        let steps: Vec<String> = figures
            .iter()
            .filter_map(|(k, v)| {
                let n: u32 = k
                    .strip_prefix("versions.after_")?
                    .strip_suffix("_kib")?
                    .parse()
                    .ok()?;
                Some((n, v))
            })
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .map(|(n, v)| format!("{n}: {v}"))
            .collect();
        println!(
            "   Go:       6. RSS KiB before the versions {base}, after {}; at the end {last}",
            steps.join(", ")
        );
    }
    Ok(Some(figures))
}

fn parse_lines(stdout: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Print rows as a table whose cells wrap at word boundaries.
fn table(header: &[&str; 3], rows: &[[String; 3]]) {
    const WIDTHS: [usize; 3] = [22, 48, 48];
    let print = |cells: [&str; 3]| {
        let wrapped: Vec<Vec<String>> = cells
            .iter()
            .zip(WIDTHS)
            .map(|(cell, width)| wrap(cell, width))
            .collect();
        let height = wrapped.iter().map(Vec::len).max().unwrap_or(1);
        for line in 0..height {
            let part = |c: usize| wrapped[c].get(line).map_or("", String::as_str);
            println!(
                "   {:<w0$} | {:<w1$} | {}",
                part(0),
                part(1),
                part(2),
                w0 = WIDTHS[0],
                w1 = WIDTHS[1]
            );
        }
    };
    println!();
    print(*header);
    println!("   {}", "-".repeat(WIDTHS.iter().sum::<usize>() + 6));
    for row in rows {
        print([&row[0], &row[1], &row[2]]);
        println!("   {}", "-".repeat(WIDTHS.iter().sum::<usize>() + 6));
    }
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().unwrap();
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(word.to_string());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}
