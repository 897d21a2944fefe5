//! Checkpoints that survive crashes, and the `--out` folder they live in.
//!
//! - A checkpoint is written into a hidden temporary folder (every file flushed to disk), then
//!   swapped in: the old folder is renamed aside, the new one renamed into place, the parent
//!   folder flushed, and only then the old one deleted. At every moment a complete checkpoint
//!   exists under its name or, between the two renames, under the aside name; [`OutLock`]
//!   puts an aside copy back when its checkpoint is missing (a crash between the renames) and
//!   removes the temporary folders of killed runs.
//! - `--out` is locked for the run (an OS file lock on `out/.tramway.lock`, which the OS
//!   releases when the process dies, so a stale lock is taken over by the next run).
//! - `trainer_state.json` records the step and every setting a resumed run must share; resuming
//!   with different settings is an error naming each difference.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The environment variable of the crash-test switch: `TRAMWAY_FAULT=checkpoint-swap` aborts
/// the process between the two renames of a checkpoint swap (tests only).
pub const FAULT_ENV: &str = "TRAMWAY_FAULT";

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.display().to_string(), source }
}

/// Abort here when the fault-injection switch names `point`.
fn fault_point(point: &str) {
    if std::env::var(FAULT_ENV).as_deref() == Ok(point) {
        eprintln!("{FAULT_ENV}={point}: aborting on purpose");
        std::process::abort();
    }
}

/// Flush a folder's entries to disk (the renames in it). Windows cannot open folders as files;
/// its renames are durable through the file system's own journal.
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    File::open(dir).and_then(|f| f.sync_all()).map_err(io_err(dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// The hidden temporary folder a checkpoint named `dir` is written into.
pub fn temp_dir_for(dir: &Path) -> PathBuf {
    sibling(dir, "tmp")
}

fn sibling(dir: &Path, what: &str) -> PathBuf {
    let parent = dir.parent().unwrap_or(Path::new("."));
    let name = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    parent.join(format!(".{name}.{what}-{}", std::process::id()))
}

/// Put the fully written folder `tmp` in place of `dir` without a moment in which neither a
/// complete old nor a complete new checkpoint exists (see the module notes).
pub fn swap_in(tmp: &Path, dir: &Path) -> Result<()> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    sync_dir(tmp)?;
    let aside = sibling(dir, "old");
    let had_old = dir.exists();
    if had_old {
        std::fs::rename(dir, &aside).map_err(io_err(dir))?;
    }
    fault_point("checkpoint-swap");
    std::fs::rename(tmp, dir).map_err(io_err(dir))?;
    sync_dir(parent)?;
    if had_old {
        std::fs::remove_dir_all(&aside).map_err(io_err(&aside))?;
    }
    Ok(())
}

/// What a killed run may leave in a folder: `.NAME.tmp-PID` (an unfinished checkpoint or file:
/// removed) and `.NAME.old-PID` (the previous checkpoint, renamed aside: put back when `NAME`
/// is missing, else removed). Returns what was done, one line each.
pub fn recover(dir: &Path) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(done) };
    let mut names: Vec<String> = entries.flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect();
    names.sort();
    for n in names {
        let Some(rest) = n.strip_prefix('.') else { continue };
        let path = dir.join(&n);
        let remove = |p: &Path| -> Result<()> {
            if p.is_dir() {
                std::fs::remove_dir_all(p).map_err(io_err(p))
            } else {
                std::fs::remove_file(p).map_err(io_err(p))
            }
        };
        if let Some((target, pid)) = rest.rsplit_once(".old-") {
            if target.is_empty() || !pid.chars().all(|c| c.is_ascii_digit()) {
                continue;
            }
            let t = dir.join(target);
            if t.exists() {
                remove(&path)?;
                done.push(format!("removed {} (a replaced checkpoint left by a killed run)", path.display()));
            } else {
                std::fs::rename(&path, &t).map_err(io_err(&t))?;
                done.push(format!("restored {} (a run was killed while replacing it)", t.display()));
            }
        } else if let Some((_, pid)) = rest.rsplit_once(".tmp-") {
            if pid.chars().all(|c| c.is_ascii_digit()) && !pid.is_empty() {
                remove(&path)?;
                done.push(format!("removed {} (unfinished, left by a killed run)", path.display()));
            }
        }
    }
    if !done.is_empty() {
        sync_dir(dir)?;
    }
    Ok(done)
}

