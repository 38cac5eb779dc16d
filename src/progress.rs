//! Progress for long work: a bar on a terminal, a plain line per step otherwise (logs, CI), and
//! nothing with --quiet.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    plain: bool,
    total: u64,
    done: u64,
    /// For frames: plain lines at most this often, not one per step.
    every: Option<Duration>,
    last_line: Option<Instant>,
    started: Instant,
}

impl Progress {
    pub fn new(total: u64, quiet: bool) -> Self {
        let mut progress = Self {
            bar: None,
            plain: false,
            total,
            done: 0,
            every: None,
            last_line: None,
            started: Instant::now(),
        };
        if quiet || total <= 1 {
            return progress;
        }
        if !std::io::stderr().is_terminal() {
            progress.plain = true;
            return progress;
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
        progress.bar = Some(bar);
        progress
    }

    /// Frames of a video: a bar with fps and ETA when the count is known (a spinner-like counter
    /// otherwise), or a plain line every 5 seconds when stderr is not a terminal.
    pub fn frames(total: Option<u64>, quiet: bool) -> Self {
        let mut p = Self::new(total.unwrap_or(u64::MAX), quiet);
        p.every = Some(Duration::from_secs(5));
        if let Some(bar) = &p.bar {
            let template = if total.is_some() {
                "{bar:40.cyan/blue} {pos}/{len} frames {per_sec} ETA {eta}"
            } else {
                "{pos} frames {per_sec} {elapsed}"
            };
            bar.set_style(
                ProgressStyle::with_template(template)
                    .expect("static template")
                    .progress_chars("=> "),
            );
        }
        p
    }

    pub fn step(&mut self, what: &str) {
        self.done += 1;
        if let Some(bar) = &self.bar {
            bar.set_message(what.to_string());
            bar.inc(1);
        } else if self.plain {
            match self.every {
                None => eprintln!("[{}/{}] {what}", self.done, self.total),
                Some(every) => {
                    let due = self.last_line.is_none_or(|t| t.elapsed() >= every);
                    if due {
                        self.last_line = Some(Instant::now());
                        let fps = self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
                        let of = if self.total == u64::MAX {
                            String::new()
                        } else {
                            format!("/{}", self.total)
                        };
                        eprintln!("[{}{of}] {fps:.1} fps", self.done);
                    }
                }
            }
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
