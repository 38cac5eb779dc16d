//! The library's one error type. Each variant names what was being done, to which file, and what
//! was found, so that `main` can print it as a single line a user can act on.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("{path}: no such file or folder")]
    InputMissing { path: PathBuf },

    #[error("{path}: cannot read image: {reason}")]
    ImageDecode { path: PathBuf, reason: String },

    #[error("{path}: cannot write image: {reason}")]
    ImageEncode { path: PathBuf, reason: String },

    #[error("{path}: unsupported image type (expected .png, .jpg, .jpeg or .webp)")]
    UnsupportedImageType { path: PathBuf },

    #[error("{path}: no images (.png, .jpg, .jpeg, .webp) in this folder")]
    EmptyFolder { path: PathBuf },

    #[error("{path}: output exists; pass -y/--overwrite to replace it")]
    OutputExists { path: PathBuf },

    #[error("{path}: output would overwrite the input")]
    OutputIsInput { path: PathBuf },

    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },

    #[error("{path}:{line}: {reason}")]
    ModelParam {
        path: PathBuf,
        line: usize,
        reason: String,
    },

    #[error("{path}: at byte {offset}: {reason}")]
    ModelWeights {
        path: PathBuf,
        offset: usize,
        reason: String,
    },

    #[error("unknown model '{name}': give a path to an ncnn .param file or one of: {known}")]
    UnknownModel { name: String, known: String },

    #[error("backend {backend} is not available: {reason}")]
    BackendUnavailable { backend: String, reason: String },

    #[error("{0}")]
    Usage(String),

    #[error("{context}: {reason}")]
    Device { context: String, reason: String },

    #[error("{path}: {reason}")]
    VideoInput { path: PathBuf, reason: String },

    #[error("{path}: decoding failed: {reason}")]
    VideoDecode { path: PathBuf, reason: String },

    #[error("{path}: cannot write video: {reason}")]
    VideoEncode { path: PathBuf, reason: String },

    #[error("interrupted")]
    Interrupted,
}

impl Error {
    /// The documented exit code: 2 for a usage or input error (fix the command or the file),
    /// 1 for a failure while running, 130 when interrupted.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::InputMissing { .. }
            | Error::ImageDecode { .. }
            | Error::UnsupportedImageType { .. }
            | Error::EmptyFolder { .. }
            | Error::OutputExists { .. }
            | Error::OutputIsInput { .. }
            | Error::ModelParam { .. }
            | Error::ModelWeights { .. }
            | Error::UnknownModel { .. }
            | Error::BackendUnavailable { .. }
            | Error::VideoInput { .. }
            | Error::Usage(_) => 2,
            Error::Interrupted => 130,
            Error::ImageEncode { .. }
            | Error::Io { .. }
            | Error::Device { .. }
            | Error::VideoDecode { .. }
            | Error::VideoEncode { .. } => 1,
        }
    }

    pub fn io(path: impl Into<PathBuf>, err: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            reason: err.to_string(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
