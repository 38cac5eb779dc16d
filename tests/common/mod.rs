//! Helpers shared by the integration tests: running the binary and reading what it said.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

pub fn upframe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_upframe"))
        .args(args)
        .output()
        .expect("run upframe")
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