/// The lock of an output folder, held while a run writes into it.
#[derive(Debug)]
pub struct OutLock {
    _file: File,
}

impl OutLock {
    /// Lock `out` (created if missing): refused while another live process holds it. Then
    /// clean what killed runs left there ([`recover`]), reporting each action on stderr.
    pub fn acquire(out: &Path) -> Result<OutLock> {
        std::fs::create_dir_all(out).map_err(io_err(out))?;
        let path = out.join(".tramway.lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(Error::BadSetting {
                    name: "--out",
                    value: out.display().to_string(),
                    expected: format!(
                        "a folder no other run is writing: {} holds {} (wait for it, or choose another --out)",
                        if holder.is_empty() { "another process".to_string() } else { format!("process {holder}") },
                        path.display()
                    ),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&path)(e)),
        }
        file.set_len(0).map_err(io_err(&path))?;
        file.rewind().map_err(io_err(&path))?;
        write!(file, "{}", std::process::id()).map_err(io_err(&path))?;
        for line in recover(out)? {
            eprintln!("{line}");
        }
        Ok(OutLock { _file: file })
    }
}

/// `trainer_state.json`: the step a checkpoint was taken at and the settings a run resumed
/// from it must share to continue it bitwise.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Steps taken.
    pub step: u64,
    /// Steps of the whole run.
    pub total_steps: u64,
    pub seed: u64,
    /// The optimizer's name and its full settings (method, base, learning rate, schedule,
    /// clipping).
    pub optimizer: String,
    pub optimizer_settings: String,
    pub task: String,
    pub batch_size: usize,
    pub max_len: usize,
    pub image_size: Option<usize>,
    /// Training examples (token blocks for a language model) and a hash of their content.
    pub train_examples: usize,
    pub train_fingerprint: String,
}

impl TrainerState {
    /// Parse and check `trainer_state.json` text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<TrainerState> {
        let bad = |m: String| Error::Model { file: file.to_string(), message: m };
        let s: TrainerState = serde_json::from_str(text).map_err(|e| {
            bad(format!(
                "not a trainer_state.json written by this version of tramway ({e}); start from --model instead"
            ))
        })?;
        if s.step > s.total_steps {
            return Err(bad(format!("step {} is beyond the run's total_steps {}", s.step, s.total_steps)));
        }
        Ok(s)
    }

    /// Read `<dir>/trainer_state.json`.
    pub fn read(dir: &Path) -> Result<TrainerState> {
        let p = dir.join("trainer_state.json");
        let text = std::fs::read_to_string(&p).map_err(io_err(&p))?;
        TrainerState::parse(&p.display().to_string(), &text)
    }

    /// Every setting in which `now` differs from this checkpoint's run, as `key: checkpoint X,
    /// now Y`. The step and the run's length are not compared: a run may be extended (a
    /// schedule that depends on the length is part of the optimizer settings).
    pub fn differences(&self, now: &TrainerState) -> Vec<String> {
        let mut out = Vec::new();
        let mut cmp = |key: &str, a: String, b: String| {
            if a != b {
                out.push(format!("{key}: checkpoint {a}, now {b}"));
            }
        };
        cmp("seed", self.seed.to_string(), now.seed.to_string());
        cmp("optimizer", self.optimizer.clone(), now.optimizer.clone());
        cmp("optimizer settings", self.optimizer_settings.clone(), now.optimizer_settings.clone());
        cmp("task", self.task.clone(), now.task.clone());
        cmp("batch_size", self.batch_size.to_string(), now.batch_size.to_string());
        cmp("max_len", self.max_len.to_string(), now.max_len.to_string());
        cmp("image_size", format!("{:?}", self.image_size), format!("{:?}", now.image_size));
        cmp("training examples", self.train_examples.to_string(), now.train_examples.to_string());
        cmp("training data content (hash)", self.train_fingerprint.clone(), now.train_fingerprint.clone());
        out
    }
}

/// FNV-1a, 64 bits: a stable content hash (not for security).
#[derive(Clone, Copy, Debug)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf29ce484222325)
    }
}

impl Fnv {
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        for &x in b {
            self.0 ^= x as u64;
            self.0 = self.0.wrapping_mul(0x100000001b3);
        }
        self
    }
    /// A field: its bytes and a separator no UTF-8 text contains.
    pub fn field(&mut self, b: &[u8]) -> &mut Self {
        self.bytes(b).bytes(&[0xff])
    }
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}
