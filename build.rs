//! Stamps the binary with the commit it is built from (`TRAMWAY_COMMIT`: short hash, with
//! `+changes` when the code — src, shaders, Cargo.toml, Cargo.lock, build.rs — differs from
//! it; `unknown` outside a git checkout) and that commit's date (`TRAMWAY_COMMIT_DATE`), so
//! that an experiment's records name the code that computed them, not whatever the checkout
//! holds when the binary runs.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok().filter(|o| o.status.success())?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    const CODE: [&str; 5] = ["src", "shaders", "Cargo.toml", "Cargo.lock", "build.rs"];
    for path in CODE {
        println!("cargo:rerun-if-changed={path}");
    }
    // A commit moves HEAD's branch and rewrites the index.
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        for f in ["HEAD", "index"] {
            println!("cargo:rerun-if-changed={dir}/{f}");
        }
        if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{r}");
        }
    }
    let mut status = vec!["status", "--porcelain", "--untracked-files=no", "--"];
    status.extend(CODE);
    let commit = match (git(&["rev-parse", "--short", "HEAD"]), git(&status)) {
        (Some(c), Some(st)) if !st.is_empty() => format!("{c}+changes"),
        (Some(c), _) => c,
        _ => "unknown (not built from a git checkout)".into(),
    };
    let date = git(&["log", "-1", "--format=%cI"]).unwrap_or_default();
    println!("cargo:rustc-env=TRAMWAY_COMMIT={commit}");
    println!("cargo:rustc-env=TRAMWAY_COMMIT_DATE={date}");
}
