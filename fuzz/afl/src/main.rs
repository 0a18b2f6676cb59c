//! The AFL++ harness: `postflight-afl TARGET` runs one of `postflight_fuzz::TARGETS` on the
//! inputs AFL++ feeds it; `postflight-afl seeds TARGET DIR` writes that target's starting
//! corpus (the same valid inputs the mutation runner starts from) into `DIR`.

use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let find = |name: &str| {
        postflight_fuzz::TARGETS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| *t)
    };
    match args.as_slice() {
        [seeds, name, dir] if seeds == "seeds" => {
            let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
            if let Err(e) = std::fs::create_dir_all(dir) {
                eprintln!("cannot create {dir}: {e}");
                std::process::exit(2);
            }
            for (i, seed) in postflight_fuzz::seeds(name, &examples).iter().enumerate() {
                if let Err(e) = std::fs::write(Path::new(dir).join(format!("seed-{i}")), seed) {
                    eprintln!("cannot write a seed into {dir}: {e}");
                    std::process::exit(2);
                }
            }
        }
        [name] => match find(name) {
            Some(target) => afl::fuzz!(|data: &[u8]| target(data)),
            None => {
                eprintln!("unknown target {name}");
                std::process::exit(2);
            }
        },
        _ => {
            eprintln!("usage: postflight-afl TARGET | postflight-afl seeds TARGET DIR");
            std::process::exit(2);
        }
    }
}
