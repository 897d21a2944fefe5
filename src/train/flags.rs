//! Config files as command-line flags: a TOML table's keys are the long flags of a subcommand,
//! so a config file, an experiment file and the command line share one parser (the CLI's).

/// `--config FILE` (TOML): its keys are the long flags of the subcommand (`lr = 2e-5`,
/// `optimizer = "tram-x"`, `eval = ["dev=data/dev.csv"]`, `no_adaptive = true`). They are
/// inserted before the command-line flags, which therefore override them.
pub fn with_config(args: Vec<String>) -> Result<Vec<String>, String> {
    let Some(i) = args.iter().position(|a| a == "--config" || a.starts_with("--config=")) else {
        return Ok(args);
    };
    let (path, skip) = match args[i].strip_prefix("--config=") {
        Some(p) => (p.to_string(), 1),
        None => (args.get(i + 1).cloned().ok_or("--config needs a file")?, 2),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let table: toml::Table = text.parse().map_err(|e| format!("{path}: not valid TOML: {e}"))?;
    let flags = table_flags(&path, &table, &[])?;
    // program, subcommand, config flags, then the rest of the command line (minus --config).
    let mut out: Vec<String> = args[..2.min(args.len())].to_vec();
    out.extend(flags);
    out.extend(
        args[2.min(args.len())..]
            .iter()
            .enumerate()
            .filter(|(j, _)| *j + 2 < i || *j + 2 >= i + skip)
            .map(|(_, a)| a.clone()),
    );
    Ok(out)
}

/// The flags a TOML table stands for: `key = value` is `--key value`, `true` a bare flag,
/// `false` nothing, an array one flag per item, a table `--key name=value` per entry (for
/// `eval = { dev = "dev.csv" }`). Keys in `skip` are left out.
pub fn table_flags(path: &str, table: &toml::Table, skip: &[&str]) -> Result<Vec<String>, String> {
    let mut flags = Vec::new();
    for (key, value) in table {
        if skip.contains(&key.as_str()) {
            continue;
        }
        let flag = format!("--{}", key.replace('_', "-"));
        let scalar = |v: &toml::Value| -> Result<String, String> {
            match v {
                toml::Value::String(s) => Ok(s.clone()),
                toml::Value::Integer(n) => Ok(n.to_string()),
                toml::Value::Float(f) => Ok(f.to_string()),
                other => Err(format!("{path}: {key} = {other:?}: expected a string or a number")),
            }
        };
        match value {
            toml::Value::Boolean(true) => flags.push(flag),
            toml::Value::Boolean(false) => {}
            toml::Value::Array(items) => {
                for v in items {
                    flags.push(flag.clone());
                    flags.push(scalar(v)?);
                }
            }
            toml::Value::Table(t) => {
                for (name, v) in t {
                    flags.push(flag.clone());
                    flags.push(format!("{name}={}", scalar(v)?));
                }
            }
            v => {
                flags.push(flag);
                flags.push(scalar(v)?);
            }
        }
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::with_config;

    #[test]
    fn config_keys_become_flags_that_the_command_line_overrides() {
        let path = std::env::temp_dir().join(format!("tramway-cfg-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "lr = 1e-4\noptimizer = \"sam\"\neval = [\"a=x.csv\"]\nno_adaptive = true\nclip = false\n",
        )
        .unwrap();
        let args: Vec<String> = ["tramway", "finetune", "--config", path.to_str().unwrap(), "--optimizer", "adamw"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let out = with_config(args).unwrap();
        let pos = |f: &str| out.iter().position(|a| a == f).unwrap();
        assert_eq!(out[out.iter().rposition(|a| a == "--optimizer").unwrap() + 1], "adamw", "{out:?}");
        assert!(
            pos("--optimizer") < out.iter().rposition(|a| a == "--optimizer").unwrap(),
            "config first, command line last"
        );
        assert_eq!(out[pos("--lr") + 1], "0.0001");
        assert_eq!(out[pos("--eval") + 1], "a=x.csv");
        assert!(out.contains(&"--no-adaptive".to_string()) && !out.contains(&"--clip".to_string()));
        assert!(!out.iter().any(|a| a == "--config"));
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, "lr = [true]\n").unwrap();
        let args: Vec<String> =
            ["tramway", "finetune", "--config", path.to_str().unwrap()].iter().map(|s| s.to_string()).collect();
        assert!(with_config(args).unwrap_err().contains("lr"));
        let _ = std::fs::remove_file(&path);
    }
}
