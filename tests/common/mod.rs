//! Helpers shared by the integration tests: running the binary and reading what it said.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

pub fn upframe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_upframe"))
        .args(args)
        .output()
        .expect("run upframe")
}

/// Sends SIGINT, as Ctrl-C in a terminal does.
pub fn send_ctrl_c(child: &Child) {
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success());
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn error_lines(out: &Output) -> Vec<String> {
    stderr(out)
        .lines()
        .filter(|l| l.contains("error"))
        .map(str::to_string)
        .collect()
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

pub fn expect_failure(out: &Output, code: i32, needle: &str) {
    assert_eq!(out.status.code(), Some(code), "stderr: {}", stderr(out));
    let lines = error_lines(out);
    assert_eq!(lines.len(), 1, "one error line expected: {lines:?}");
    assert!(lines[0].contains(needle), "{:?} lacks {needle:?}", lines[0]);
}

pub fn run_ok(args: &[&str]) -> Output {
    let out = upframe(args);
    assert!(
        out.status.success(),
        "upframe {args:?} failed: {}",
        stderr(&out)
    );
    out
}

/// A temporary folder for a test's clips and outputs, removed at the end.
pub struct Clip {
    pub dir: tempfile::TempDir,
}

impl Clip {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Presentation times of the first video stream's frames, in seconds as ffprobe prints them.
/// Side data (x264's SEI on the first frame) adds fields and lines that are not a time.
pub fn frame_times(path: &Path) -> Vec<f64> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "frame=pts_time",
        ])
        .args(["-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe (scripts/install-deps.sh installs it)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(',').next()?.trim().parse::<f64>().ok())
        .collect()
}
