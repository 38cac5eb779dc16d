//! Progress for long work: a bar on a terminal, a plain line per step otherwise (logs, CI), and
//! nothing with --quiet.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    plain: bool,
    total: u64,
    done: u64,
}

impl Progress {
    pub fn new(total: u64, quiet: bool) -> Self {
        if quiet || total <= 1 {
            return Self {
                bar: None,
                plain: false,
                total,
                done: 0,
            };
        }
        if !std::io::stderr().is_terminal() {
            return Self {
                bar: None,
                plain: true,
                total,
                done: 0,
            };
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40.cyan/blue} {pos}/{len} {per_sec} ETA {eta} {msg}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Self {
            bar: Some(bar),
            plain: false,
            total,
            done: 0,
        }
    }

    pub fn step(&mut self, what: &str) {
        self.done += 1;
        if let Some(bar) = &self.bar {
            bar.set_message(what.to_string());
            bar.inc(1);
        } else if self.plain {
            eprintln!("[{}/{}] {what}", self.done, self.total);
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
