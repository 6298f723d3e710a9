//! Progress for the commands a person waits on (`demo`, `table`, `serve`): one policy for all.
//!
//! On a terminal (stderr is a tty) an indicatif bar with position, elapsed time and ETA; when
//! stderr is not a terminal (a log, CI) a short plain line at most every [`LINE_SECS`] seconds
//! and one at the end; nothing with `--quiet` or `--json`. Always on stderr: stdout holds the
//! result (with `--json`, exactly one JSON line).

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressState, ProgressStyle};

/// Seconds between two plain progress lines when stderr is not a terminal.
pub const LINE_SECS: u64 = 5;
/// Environment variable that replaces [`LINE_SECS`]; 0 prints a line at every update (tests).
pub const LINE_SECS_ENV: &str = "PPDENOISE_PROGRESS_SECS";

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Off,
    /// An indicatif bar (stderr is a terminal).
    Bar,
    /// A plain line at most this often, and one at the end.
    Lines(Duration),
}

impl Mode {
    /// Off with `--quiet` or `--json`, else [`Mode::shown`].
    pub fn new(quiet: bool, json: bool) -> Result<Mode> {
        if quiet || json {
            Ok(Mode::Off)
        } else {
            Mode::shown()
        }
    }

    /// A bar on a terminal, lines elsewhere: for a process whose stdout is JSON for its
    /// parent but whose stderr is the user's (`demo` runs S0 so).
    pub fn shown() -> Result<Mode> {
        if std::io::stderr().is_terminal() {
            return Ok(Mode::Bar);
        }
        let secs =
            match std::env::var(LINE_SECS_ENV) {
                Ok(v) => v.trim().parse::<u64>().ok().with_context(|| {
                    format!("{LINE_SECS_ENV}={v:?}: not a whole number of seconds")
                })?,
                Err(_) => LINE_SECS,
            };
        Ok(Mode::Lines(Duration::from_secs(secs)))
    }

    pub fn is_off(self) -> bool {
        self == Mode::Off
    }
}

/// Progress over `len` units of work.
pub struct Progress {
    label: String,
    unit: String,
    len: u64,
    /// Work already done before this run (resumed): counted as done, not in the rate.
    base: u64,
    start: Instant,
    show: Show,
}

enum Show {
    Off,
    Bar(ProgressBar),
    Lines {
        every: Duration,
        /// Current position, and when and at which position the last line was printed
        /// (the start, before any).
        state: Mutex<LineState>,
    },
}

struct LineState {
    pos: u64,
    last: (Instant, u64),
}

impl Progress {
    /// `label` names the waiting work ("serve S0", "table"), `unit` what `len` counts.
    pub fn new(mode: Mode, label: &str, len: u64, unit: &str) -> Progress {
        Progress::resumed(mode, label, len, unit, 0)
    }

    /// As [`Progress::new`], with `done` units already finished earlier.
    pub fn resumed(mode: Mode, label: &str, len: u64, unit: &str, done: u64) -> Progress {
        let done = done.min(len);
        let show = match mode {
            Mode::Off => Show::Off,
            Mode::Bar => Show::Bar(bar(label, len, unit, done)),
            Mode::Lines(every) => Show::Lines {
                every,
                state: Mutex::new(LineState {
                    pos: done,
                    last: (Instant::now(), done),
                }),
            },
        };
        Progress {
            label: label.into(),
            unit: unit.into(),
            len,
            base: done,
            start: Instant::now(),
            show,
        }
    }

    /// Sets the position (units done, resumed ones included).
    pub fn set(&self, pos: u64) {
        let pos = pos.min(self.len);
        match &self.show {
            Show::Off => {}
            Show::Bar(b) => b.set_position(pos),
            Show::Lines { every, state } => {
                let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                st.pos = pos;
                let now = Instant::now();
                let (t, p) = st.last;
                // The last line is finish()'s.
                if p != pos && now.duration_since(t) >= *every && pos < self.len {
                    st.last = (now, pos);
                    eprintln!("{}", self.line(pos, now.duration_since(self.start), false));
                }
            }
        }
    }

    /// Prints a line of its own (above the bar on a terminal); nothing when off.
    pub fn println(&self, text: &str) {
        match &self.show {
            Show::Off => {}
            Show::Bar(b) => b.println(text),
            Show::Lines { .. } => eprintln!("{text}"),
        }
    }

    /// The work is done: clears the bar, or prints the closing line.
    pub fn finish(&self) {
        match &self.show {
            Show::Off => {}
            Show::Bar(b) => b.finish_and_clear(),
            Show::Lines { state, .. } => {
                let pos = state.lock().unwrap_or_else(|e| e.into_inner()).pos;
                eprintln!("{}", self.line(pos, self.start.elapsed(), true));
            }
        }
    }

    fn line(&self, pos: u64, elapsed: Duration, done: bool) -> String {
        let eta = (!done)
            .then(|| eta(elapsed, pos, self.len, self.base))
            .flatten();
        line(&self.label, pos, self.len, &self.unit, elapsed, eta, done)
    }
}

