//! Experiment grids on a Slurm cluster: the plan's runs as one job array, array task `i` running
//! run `i` of the same order as a local `tramway experiment` (`--run-index i`). Runs keep the
//! local layout (one `summary.json` each), so a resubmitted array skips what finished and a
//! failed task can be retried alone; `tramway experiment FILE --report` gathers the table.

use super::experiment::{load_record, Plan};
use crate::error::{Error, Result};
use crate::io::hf::write_atomic;
use std::path::{Path, PathBuf};

/// What one array task asks Slurm for: the experiment file's `[slurm]` table (`partition`,
/// `gpus`, `cpus`, `mem`, `time`), command-line flags overriding it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources {
    pub partition: Option<String>,
    /// GPUs per run (`--gres=gpu:N`; 0 asks for none).
    pub gpus: u32,
    pub cpus: Option<u32>,
    /// Memory per run, as sbatch takes it (`16G`).
    pub mem: Option<String>,
    /// Time limit per run, as sbatch takes it (`02:00:00`).
    pub time: Option<String>,
}

impl Resources {
    /// The `[slurm]` table of the experiment file `config` (all defaults when absent).
    pub fn from_file(config: &Path) -> Result<Self> {
        let file = config.display().to_string();
        let bad = |m: String| Error::Model { file: file.clone(), message: m };
        let text = std::fs::read_to_string(config).map_err(|source| Error::Io { path: file.clone(), source })?;
        let t: toml::Table = text.parse().map_err(|e| bad(format!("not valid TOML: {e}")))?;
        let mut r = Resources::default();
        let Some(v) = t.get("slurm") else { return Ok(r) };
        let tb = v.as_table().ok_or_else(|| bad("slurm must be a table".into()))?;
        for (k, v) in tb {
            let text = || v.as_str().map(str::to_string).ok_or_else(|| bad(format!("slurm.{k} must be a string")));
            let count = || {
                v.as_integer()
                    .filter(|&n| (0..=1 << 16).contains(&n))
                    .map(|n| n as u32)
                    .ok_or_else(|| bad(format!("slurm.{k} must be a whole number between 0 and 65536")))
            };
            match k.as_str() {
                "partition" => r.partition = Some(text()?),
                "gpus" => r.gpus = count()?,
                "cpus" => r.cpus = Some(count()?),
                "mem" => r.mem = Some(text()?),
                "time" => r.time = Some(text()?),
                other => return Err(bad(format!("slurm.{other} is not a setting (partition, gpus, cpus, mem, time)"))),
            }
        }
        Ok(r)
    }
}

/// How an array task calls tramway back: the binary, the experiment file and the options that
/// select the plan (so the task rebuilds exactly this plan).
pub struct Callback<'a> {
    pub exe: &'a Path,
    pub config: &'a Path,
    pub quick: bool,
    pub tasks: &'a [String],
    /// The folder the tasks run in (relative paths of the file resolve against it).
    pub workdir: &'a Path,
}

