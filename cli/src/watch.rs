//! Watching an export build: long polls, its phase on a spinner, a bar while rows are written.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::client::*;
use crate::finished_badly;

/// Where a running export is, as a watcher can tell from its status.
#[derive(Debug, PartialEq)]
pub(crate) enum Phase {
    /// Queued (with the exports ahead of it, when the API says), or claimed but not counted.
    Waiting(String),
    /// Rows counted, none written yet: the worker is reading (and sorting) them.
    Sorting {
        total: u64,
    },
    Writing {
        rows: u64,
        total: u64,
    },
    /// Every row written: the file is being finished and stored.
    Storing {
        total: u64,
    },
    Done {
        rows: u64,
    },
}

pub(crate) fn phase_of(s: &Value) -> Phase {
    let p = &s["progress"];
    let rows = p["rowsWritten"].as_u64().unwrap_or(0);
    let total = p["rowsTotal"].as_u64().unwrap_or(0);
    match s["status"].as_str().unwrap_or("") {
        "QUEUED" => Phase::Waiting(match s["queuePosition"].as_i64() {
            Some(n) => format!("queued, {n} ahead"),
            None => "queued".into(),
        }),
        "IN_PROGRESS" if total == 0 && rows == 0 => Phase::Waiting("starting".into()),
        "IN_PROGRESS" if rows == 0 => Phase::Sorting { total },
        "IN_PROGRESS" if rows >= total => Phase::Storing { total: rows },
        "IN_PROGRESS" => Phase::Writing { rows, total },
        _ => Phase::Done { rows },
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Phase::Waiting(what) => f.write_str(what),
            Phase::Sorting { total } => write!(f, "reading and sorting {total} rows"),
            Phase::Writing { rows, total } => {
                write!(
                    f,
                    "writing {rows}/{total} rows {}%",
                    rows * 100 / total.max(&1)
                )
            }
            Phase::Storing { total } => write!(f, "storing the file ({total} rows)"),
            Phase::Done { rows } => write!(f, "{rows} rows"),
        }
    }
}

/// Waits for the export with long polls, showing its phase (a bar with rows, percent and ETA
/// only while rows are written); returns its final status, or the failure it ended in.
pub(crate) async fn watch(c: &Client, id: &str) -> Outcome<Value> {
    let display = PhaseDisplay::new(c.tty);
    let mut last_line = String::new();
    loop {
        let s = c.json(c.get(&format!("/v1/exports/{id}?wait=1"))).await?;
        let state = s["status"].as_str().unwrap_or("UNKNOWN");
        let eta = s["etaSeconds"]
            .as_f64()
            .map(|e| format!(" ETA {e:.0} s"))
            .unwrap_or_default();
        let phase = phase_of(&s);
        display.show(&phase, &eta);
        let eta = if matches!(phase, Phase::Writing { .. }) {
            eta
        } else {
            String::new()
        };
        let line = format!("{state} {phase}{eta}");
        if line != last_line {
            c.say(&line);
            last_line = line;
        }
        match state {
            "QUEUED" | "IN_PROGRESS" => continue,
            "COMPLETED" => {
                display.bar.finish_and_clear();
                return Ok(s);
            }
            _ => {
                display.bar.abandon();
                return Err(finished_badly(&s));
            }
        }
    }
}

/// A spinner naming the phase, and the bar while rows are written (hidden off a TTY).
struct PhaseDisplay {
    bar: ProgressBar,
    spinner: ProgressStyle,
    counting: ProgressStyle,
}

impl PhaseDisplay {
    fn new(tty: bool) -> Self {
        let spinner = ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let counting = ProgressStyle::with_template(
            "{spinner} writing  [{bar:32}] {pos}/{len} rows {percent:>3}%  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let bar = if tty {
            let b = ProgressBar::new(0);
            b.set_style(spinner.clone());
            b.set_message("starting");
            b.enable_steady_tick(Duration::from_millis(120));
            b
        } else {
            ProgressBar::hidden()
        };
        PhaseDisplay {
            bar,
            spinner,
            counting,
        }
    }

    fn show(&self, phase: &Phase, eta: &str) {
        match phase {
            Phase::Writing { rows, total } => {
                self.bar.set_style(self.counting.clone());
                self.bar.set_length(*total);
                self.bar.set_position(*rows);
                self.bar.set_message(eta.trim().to_string());
            }
            other => {
                self.bar.set_style(self.spinner.clone());
                self.bar.set_message(other.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(status: &str, rows: u64, total: u64) -> Phase {
        phase_of(&json!({
            "status": status, "queuePosition": 2,
            "progress": {"rowsWritten": rows, "rowsTotal": total}
        }))
    }

    #[test]
    fn a_watcher_sees_the_phase_not_a_percentage_that_stands_still() {
        assert_eq!(at("QUEUED", 0, 0).to_string(), "queued, 2 ahead");
        assert_eq!(at("IN_PROGRESS", 0, 0).to_string(), "starting");
        // Counted, nothing written: the sort, not "0 %".
        assert_eq!(
            at("IN_PROGRESS", 0, 3_000_000).to_string(),
            "reading and sorting 3000000 rows"
        );
        assert_eq!(
            at("IN_PROGRESS", 750, 3_000).to_string(),
            "writing 750/3000 rows 25%"
        );
        assert_eq!(
            at("IN_PROGRESS", 3_000, 3_000).to_string(),
            "storing the file (3000 rows)"
        );
        assert_eq!(at("COMPLETED", 3_000, 3_000).to_string(), "3000 rows");
    }
}
