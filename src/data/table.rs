//! Labelled text tables: CSV, TSV (by extension) or JSONL, with configurable column names.

use crate::error::{Error, Result};
use std::path::Path;

/// One labelled example.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub text: String,
    pub label: String,
}

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::Model { file: path.display().to_string(), message: msg.into() }
}

/// Read `path` as CSV (`.csv`), TSV (`.tsv`, `.tab`) or JSON lines (`.jsonl`, `.json`), taking
/// the text and label from the named columns (keys).
pub fn read_examples(path: &Path, text_col: &str, label_col: &str) -> Result<Vec<Example>> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.display().to_string(), source })?;
    let text = String::from_utf8(bytes).map_err(|e| bad(path, format!("not UTF-8 text: {e}")))?;
    let text = text.trim_start_matches('\u{feff}');
    let rows = match ext.as_str() {
        "jsonl" | "json" => read_jsonl(path, text, text_col, label_col)?,
        "csv" | "tsv" | "tab" => {
            read_delimited(path, text, if ext == "csv" { b',' } else { b'\t' }, text_col, label_col)?
        }
        other => {
            return Err(bad(path, format!("unknown data format {other:?}: expected a .csv, .tsv or .jsonl file")));
        }
    };
    if rows.is_empty() {
        return Err(bad(path, "no examples"));
    }
    Ok(rows)
}

fn read_delimited(path: &Path, text: &str, delim: u8, text_col: &str, label_col: &str) -> Result<Vec<Example>> {
    let mut r = csv::ReaderBuilder::new().delimiter(delim).flexible(false).from_reader(text.as_bytes());
    let headers = r.headers().map_err(|e| bad(path, format!("cannot read the header line: {e}")))?.clone();
    let find = |name: &str| {
        headers.iter().position(|h| h.trim() == name).ok_or_else(|| {
            bad(
                path,
                format!(
                    "no column {name:?} (columns: {}); choose with --text-column / --label-column",
                    headers.iter().collect::<Vec<_>>().join(", ")
                ),
            )
        })
    };
    let (ti, li) = (find(text_col)?, find(label_col)?);
    let mut out = Vec::new();
    for (i, rec) in r.records().enumerate() {
        let rec = rec.map_err(|e| bad(path, format!("record {}: {e}", i + 1)))?;
        let label = rec.get(li).unwrap_or("").trim().to_string();
        if label.is_empty() {
            return Err(bad(path, format!("record {} has an empty {label_col:?}", i + 1)));
        }
        out.push(Example { text: rec.get(ti).unwrap_or("").to_string(), label });
    }
    Ok(out)
}

fn read_jsonl(path: &Path, text: &str, text_col: &str, label_col: &str) -> Result<Vec<Example>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(path, format!("line {}: {e}", i + 1)))?;
        let get = |k: &str| -> Result<String> {
            match v.get(k) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
                Some(serde_json::Value::Bool(b)) => Ok(b.to_string()),
                _ => Err(bad(path, format!("line {}: no string or number under {k:?}", i + 1))),
            }
        };
        out.push(Example { text: get(text_col)?, label: get(label_col)? });
    }
    Ok(out)
}

/// The distinct labels, sorted (numerically when every label is an integer), as ids.
pub fn label_set<'a>(labels: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut v: Vec<String> = labels.into_iter().map(|l| l.to_string()).collect();
    v.sort();
    v.dedup();
    if v.iter().all(|l| l.parse::<i64>().is_ok()) {
        v.sort_by_key(|l| l.parse::<i64>().unwrap());
    }
    v
}
