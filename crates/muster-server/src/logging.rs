//! Logging that can never panic, block a request or hold up a shutdown.
//!
//! A coordinator's standard error is often a pipe: a terminal that may be closed, a log collector
//! that may restart, `muster server | head`. Writing to a pipe whose reader is gone fails, and
//! writing to one whose reader stopped reading blocks once the pipe's buffer is full. Neither may
//! reach a request handler or the shutdown path, so log lines go through a bounded queue to one
//! writer thread: a full queue drops the line (counted), a failed write is counted and ignored,
//! and a shutdown waits for the queue to drain for at most [`FLUSH_WAIT`].
//!
//! This is hand-written rather than `tracing-appender`'s non-blocking writer because that
//! writer's guard prints to standard output when its queue is full at shutdown, and printing
//! with `println!` to a closed pipe panics.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

/// Log lines held while the destination is slow; past this, lines are dropped.
const QUEUE_LINES: usize = 16_384;
/// How long a shutdown waits for queued lines to be written.
const FLUSH_WAIT: Duration = Duration::from_secs(1);

/// Lines that never reached the destination: dropped from a full queue, or whose write failed.
static LINES_LOST: AtomicU64 = AtomicU64::new(0);
/// Whether the loss of lines has been reported (at most once per process).
static LOSS_REPORTED: AtomicBool = AtomicBool::new(false);
/// The writer thread's queue, once [`init`] ran; notes for people go through it too, so they
/// keep their place among the log lines and never block.
static QUEUE: OnceLock<SyncSender<Message>> = OnceLock::new();

/// Log lines lost so far (queue full or destination gone), for `/metrics`.
pub fn lines_lost() -> u64 {
    LINES_LOST.load(Ordering::Relaxed)
}

enum Message {
    Line(Vec<u8>),
    /// Answered once every line queued before it was written (or failed).
    Flush(std::sync::mpsc::Sender<()>),
}

/// Keeps the writer thread's queue flushed at the end of `main`: dropping it waits up to
/// [`FLUSH_WAIT`] for lines queued so far to be written.
pub struct LogGuard {
    queue: SyncSender<Message>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let (done, finished) = std::sync::mpsc::channel();
        let deadline = Instant::now() + FLUSH_WAIT;
        let mut message = Message::Flush(done);
        loop {
            match self.queue.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(returned)) if Instant::now() < deadline => {
                    message = returned;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return,
            }
        }
        let _ = finished.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}

/// The `tracing` writer: hands each formatted event to the queue without waiting.
#[derive(Clone)]
struct QueueWriter {
    queue: SyncSender<Message>,
}

fn enqueue(queue: &SyncSender<Message>, line: Vec<u8>) {
    if queue.try_send(Message::Line(line)).is_err() {
        LINES_LOST.fetch_add(1, Ordering::Relaxed);
    }
}

impl Write for QueueWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        // The formatter writes one whole event per call, so a dropped write is a dropped line.
        enqueue(&self.queue, bytes.to_vec());
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'writer> tracing_subscriber::fmt::MakeWriter<'writer> for QueueWriter {
    type Writer = QueueWriter;

    fn make_writer(&'writer self) -> QueueWriter {
        self.clone()
    }
}

fn write_lines(queue: Receiver<Message>) {
    let mut reported_to_destination = false;
    for message in queue {
        match message {
            Message::Line(line) => {
                if std::io::stderr().lock().write_all(&line).is_err() {
                    LINES_LOST.fetch_add(1, Ordering::Relaxed);
                }
                // Once lines were dropped and the destination takes lines again, say so once.
                let lost = LINES_LOST.load(Ordering::Relaxed);
                if lost > 0
                    && !reported_to_destination
                    && !LOSS_REPORTED.swap(true, Ordering::Relaxed)
                {
                    reported_to_destination = true;
                    let notice = format!(
                        "muster: {lost} log lines were lost because the log destination did not take them (muster_log_lines_lost_total counts them)\n"
                    );
                    let _ = std::io::stderr().lock().write_all(notice.as_bytes());
                }
            }
            Message::Flush(done) => {
                let _ = std::io::stderr().lock().flush();
                let _ = done.send(());
            }
        }
    }
}

/// Install the process's log subscriber: lines to standard error through the queue, filtered
/// by `MUSTER_LOG` (default `default_filter`), colours only on a terminal. Keep the guard until
/// the end of `main`.
pub fn init(default_filter: &str) -> LogGuard {
    let (queue, lines) = std::sync::mpsc::sync_channel(QUEUE_LINES);
    let spawned = std::thread::Builder::new()
        .name("muster-log".into())
        .spawn(move || write_lines(lines));
    if spawned.is_err() {
        // Without the thread nothing is logged, but nothing blocks either: the queue fills and
        // lines are counted as lost.
        LINES_LOST.fetch_add(1, Ordering::Relaxed);
    }
    let _ = QUEUE.set(queue.clone());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MUSTER_LOG")
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(QueueWriter {
            queue: queue.clone(),
        })
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // The formatter would otherwise report its own write failures with `eprintln!`, which
        // panics when standard error is closed.
        .log_internal_errors(false)
        .try_init();
    LogGuard { queue }
}

/// Write one line to standard output, ignoring failure: what the coordinator prints for
/// scripts (the `listening on` line) must not panic when nobody reads it any more.
pub fn print_line(text: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_fmt(text)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
}

/// Write one line to standard error for the person at the terminal, as the log lines are
/// written: never blocking, never panicking, dropped when the destination is gone.
pub fn note_line(text: std::fmt::Arguments<'_>) {
    let line = format!("{text}\n").into_bytes();
    match QUEUE.get() {
        Some(queue) => enqueue(queue, line),
        None => {
            let _ = std::io::stderr().lock().write_all(&line);
        }
    }
}
