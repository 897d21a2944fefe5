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
        let at = |m: String| bad(path, format!("line {}: {m}", i + 1));
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| at(format!("not JSON: {e}")))?;
        if !v.is_object() {
            return Err(at("expected a JSON object (one example per line)".into()));
        }
        let text = match v.get(text_col) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            Some(x) => return Err(at(format!("text {text_col:?} is {}, expected a string", kind(x)))),
            None => return Err(at(format!("no {text_col:?} field (expected a string)"))),
        };
        // Labels: strings, integers (as their decimal text: datasets often store class ids) or
        // booleans; a fractional number is no class.
        let label = match v.get(label_col) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
            Some(serde_json::Value::Bool(b)) => b.to_string(),
            Some(x) => {
                return Err(at(format!(
                    "label {label_col:?} is {} ({}), expected a string or an integer",
                    kind(x),
                    short(x)
                )))
            }
            None => return Err(at(format!("no {label_col:?} field (expected a string or an integer)"))),
        };
        if label.trim().is_empty() {
            return Err(at(format!("empty {label_col:?}")));
        }
        out.push(Example { text, label });
    }
    Ok(out)
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(n) if n.is_f64() => "a fractional number",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A JSON value for a message (long values cut).
fn short(v: &serde_json::Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

/// The distinct labels, sorted (numerically when every label is an integer), as ids.
pub fn label_set<'a>(labels: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut v: Vec<String> = labels.into_iter().map(|l| l.to_string()).collect();
    v.sort();
    v.dedup();
    let ints: Option<Vec<i64>> = v.iter().map(|l| l.parse::<i64>().ok()).collect();
    if let Some(ints) = ints {
        let mut pairs: Vec<(i64, String)> = ints.into_iter().zip(v).collect();
        pairs.sort();
        return pairs.into_iter().map(|(_, l)| l).collect();
    }
    v
}
