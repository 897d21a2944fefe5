//! The one error type of the crate. Messages name the thing that is wrong (file, tensor, shape,
//! flag, limit) and what was expected, so a user can act on them without reading code.

/// Everything that can go wrong in tramway.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No GPU adapter matched; the message says how to get one.
    #[error("no GPU adapter found{detail}\n{hint}")]
    NoAdapter { detail: String, hint: String },

    /// An environment variable or option had a value we cannot use.
    #[error("{name}={value:?} is not valid: expected {expected}")]
    BadSetting { name: &'static str, value: String, expected: String },

    /// The adapter refused to give us a device.
    #[error("could not open the GPU device on adapter {adapter:?}: {source}")]
    RequestDevice {
        adapter: String,
        #[source]
        source: wgpu::RequestDeviceError,
    },

    /// Shapes that an operation cannot combine.
    #[error("{op}: {message}")]
    Shape { op: &'static str, message: String },

    /// A tensor or dispatch would exceed a limit of the adapter.
    #[error("{what} needs {needed} but the adapter allows at most {limit} ({limit_name}){hint}")]
    Limit { what: String, needed: u64, limit: u64, limit_name: &'static str, hint: String },

    /// wgpu rejected a shader, pipeline or command (a bug in tramway, or a driver problem).
    #[error("GPU validation error in {context}: {message}")]
    Gpu { context: String, message: String },

    /// Reading a buffer back from the GPU failed.
    #[error("reading {what} back from the GPU failed: {message}")]
    Readback { what: String, message: String },

    /// A model file or folder that is missing, malformed or unsupported: the message names the
    /// key or tensor, what was expected and what was found.
    #[error("{file}: {message}")]
    Model { file: String, message: String },

    /// Training produced a NaN or an infinity. The run stopped there; nothing was written over
    /// the checkpoints saved before it.
    #[error(
        "training stopped at step {step}: the {what} became NaN or infinite. Nothing was saved after that; {resume}"
    )]
    NonFinite { step: u64, what: String, resume: String },

    /// An I/O error, with the path it concerns.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Shorthand for `Result<T, tramway::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn shape_err<T>(op: &'static str, message: impl Into<String>) -> Result<T> {
    Err(Error::Shape { op, message: message.into() })
}

pub(crate) fn model_err<T>(file: &str, message: impl Into<String>) -> Result<T> {
    Err(Error::Model { file: file.to_string(), message: message.into() })
}

/// A program's exit for `fn main() -> ExitCode`: success, or the error as its message
/// (`error: ...`, exit status 1) rather than Rust's debug form. Used by the examples.
pub fn exit_code(r: Result<()>) -> std::process::ExitCode {
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
