//! Stamps the binary with the commit it is built from (`TRAMWAY_COMMIT`: short hash, with
//! `+changes` when the code — src, shaders, Cargo.toml, Cargo.lock, build.rs — differs from
//! it; `unknown` outside a git checkout) and that commit's date (`TRAMWAY_COMMIT_DATE`), so
//! that an experiment's records name the code that computed them, not whatever the checkout
//! holds when the binary runs.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    // --no-optional-locks: `git status` must not rewrite the index it is watched by below.
    let out = Command::new("git").arg("--no-optional-locks").args(args).output().ok().filter(|o| o.status.success())?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    const CODE: [&str; 5] = ["src", "shaders", "Cargo.toml", "Cargo.lock", "build.rs"];
    for path in CODE {
        println!("cargo:rerun-if-changed={path}");
    }
    // A commit moves HEAD's branch (a loose ref, or packed-refs once packed) and rewrites the
    // index. `--git-path` resolves each in a worktree too; a path that does not exist is not
    // watched (cargo would rerun the script on every build).
    let mut watched = vec!["HEAD".to_string(), "index".to_string(), "packed-refs".to_string()];
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(r);
    }
    for w in watched {
        if let Some(p) = git(&["rev-parse", "--git-path", &w]).filter(|p| Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    let mut status = vec!["status", "--porcelain", "--untracked-files=no", "--"];
    status.extend(CODE);
    let commit = match (git(&["rev-parse", "--short", "HEAD"]), git(&status)) {
        (Some(c), Some(st)) if !st.is_empty() => format!("{c}+changes"),
        (Some(c), _) => c,
        _ => "unknown (not built from a git checkout)".into(),
    };
    let date = git(&["log", "-1", "--format=%cI"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=TRAMWAY_COMMIT={commit}");
    println!("cargo:rustc-env=TRAMWAY_COMMIT_DATE={date}");
}
