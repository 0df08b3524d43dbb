//! The output pump: copies a build's output into its log as it arrives,
//! parsing each line of nix's internal JSON once for every reader: the plain
//! log, the failure's diagnosis and the live per-check progress.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use tokio::sync::Notify;

use crate::build::checks::{DrvBuild, Renderer};
use crate::build::diagnosis::Diagnosis;
use crate::build::nixlog;
use crate::build::progress::Tracker;
use crate::build::queue::now_ms;
use crate::storage::logs::LogWriter;

/// What the output pump learned by the time the pipe closed.
#[derive(Default)]
pub struct Pumped {
    pub diagnosis: Diagnosis,
    /// Every derivation built, by path.
    pub builds: HashMap<String, DrvBuild>,
}

/// Longest line held back waiting for its newline; longer ones are
/// written as they are.
const MAX_LINE: usize = 64 * 1024;

/// Copies the build's output into its log as it arrives: each line of nix's
/// internal JSON is parsed once, then rendered as plain text (following each
/// derivation's build) and read for the failure's diagnosis; what changed of
/// the derivations' builds goes to `tracker` after each read. Runs on its
/// own thread: the pipe and the file are blocking.
pub fn pump(
    mut reader: std::io::PipeReader,
    writer: &Mutex<LogWriter>,
    last_output: &AtomicI64,
    log_failed: &Notify,
    log_error: &Mutex<Option<String>>,
    tracker: &Tracker,
) -> Pumped {
    let mut pumped = Pumped::default();
    let mut failures_seen = 0;
    let mut renderer = Renderer::default();
    let mut line: Vec<u8> = Vec::new();
    let mut rendered: Vec<u8> = Vec::with_capacity(128 * 1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut failed = false;
    let mut eof = false;
    while !eof {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => 0,
        };
        eof = n == 0;
        let now = now_ms();
        if !eof {
            last_output.store(now, Ordering::Relaxed);
        }
        rendered.clear();
        let base = writer.lock().expect("log writer").len();
        for piece in buf[..n].split_inclusive(|b| *b == b'\n') {
            line.extend_from_slice(piece);
            if line.ends_with(b"\n") || line.len() >= MAX_LINE {
                let text = line.strip_suffix(b"\n").unwrap_or(&line);
                let offset = base + rendered.len() as u64;
                consume(
                    &mut renderer,
                    &mut pumped.diagnosis,
                    text,
                    offset,
                    now,
                    &mut rendered,
                );
                line.clear();
            }
        }
        if eof && !line.is_empty() {
            let offset = base + rendered.len() as u64;
            consume(
                &mut renderer,
                &mut pumped.diagnosis,
                &line,
                offset,
                now,
                &mut rendered,
            );
        }
        let failures = &pumped.diagnosis.failed_drvs;
        let counts = renderer.take_counts();
        tracker.update(
            renderer.take_changed(),
            &failures[failures_seen..],
            counts,
            now,
        );
        failures_seen = failures.len();
        if !failed
            && !rendered.is_empty()
            && let Err(e) = writer.lock().expect("log writer").write(&rendered)
        {
            failed = true;
            *log_error.lock().expect("log error") = Some(e.to_string());
            log_failed.notify_one();
        }
    }
    pumped.builds = renderer.builds;
    pumped
}

/// One line of nix's output, parsed once, for every reader of the log.
fn consume(
    renderer: &mut Renderer,
    diagnosis: &mut Diagnosis,
    line: &[u8],
    offset: u64,
    now: i64,
    out: &mut Vec<u8>,
) {
    match nixlog::parse(line) {
        Some(event) => {
            renderer.event(&event, offset, now, out);
            diagnosis.event(&event);
        }
        None => {
            renderer.plain(line, out);
            diagnosis.plain(line);
        }
    }
}
