//! The fuzz runner: mutates each target's corpus for a while and reports executions and
//! crashes. A crashing input is written to `fuzz/crashes/` and the run fails; add it to the
//! target's regression tests and fix the bug.
//!
//!     cargo run --release -p postflight-fuzz -- [--seconds N] [--target NAME] [--seed N]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use postflight_fuzz::{TARGETS, mutate, seeds};

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let seconds: u64 = value("--seconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let only = value("--target");
    let seed: u64 = value("--seed")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let examples = root.join("../examples");
    let crashes = root.join("crashes");
    let targets: Vec<_> = TARGETS
        .iter()
        .filter(|(name, _)| only.as_deref().is_none_or(|o| o == *name))
        .collect();
    if targets.is_empty() {
        eprintln!(
            "no target named {only:?}; targets: {:?}",
            TARGETS.iter().map(|t| t.0).collect::<Vec<_>>()
        );
        return std::process::ExitCode::from(2);
    }
    // Panics are caught and reported per input; keep the default hook's noise out.
    std::panic::set_hook(Box::new(|_| {}));
    let per_target = Duration::from_secs(seconds) / targets.len() as u32;
    let mut failed = false;
    println!("seed {seed}, {seconds} s over {} targets", targets.len());
    for (name, target) in targets {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut corpus = seeds(name, &examples);
        if corpus.is_empty() {
            corpus.push(Vec::new());
        }
        let started = Instant::now();
        let (mut runs, mut crashed) = (0u64, 0u64);
        while started.elapsed() < per_target {
            let base = corpus[rng.usize(0..corpus.len())].clone();
            let other = corpus[rng.usize(0..corpus.len())].clone();
            let mut input = base;
            for _ in 0..rng.usize(1..8) {
                mutate(&mut input, &other, &mut rng);
            }
            input.truncate(1 << 20);
            runs += 1;
            let outcome = std::panic::catch_unwind(|| target(&input));
            match outcome {
                Ok(()) => {
                    // Keep a few inputs that still parse as a starting point for more.
                    if corpus.len() < 512 && rng.u8(0..64) == 0 {
                        corpus.push(input);
                    }
                }
                Err(_) => {
                    crashed += 1;
                    let _ = std::fs::create_dir_all(&crashes);
                    let file = crashes.join(format!("{name}-{runs}"));
                    let _ = std::fs::write(&file, &input);
                    eprintln!("{name}: crash, input written to {}", file.display());
                }
            }
        }
        let rate = runs as f64 / started.elapsed().as_secs_f64();
        println!("{name}: {runs} executions ({rate:.0}/s), {crashed} crashes");
        failed |= crashed > 0;
    }
    if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
