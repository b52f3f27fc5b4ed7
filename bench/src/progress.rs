//! The progress bar: one line per case, on stderr.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The progress bar, or nothing drawn when hidden (lines still go to stderr).
#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("hidden", &self.bar.is_hidden())
            .finish_non_exhaustive()
    }
}

impl Progress {
    /// A bar on stderr when `visible`, else a hidden one.
    pub fn new(visible: bool) -> Self {
        let bar = if visible {
            ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>24} {msg:<12} [{bar:32}] {pos:>6}/{len:<6} {elapsed:>4}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        Self { bar }
    }

    /// Starts a phase of a case: `prefix` names the case, `what` the phase.
    pub fn phase(&self, prefix: &str, what: &'static str, len: u64) {
        self.bar.set_prefix(prefix.to_owned());
        self.bar.set_message(what);
        self.bar.set_length(len);
        self.bar.set_position(0);
        self.bar.reset_elapsed();
    }

    /// Advances the bar by one.
    pub fn inc(&self) {
        self.bar.inc(1);
    }

    /// Moves the bar to `position`.
    pub fn set(&self, position: u64) {
        self.bar.set_position(position);
    }

    /// Prints a line above the bar.
    pub fn println(&self, line: impl AsRef<str>) {
        if self.bar.is_hidden() {
            eprintln!("{}", line.as_ref());
        } else {
            self.bar.println(line);
        }
    }

    /// Clears the bar at the end of the run.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
