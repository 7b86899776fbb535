//! Progress reporting: indicatif bars on a terminal, plain start/finish lines otherwise (CI logs).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Instant;

/// A byte-counting progress reporter for one step.
pub struct Progress {
    bar: ProgressBar,
    step: String,
    started: Instant,
    plain: bool,
}

impl Progress {
    /// Start reporting `step` over `total` bytes.
    pub fn bytes(step: &str, total: u64) -> Self {
        let plain = !std::io::stderr().is_terminal();
        let bar = if plain {
            eprintln!("{step}...");
            ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden())
        } else {
            let bar = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(
                "{msg:24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(step.to_string());
            bar
        };
        Progress {
            bar,
            step: step.to_string(),
            started: Instant::now(),
            plain,
        }
    }

    /// Set the number of bytes handled so far.
    pub fn set(&self, pos: u64) {
        self.bar.set_position(pos);
    }

    /// Add `delta` bytes.
    pub fn inc(&self, delta: u64) {
        self.bar.inc(delta);
    }

    /// Finish the step and print how long it took.
    pub fn finish(self) {
        self.bar.finish_and_clear();
        let secs = self.started.elapsed().as_secs_f64();
        if self.plain || secs >= 0.5 {
            eprintln!("{}: done in {secs:.1} s", self.step);
        }
    }
}