fn bar(label: &str, len: u64, unit: &str, base: u64) -> ProgressBar {
    let b = ProgressBar::new(len);
    // The unit is a literal in the template: braces would be read as keys.
    let unit = unit.replace(['{', '}'], "");
    let moved = Arc::new(Mutex::new((base, Duration::ZERO)));
    let style = ProgressStyle::with_template(&format!(
        "{{prefix}} [{{wide_bar}}] {{pos}}/{{len}} {unit} ({{percent}}%), {{took}}, ETA {{left}}"
    ))
    .expect("valid template")
    .progress_chars("=> ")
    .with_key("took", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = w.write_str(&human(s.elapsed()));
    })
    .with_key(
        "left",
        move |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            // The last position and when it was first drawn: between two updates the ETA
            // counts down instead of growing with the time spent waiting.
            let mut at = moved.lock().unwrap_or_else(|e| e.into_inner());
            if at.0 != s.pos() {
                *at = (s.pos(), s.elapsed());
            }
            let t = eta_since(at.1, s.elapsed(), at.0, s.len().unwrap_or(0), base);
            let _ = w.write_str(&t.map(human).unwrap_or_else(|| "?".into()));
        },
    );
    b.set_style(style);
    b.set_prefix(label.to_string());
    b.set_position(base);
    // Elapsed time and ETA move on while a long step holds the position.
    b.enable_steady_tick(Duration::from_secs(1));
    b
}

/// Time left at the rate of the work done since the start (`base` units were done before).
pub fn eta(elapsed: Duration, pos: u64, len: u64, base: u64) -> Option<Duration> {
    let fresh = pos.saturating_sub(base);
    if fresh == 0 || pos > len {
        return None;
    }
    let left = (len - pos) as f64;
    Some(elapsed.mul_f64(left / fresh as f64))
}

/// [`eta`] as of `now`, the position having last moved at `moved`: it counts down while
/// the position holds.
pub fn eta_since(
    moved: Duration,
    now: Duration,
    pos: u64,
    len: u64,
    base: u64,
) -> Option<Duration> {
    eta(moved, pos, len, base).map(|t| t.saturating_sub(now.saturating_sub(moved)))
}

/// `serve S0: 1200/6889 patches (17%), 12 s, ETA 58 s`; at the end `..., 1 min 10 s, done`.
pub fn line(
    label: &str,
    pos: u64,
    len: u64,
    unit: &str,
    elapsed: Duration,
    eta: Option<Duration>,
    done: bool,
) -> String {
    let pct = (pos * 100).checked_div(len).unwrap_or(100);
    let tail = if done {
        "done".to_string()
    } else {
        match eta {
            Some(t) => format!("ETA {}", human(t)),
            None => "ETA ?".to_string(),
        }
    };
    format!(
        "{label}: {pos}/{len} {unit} ({pct}%), {}, {tail}",
        human(elapsed)
    )
}

/// A duration as a person reads it: `12 s`, `3 min 05 s`, `1 h 07 min`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs_f64().round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
    }
}

/// Numbered steps of a longer command (`[2/6] sharing the image`), on stderr unless off.
pub struct Steps {
    mode: Mode,
    at: usize,
    total: usize,
}

impl Steps {
    pub fn new(mode: Mode, total: usize) -> Steps {
        Steps { mode, at: 0, total }
    }

    /// Announces the next step as it starts.
    pub fn start(&mut self, what: &str) {
        self.at += 1;
        if !self.mode.is_off() {
            eprintln!("[{}/{}] {what}", self.at, self.total);
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_a_person_says_them() {
        assert_eq!(human(Duration::from_millis(400)), "0 s");
        assert_eq!(human(Duration::from_secs(59)), "59 s");
        assert_eq!(human(Duration::from_secs(65)), "1 min 05 s");
        assert_eq!(human(Duration::from_secs(3599)), "59 min 59 s");
        assert_eq!(human(Duration::from_secs(3600 + 7 * 60 + 30)), "1 h 07 min");
    }

    #[test]
    fn eta_is_the_rate_so_far_over_what_is_left() {
        let ten = Duration::from_secs(10);
        assert_eq!(eta(ten, 25, 100, 0), Some(Duration::from_secs(30)));
        // Nothing done yet: no rate.
        assert_eq!(eta(ten, 0, 100, 0), None);
        // Resumed work is done but took no time here.
        assert_eq!(eta(ten, 60, 100, 50), Some(Duration::from_secs(40)));
        assert_eq!(eta(ten, 50, 100, 50), None);
        assert_eq!(eta(ten, 100, 100, 0), Some(Duration::ZERO));
        // 25% after 10 s, 4 s ago: 30 s from then, 26 s from now; never below zero.
        let secs = Duration::from_secs;
        assert_eq!(eta_since(ten, secs(14), 25, 100, 0), Some(secs(26)));
        assert_eq!(eta_since(ten, secs(99), 25, 100, 0), Some(Duration::ZERO));
        assert_eq!(eta_since(ten, secs(14), 0, 100, 0), None);
    }

    #[test]
    fn lines_say_position_share_time_and_eta() {
        let l = line(
            "serve S0",
            1200,
            6889,
            "patches",
            Duration::from_secs(12),
            Some(Duration::from_secs(58)),
            false,
        );
        assert_eq!(l, "serve S0: 1200/6889 patches (17%), 12 s, ETA 58 s");
        let l = line("table", 0, 15, "runs", Duration::from_secs(1), None, false);
        assert_eq!(l, "table: 0/15 runs (0%), 1 s, ETA ?");
        let l = line(
            "serve S1",
            6889,
            6889,
            "patches",
            Duration::from_secs(70),
            None,
            true,
        );
        assert_eq!(l, "serve S1: 6889/6889 patches (100%), 1 min 10 s, done");
        assert_eq!(
            line("x", 0, 0, "u", Duration::ZERO, None, true),
            "x: 0/0 u (100%), 0 s, done"
        );
    }

    #[test]
    fn quiet_and_json_turn_progress_off() {
        assert_eq!(Mode::new(true, false).unwrap(), Mode::Off);
        assert_eq!(Mode::new(false, true).unwrap(), Mode::Off);
        assert_ne!(Mode::new(false, false).unwrap(), Mode::Off);
    }
}
