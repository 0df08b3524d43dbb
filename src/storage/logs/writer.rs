//! Writing logs: appended as output arrives, capped, compressed when the
//! attempt ends.

use std::fs::{self, File};
use std::io::{self, Write};
use std::sync::Arc;

use tokio::sync::watch;

use super::frames::compress;
use super::{LiveState, LogStore};
use crate::build::queue::LogStats;

impl LogStore {
    /// Starts the log of an attempt (blocking).
    pub fn create(self: &Arc<Self>, build: i64, attempt: i64) -> io::Result<LogWriter> {
        let path = self.plain_path(build, attempt);
        fs::create_dir_all(path.parent().expect("log files live in a directory"))?;
        // The file appears and the attempt becomes live under one lock, so a
        // reader never sees a running attempt's file without its progress
        // (it would take it for a finished log and stop early).
        let mut live = self.live.lock().expect("live logs");
        let file = File::create(&path)?;
        let (sender, _) = watch::channel(LiveState::default());
        live.insert((build, attempt), sender.clone());
        drop(live);
        self.started.notify_waiters();
        Ok(LogWriter {
            store: self.clone(),
            build,
            attempt,
            file,
            written: 0,
            max: self.max_bytes,
            truncated: false,
            live: sender,
        })
    }

    /// Compresses the log of an attempt that an earlier instance left
    /// uncompressed (it died while the attempt ran).
    pub fn seal_orphan(&self, build: i64, attempt: i64, note: &str) -> LogStats {
        let plain = self.plain_path(build, attempt);
        let Ok(mut file) = fs::OpenOptions::new().append(true).open(&plain) else {
            return LogStats::default();
        };
        let _ = file.write_all(note.as_bytes());
        drop(file);
        let bytes = fs::metadata(&plain).map(|m| m.len()).unwrap_or(0);
        let compressed = compress(&plain, &self.compressed_path(build, attempt)).is_ok();
        LogStats {
            bytes,
            truncated: false,
            compressed,
        }
    }
}

/// Appends a running attempt's output to its file, enforcing the cap.
#[derive(Debug)]
pub struct LogWriter {
    store: Arc<LogStore>,
    build: i64,
    attempt: i64,
    file: File,
    written: u64,
    max: u64,
    truncated: bool,
    live: watch::Sender<LiveState>,
}

impl LogWriter {
    /// Appends a short line of procurator-ci's own (the command, why the
    /// build was stopped) whole, even past the cap: the reason a build ended
    /// must be readable in every log, truncated or not.
    pub fn note(&mut self, text: &str) -> io::Result<()> {
        self.file.write_all(text.as_bytes())?;
        self.written += text.len() as u64;
        let len = self.written;
        self.live.send_modify(|s| s.len = len);
        Ok(())
    }

    /// Appends `data`; past the cap, writes the truncation marker once and
    /// drops the rest (the build goes on).
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if self.truncated {
            return Ok(());
        }
        let room = self.max.saturating_sub(self.written) as usize;
        if data.len() <= room {
            self.file.write_all(data)?;
            self.written += data.len() as u64;
        } else {
            self.file.write_all(&data[..room])?;
            let marker = format!("\n[log truncated at {} bytes]\n", self.max);
            self.file.write_all(marker.as_bytes())?;
            self.written += (room + marker.len()) as u64;
            self.truncated = true;
        }
        let len = self.written;
        self.live.send_modify(|s| s.len = len);
        Ok(())
    }

    /// Bytes stored so far.
    pub fn len(&self) -> u64 {
        self.written
    }

    /// Whether nothing has been stored.
    pub fn is_empty(&self) -> bool {
        self.written == 0
    }

    /// Ends the attempt's log: marks it final for readers, compresses it and
    /// removes it from the live set (blocking).
    pub fn finish(self) -> LogStats {
        let _ = self.file.sync_data();
        let len = self.written;
        self.live.send_modify(|s| {
            s.len = len;
            s.done = true;
        });
        let plain = self.store.plain_path(self.build, self.attempt);
        let compressed = compress(
            &plain,
            &self.store.compressed_path(self.build, self.attempt),
        );
        if let Err(e) = &compressed {
            tracing::warn!(build_id = self.build, error = %e, "cannot compress the log; kept uncompressed");
        }
        self.store
            .live
            .lock()
            .expect("live logs")
            .remove(&(self.build, self.attempt));
        LogStats {
            bytes: len,
            truncated: self.truncated,
            compressed: compressed.is_ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::collect;
    use super::*;

    #[tokio::test]
    async fn cap_truncates_with_marker_and_compressed_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Arc::new(LogStore::new(dir.path().to_path_buf(), 2048));
        let mut writer = logs.create(1, 1).unwrap();
        for _ in 0..100 {
            writer.write(&[b'x'; 100]).unwrap();
        }
        let stats = writer.finish();
        assert!(stats.truncated && stats.compressed);
        assert!(!logs.plain_path(1, 1).exists());
        let text = collect(logs.stream(1, 1, 0, false)).await;
        assert_eq!(&text[..2048], &[b'x'; 2048][..]);
        assert_eq!(
            String::from_utf8_lossy(&text[2048..]),
            "\n[log truncated at 2048 bytes]\n"
        );
        let tail = collect(logs.stream(1, 1, 2040, false)).await;
        assert_eq!(tail, text[2040..]);
    }

    #[tokio::test]
    async fn notes_are_kept_whole_past_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Arc::new(LogStore::new(dir.path().to_path_buf(), 1024));
        let mut writer = logs.create(2, 1).unwrap();
        writer.write(&[b'x'; 2000]).unwrap();
        writer.note("stopped: the reason\n").unwrap();
        writer.write(b"dropped").unwrap();
        let stats = writer.finish();
        let text = collect(logs.stream(2, 1, 0, false)).await;
        assert!(text.ends_with(b"\n[log truncated at 1024 bytes]\nstopped: the reason\n"));
        assert_eq!(stats.bytes as usize, text.len());
        assert!(stats.truncated);
    }
}
