//! Loader fuzzing, the bounded run CI executes: mutated real components
//! (bit flips, overwritten bytes, truncations, duplicated and inserted
//! runs, splices of two components) and plain random bytes, loaded through
//! the dynamic world, which accepts any component whose imports link and
//! runs its identity and init. Every input must give `Ok` or an `Err`:
//! never a panic, never a crash. Deterministic (fixed seed), so a failure
//! reproduces; a panicking input is saved to the temp dir.
//!
//! For long runs, the libFuzzer target in `host/fuzz/` (see
//! `ARCHITECTURE.md`, "Fuzzing").

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use wasmplug::{Dynamic, Policy, Runtime};
use wasmplug_tests::dist_dir;

const ITERATIONS: usize = 6_000;

/// xorshift64*: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = seeds[rng.below(seeds.len())].clone();
    for _ in 0..=rng.below(4) {
        let len = bytes.len().max(1);
        match rng.below(7) {
            0 => {
                let i = rng.below(len);
                if let Some(b) = bytes.get_mut(i) {
                    *b ^= 1 << rng.below(8);
                }
            }
            1 => {
                let i = rng.below(len);
                if let Some(b) = bytes.get_mut(i) {
                    *b = rng.next() as u8;
                }
            }
            2 => bytes.truncate(rng.below(len)),
            3 => {
                let (a, n) = (rng.below(len), rng.below(64));
                let run: Vec<u8> = bytes.iter().skip(a).take(n).copied().collect();
                let at = rng.below(bytes.len() + 1);
                bytes.splice(at..at, run);
            }
            4 => {
                let at = rng.below(bytes.len() + 1);
                let junk: Vec<u8> = (0..rng.below(16)).map(|_| rng.next() as u8).collect();
                bytes.splice(at..at, junk);
            }
            5 => {
                let other = &seeds[rng.below(seeds.len())];
                let cut = rng.below(bytes.len()).min(bytes.len());
                let from = rng.below(other.len()).min(other.len());
                bytes.truncate(cut);
                bytes.extend_from_slice(&other[from..]);
            }
            _ => bytes = (0..rng.below(256)).map(|_| rng.next() as u8).collect(),
        }
    }
    bytes
}

#[test]
fn loading_mutated_components_never_panics() {
    let seeds: Vec<Vec<u8>> = std::fs::read_dir(dist_dir())
        .expect("guest components: run `just guests`")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .map(|p| std::fs::read(p).unwrap())
        // The 12-18 MB interpreter components (JS, Python) would make every
        // mutation that still parses a seconds-long compile: the suite stays
        // bounded with the small ones, which cover the same parser paths.
        .filter(|bytes| bytes.len() < 1 << 20)
        .collect();
    assert!(
        seeds.len() >= 5,
        "too few seed components in {}",
        dist_dir().display()
    );

    let policy = Policy::default()
        .deadline(Duration::from_millis(500))
        .memory_limit(64 << 20)
        .output_limit(4096);
    let rt: Runtime<Dynamic> = Runtime::<Dynamic>::builder()
        .policy(policy)
        .build()
        .unwrap();
    let mut rng = Rng(0x005e_ed0f_d00d_cafe);
    let (mut loaded, mut refused) = (0, 0);
    for i in 0..ITERATIONS {
        let input = mutate(&mut rng, &seeds);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            rt.load_bytes("fuzzed", &input).map(drop)
        }));
        match outcome {
            Ok(Ok(())) => loaded += 1,
            Ok(Err(_)) => refused += 1,
            Err(_) => {
                let saved = std::env::temp_dir().join(format!("wasmplug-fuzz-crash-{i}.wasm"));
                std::fs::write(&saved, &input).unwrap();
                panic!(
                    "iteration {i}: loading panicked; input saved to {}",
                    saved.display()
                );
            }
        }
    }
    println!("loader fuzz: {ITERATIONS} inputs, {loaded} loaded, {refused} refused, 0 panics");
    assert_eq!(loaded + refused, ITERATIONS);
    assert!(
        refused > 0 && loaded > 0,
        "the mutations should both break and keep components"
    );
}
