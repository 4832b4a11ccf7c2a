//! Human output: aligned tables and short times. `--json` output is the API's own JSON.

use std::io::Write;

use time::OffsetDateTime;

/// Write one line to stdout. A closed pipe (`muster job list | head`) ends the program quietly
/// with success, as other command-line tools do, instead of a panic.
pub(crate) fn write_line(text: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout
        .write_fmt(text)
        .and_then(|()| stdout.write_all(b"\n"))
    {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        muster_server::logging::note_line(format_args!("error: write to stdout: {error}"));
        std::process::exit(1);
    }
}

/// `println!` that survives a closed pipe; see [`write_line`].
macro_rules! out {
    ($($argument:tt)*) => {
        $crate::output::write_line(format_args!($($argument)*))
    };
}
pub(crate) use out;

/// `eprintln!` that never panics or blocks: a line for the person at the terminal, written in
/// order with the log lines (see `muster_server::logging`).
macro_rules! note {
    ($($argument:tt)*) => {
        muster_server::logging::note_line(format_args!($($argument)*))
    };
}
pub(crate) use note;

/// Print rows as columns padded to their widest cell, with a header.
pub(crate) fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|title| title.chars().count()).collect();
    for row in rows {
        for (index, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(index) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(index, cell)| {
                format!(
                    "{cell:width$}",
                    width = widths.get(index).copied().unwrap_or(0)
                )
            })
            .collect();
        out!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|title| title.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    out!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `2026-11-22 05:53:07` in UTC, or `-`.
pub(crate) fn short_time(at: Option<OffsetDateTime>) -> String {
    match at {
        Some(at) => {
            let format =
                time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
            at.format(&format).unwrap_or_else(|_| at.to_string())
        }
        None => "-".to_string(),
    }
}

pub(crate) fn or_dash(text: Option<&str>) -> String {
    text.filter(|text| !text.is_empty())
        .unwrap_or("-")
        .to_string()
}