/// Quote a string for a POSIX shell.
fn sh(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The indices of the runs without a `summary.json`, as an sbatch `--array` list (`0-3,7`).
fn array_spec(missing: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < missing.len() {
        let mut j = i;
        while j + 1 < missing.len() && missing[j + 1] == missing[j] + 1 {
            j += 1;
        }
        parts.push(if i == j { missing[i].to_string() } else { format!("{}-{}", missing[i], missing[j]) });
        i = j + 1;
    }
    parts.join(",")
}

/// The sbatch script of the runs of `plan` that have not finished (`None` when all have), and
/// their indices.
pub fn script(plan: &Plan, res: &Resources, cb: &Callback) -> Result<Option<(String, Vec<usize>)>> {
    let mut missing = Vec::new();
    for (i, r) in plan.runs.iter().enumerate() {
        if load_record(&r.dir)?.is_none() {
            missing.push(i);
        }
    }
    if missing.is_empty() {
        return Ok(None);
    }
    let abs = |p: &Path| -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            cb.workdir.join(p)
        }
    };
    let logs = abs(&plan.out).join("slurm");
    let name: String = plan.out.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or("experiment".into());
    let mut s = String::from("#!/bin/bash\n");
    s += &format!("#SBATCH --job-name={}\n", sh(&format!("tramway-{name}")));
    s += &format!("#SBATCH --array={}\n", array_spec(&missing));
    s += &format!("#SBATCH --output={}\n", sh(&logs.join("%A_%a.out").display().to_string()));
    s += &format!("#SBATCH --chdir={}\n", sh(&cb.workdir.display().to_string()));
    if let Some(p) = &res.partition {
        s += &format!("#SBATCH --partition={}\n", sh(p));
    }
    if res.gpus > 0 {
        s += &format!("#SBATCH --gres=gpu:{}\n", res.gpus);
    }
    s += &format!("#SBATCH --cpus-per-task={}\n", res.cpus.unwrap_or(1).max(1));
    if let Some(m) = &res.mem {
        s += &format!("#SBATCH --mem={}\n", sh(m));
    }
    if let Some(t) = &res.time {
        s += &format!("#SBATCH --time={}\n", sh(t));
    }
    s += "set -euo pipefail\n";
    s += "# The GPU Slurm gave this task: the first of CUDA_VISIBLE_DEVICES, as a wgpu hardware-GPU index.\n";
    s += "if [ -n \"${CUDA_VISIBLE_DEVICES:-}\" ] && [ -z \"${TRAMWAY_ADAPTER_INDEX:-}\" ]; then\n";
    s += "  export TRAMWAY_ADAPTER_INDEX=\"${CUDA_VISIBLE_DEVICES%%,*}\"\nfi\n";
    let mut cmd = vec![
        sh(&cb.exe.display().to_string()),
        "experiment".into(),
        sh(&abs(cb.config).display().to_string()),
        "--out".into(),
        sh(&abs(&plan.out).display().to_string()),
    ];
    if cb.quick {
        cmd.push("--quick".into());
    }
    for t in cb.tasks {
        cmd.push("--task".into());
        cmd.push(sh(t));
    }
    cmd.push("--run-index".into());
    cmd.push("\"$SLURM_ARRAY_TASK_ID\"".into());
    s += &format!("exec {}\n", cmd.join(" "));
    Ok(Some((s, missing)))
}

/// What [`submit`] did.
pub struct Submitted {
    /// `<out>/slurm/array.sbatch`.
    pub script: PathBuf,
    /// The runs (plan indices) the array covers: those without a `summary.json`.
    pub runs: Vec<usize>,
    /// The job id sbatch gave (`None` on a dry run).
    pub job: Option<String>,
}

/// Write the script to `<out>/slurm/array.sbatch` and, unless `dry_run`, submit it with
/// `sbatch --parsable`. `None` when every run has finished.
pub fn submit(plan: &Plan, res: &Resources, cb: &Callback, dry_run: bool) -> Result<Option<Submitted>> {
    let Some((text, missing)) = script(plan, res, cb)? else { return Ok(None) };
    let dir = plan.out.join("slurm");
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io { path: dir.display().to_string(), source })?;
    let path = dir.join("array.sbatch");
    write_atomic(&path, text.as_bytes())?;
    if dry_run {
        return Ok(Some(Submitted { script: path, runs: missing, job: None }));
    }
    let out =
        std::process::Command::new("sbatch").arg("--parsable").arg(&path).output().map_err(|e| Error::BadSetting {
            name: "--slurm",
            value: "sbatch".into(),
            expected: format!("Slurm's sbatch on the PATH ({e})"),
        })?;
    if !out.status.success() {
        return Err(Error::Model {
            file: path.display().to_string(),
            message: format!("sbatch refused the script: {}", String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    let id = String::from_utf8_lossy(&out.stdout).trim().split(';').next().unwrap_or_default().to_string();
    Ok(Some(Submitted { script: path, runs: missing, job: Some(id) }))
}

#[cfg(test)]
mod tests {
    use super::array_spec;

    #[test]
    fn array_lists_compress_runs_of_indices() {
        assert_eq!(array_spec(&[0, 1, 2, 3]), "0-3");
        assert_eq!(array_spec(&[0, 2, 3, 4, 9]), "0,2-4,9");
        assert_eq!(array_spec(&[5]), "5");
    }
}
