//! Human output (aligned tables, spinners) and `--json`.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// Columns padded to their widest cell; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.trim_end().to_owned()
    };
    let mut lines = vec![line(headers.to_vec())];
    lines.extend(rows.iter().map(|r| line(r.iter().map(String::as_str).collect())));
    lines.join("\n")
}

pub fn print_json(value: &impl Serialize) {
    crate::outln!("{}", serde_json::to_string_pretty(value).expect("API types serialise"));
}

/// A spinner on stderr for a wait; hidden with `--json` or when stderr is not a terminal.
pub fn spinner(message: impl Into<String>, json: bool) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"));
    bar.set_message(message.into());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// Now, in milliseconds since the Unix epoch: the CLI's one reading of the wall clock.
#[allow(clippy::disallowed_methods)] // the one marked place
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A duration like `3m 05s` for tables.
pub fn human_ms(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {:02}s", s / 60, s % 60),
        s => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

/// Writes a line to stdout. A closed pipe (`herd … | head`) ends the process quietly, as
/// for any Unix tool, instead of panicking.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout.write_fmt(args).and_then(|_| stdout.write_all(b"\n")) {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

/// `println!` that tolerates a closed pipe (see `write_stdout`).
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let text = table(&["ID", "STATE"], &[vec!["a".into(), "ready".into()], vec!["long-id".into(), "x".into()]]);
        assert_eq!(text, "ID       STATE\na        ready\nlong-id  x");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_ms(5_000), "5s");
        assert_eq!(human_ms(185_000), "3m 05s");
        assert_eq!(human_ms(7_500_000), "2h 05m");
    }
}
