//! Build logs on disk: written as output arrives, capped, readable and
//! followable while the build runs, compressed with zstd when it ends, and
//! deleted by retention.
//!
//! Layout: `<state_dir>/logs/<build>/<attempt>.log` while an attempt runs,
//! `<attempt>.log.zst` once it has ended. Files rather than database rows:
//! appends are cheap, readers share the page cache, and the database stays
//! small enough to back up in seconds.
//!
//! Here: the store and its set of live attempts. `writer` appends and ends
//! an attempt's log, `reader` streams and follows it, `frames` is the
//! format of ended logs, `retention` deletes old ones.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

mod frames;
mod reader;
mod retention;
pub mod window;
mod writer;

pub use retention::prune;
pub use writer::LogWriter;

/// Uncompressed size of each zstd frame of an ended log, and of each read
/// of a running one: the piece a reader hands to its connection, and all it
/// holds, whatever the log's size. Small, because a connection that stops
/// reading keeps what it was handed (`crate::http::listener::MAX_BUF` and one
/// piece); frames this size compress logs about as well as whole files.
pub const FRAME_BYTES: usize = 16 * 1024;

/// Log reads (disk and decompression) that run at once on the blocking pool.
pub const READ_JOBS: usize = 4;

/// Progress of an attempt's log that readers can wait on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveState {
    /// Bytes in the file so far.
    pub len: u64,
    /// The attempt has ended; `len` is final.
    pub done: bool,
}

type LiveMap = HashMap<(i64, i64), watch::Sender<LiveState>>;

/// The log files of every build.
#[derive(Debug)]
pub struct LogStore {
    dir: PathBuf,
    max_bytes: u64,
    live: Mutex<LiveMap>,
    /// Signalled whenever an attempt's log starts, for followers that asked
    /// for an attempt a worker has claimed but not yet begun writing.
    started: tokio::sync::Notify,
    /// Admits [`READ_JOBS`] reads at once.
    reads: Arc<tokio::sync::Semaphore>,
    /// Held while a log of an earlier version is rewritten into frames.
    reframing: tokio::sync::Mutex<()>,
}

impl LogStore {
    /// Logs under `dir`, each attempt capped at `max_bytes`.
    pub fn new(dir: PathBuf, max_bytes: u64) -> LogStore {
        LogStore {
            dir,
            max_bytes,
            live: Mutex::new(HashMap::new()),
            started: tokio::sync::Notify::new(),
            reads: Arc::new(tokio::sync::Semaphore::new(READ_JOBS)),
            reframing: tokio::sync::Mutex::new(()),
        }
    }

    /// The file of a running attempt.
    pub fn plain_path(&self, build: i64, attempt: i64) -> PathBuf {
        self.dir
            .join(build.to_string())
            .join(format!("{attempt}.log"))
    }

    /// The file of an ended attempt.
    pub fn compressed_path(&self, build: i64, attempt: i64) -> PathBuf {
        self.dir
            .join(build.to_string())
            .join(format!("{attempt}.log.zst"))
    }

    fn live(&self, build: i64, attempt: i64) -> Option<watch::Receiver<LiveState>> {
        self.live
            .lock()
            .expect("live logs")
            .get(&(build, attempt))
            .map(|s| s.subscribe())
    }
}

/// What the tests of every part of the log store share.
#[cfg(test)]
mod testing {
    use std::io;

    use bytes::Bytes;
    use futures_util::{Stream, StreamExt};

    /// Everything `stream` yields, until it ends.
    pub(super) async fn collect(stream: impl Stream<Item = io::Result<Bytes>>) -> Vec<u8> {
        let mut out = Vec::new();
        futures_util::pin_mut!(stream);
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    }

    /// A log of `len` bytes that differ from frame to frame.
    pub(super) fn varied(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i % 251) as u8 ^ (i / 7919) as u8)
            .collect()
    }
}
