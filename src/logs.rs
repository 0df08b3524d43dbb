//! Build logs on disk: written as output arrives, capped, readable and
//! followable while the build runs, compressed with zstd when it ends, and
//! deleted by retention.
//!
//! Layout: `<state_dir>/logs/<build>/<attempt>.log` while an attempt runs,
//! `<attempt>.log.zst` once it has ended. Files rather than database rows:
//! appends are cheap, readers share the page cache, and the database stays
//! small enough to back up in seconds.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::{mpsc, watch};

use crate::log_window::{Want, Window};
use crate::queue::{LogStats, now_ms};
use crate::store::{SqlResultExt, Store, StoreError};

/// Size of the pieces logs are read and streamed in.
const CHUNK: usize = 64 * 1024;

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
}

impl LogStore {
    /// Logs under `dir`, each attempt capped at `max_bytes`.
    pub fn new(dir: PathBuf, max_bytes: u64) -> LogStore {
        LogStore {
            dir,
            max_bytes,
            live: Mutex::new(HashMap::new()),
            started: tokio::sync::Notify::new(),
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

    fn live(&self, build: i64, attempt: i64) -> Option<watch::Receiver<LiveState>> {
        self.live
            .lock()
            .expect("live logs")
            .get(&(build, attempt))
            .map(|s| s.subscribe())
    }

    /// The log of an attempt from byte `offset`: what exists now, or with
    /// `follow` everything until the attempt ends. A reader joining a running
    /// attempt gets every byte exactly once.
    pub fn stream(
        self: &Arc<Self>,
        build: i64,
        attempt: i64,
        offset: u64,
        follow: bool,
    ) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        let (sender, receiver) = mpsc::channel::<io::Result<Bytes>>(4);
        let store = self.clone();
        tokio::spawn(async move {
            if let Err(e) = store.pump(build, attempt, offset, follow, &sender).await {
                let _ = sender.send(Err(e)).await;
            }
        });
        tokio_stream_from(receiver)
    }

    async fn pump(
        self: Arc<Self>,
        build: i64,
        attempt: i64,
        offset: u64,
        follow: bool,
        out: &mpsc::Sender<io::Result<Bytes>>,
    ) -> io::Result<()> {
        let mut live = self.live(build, attempt);
        if follow && live.is_none() {
            live = self.await_start(build, attempt).await;
        }
        if let Some(mut progress) = live {
            // The file may have been compressed and unlinked since; then the
            // compressed copy below has the same bytes.
            if let Ok(file) = File::open(self.plain_path(build, attempt)) {
                let mut file = Some(file);
                let mut pos = offset;
                loop {
                    let state = *progress.borrow_and_update();
                    pos = send_range(&mut file, pos, state.len, out).await?;
                    if state.done || !follow {
                        return Ok(());
                    }
                    if progress.changed().await.is_err() {
                        let state = *progress.borrow();
                        send_range(&mut file, pos, state.len, out).await?;
                        return Ok(());
                    }
                    if out.is_closed() {
                        return Ok(());
                    }
                }
            }
        }
        let compressed = self.compressed_path(build, attempt);
        let plain = self.plain_path(build, attempt);
        let out = out.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            let mut reader: Box<dyn Read> = match File::open(&compressed) {
                Ok(file) => Box::new(zstd::Decoder::new(file)?),
                Err(e) if e.kind() == io::ErrorKind::NotFound => match File::open(&plain) {
                    Ok(file) => Box::new(file),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Err(io::Error::new(io::ErrorKind::NotFound, "log not found"));
                    }
                    Err(e) => return Err(e),
                },
                Err(e) => return Err(e),
            };
            io::copy(&mut reader.by_ref().take(offset), &mut io::sink())?;
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = reader.read(&mut buf)?;
                if n == 0
                    || out
                        .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .is_err()
                {
                    return Ok(());
                }
            }
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Waits (bounded) for an attempt that has no file yet to start: the
    /// database may say a build runs a moment before its worker opens the
    /// log.
    async fn await_start(&self, build: i64, attempt: i64) -> Option<watch::Receiver<LiveState>> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let started = self.started.notified();
            {
                // Under the lock `create` holds while it makes the file: a
                // file without a live entry is a finished (or orphaned) log.
                let live = self.live.lock().expect("live logs");
                if let Some(sender) = live.get(&(build, attempt)) {
                    return Some(sender.subscribe());
                }
                if self.compressed_path(build, attempt).exists()
                    || self.plain_path(build, attempt).exists()
                {
                    return None;
                }
            }
            if tokio::time::timeout_at(deadline, started).await.is_err() {
                return None;
            }
        }
    }

    /// Reads part of an attempt's log (blocking); an attempt without a log
    /// reads as empty.
    pub fn window(&self, build: i64, attempt: i64, want: Want) -> io::Result<Window> {
        let open = || -> io::Result<Option<Box<dyn Read>>> {
            match File::open(self.compressed_path(build, attempt)) {
                Ok(file) => return Ok(Some(Box::new(zstd::Decoder::new(file)?))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            match File::open(self.plain_path(build, attempt)) {
                Ok(file) => Ok(Some(Box::new(file))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        };
        // An attempt that just ended has its plain file compressed and
        // removed: the second look finds the compressed copy.
        let reader = match open()? {
            Some(reader) => Some(reader),
            None => open()?,
        };
        match reader {
            Some(reader) => crate::log_window::read(reader, want),
            None => Ok(Window {
                line: 1,
                ..Window::default()
            }),
        }
    }

    /// Deletes both files of an attempt.
    fn remove(&self, build: i64, attempt: i64) -> io::Result<()> {
        for path in [
            self.plain_path(build, attempt),
            self.compressed_path(build, attempt),
        ] {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        let dir = self.dir.join(build.to_string());
        let _ = fs::remove_dir(dir);
        Ok(())
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

/// Sends bytes `[pos, end)` of `file`; returns the new position.
async fn send_range(
    file: &mut Option<File>,
    mut pos: u64,
    end: u64,
    out: &mpsc::Sender<io::Result<Bytes>>,
) -> io::Result<u64> {
    while pos < end {
        let mut handle = file.take().expect("file is returned after every read");
        let want = (end - pos).min(CHUNK as u64) as usize;
        let (handle, chunk) =
            tokio::task::spawn_blocking(move || -> io::Result<(File, Vec<u8>)> {
                let mut buf = vec![0u8; want];
                handle.seek(SeekFrom::Start(pos))?;
                let n = handle.read(&mut buf)?;
                buf.truncate(n);
                Ok((handle, buf))
            })
            .await
            .map_err(io::Error::other)??;
        *file = Some(handle);
        if chunk.is_empty() {
            break;
        }
        pos += chunk.len() as u64;
        if out.send(Ok(Bytes::from(chunk))).await.is_err() {
            return Ok(end);
        }
    }
    Ok(pos)
}

fn tokio_stream_from(
    mut receiver: mpsc::Receiver<io::Result<Bytes>>,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

fn compress(plain: &Path, compressed: &Path) -> io::Result<()> {
    let tmp = compressed.with_extension("zst.tmp");
    let result = (|| {
        let mut input = File::open(plain)?;
        let output = File::create(&tmp)?;
        let mut encoder = zstd::Encoder::new(output, 3)?;
        io::copy(&mut input, &mut encoder)?;
        encoder.finish()?.sync_all()?;
        fs::rename(&tmp, compressed)?;
        fs::remove_file(plain)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
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

/// Deletes the logs of attempts that ended before `now - days` and marks
/// them deleted; builds, attempts and newer logs are untouched. Returns how
/// many attempts' logs were deleted.
pub async fn prune(
    store: &Store,
    logs: &Arc<LogStore>,
    days: u32,
    now: i64,
) -> Result<usize, StoreError> {
    if days == 0 {
        return Ok(0);
    }
    let cutoff = now - i64::from(days) * 86_400_000;
    let doomed: Vec<(i64, i64)> = store
        .read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT build_id, attempt FROM build_attempts \
                     WHERE finished_at < ?1 AND log_deleted_at IS NULL",
                )
                .db()?;
            let rows = stmt
                .query_map([cutoff], |r| Ok((r.get(0)?, r.get(1)?)))
                .db()?;
            rows.collect::<Result<Vec<_>, _>>().db()
        })
        .await?;
    if doomed.is_empty() {
        return Ok(0);
    }
    let logs = logs.clone();
    let removed = tokio::task::spawn_blocking(move || {
        doomed
            .into_iter()
            .filter(|(build, attempt)| match logs.remove(*build, *attempt) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(build_id = build, attempt, error = %e, "cannot delete an expired log");
                    false
                }
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|_| StoreError::Closed)?;
    let count = removed.len();
    store
        .write(move |conn| {
            let deleted_at = now_ms();
            for (build, attempt) in &removed {
                conn.prepare_cached(
                    "UPDATE build_attempts SET log_deleted_at = ?3 WHERE build_id = ?1 AND attempt = ?2",
                )
                .db()?
                .execute(rusqlite::params![build, attempt, deleted_at])
                .db()?;
            }
            Ok(())
        })
        .await?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    async fn collect(stream: impl Stream<Item = io::Result<Bytes>>) -> Vec<u8> {
        let mut out = Vec::new();
        futures_util::pin_mut!(stream);
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    }

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

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_follower_racing_the_start_of_an_attempt_gets_all_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Arc::new(LogStore::new(dir.path().to_path_buf(), 1 << 20));
        for build in 1..=300 {
            let follower = tokio::spawn(collect(logs.stream(build, 1, 0, true)));
            let writer_logs = logs.clone();
            tokio::task::spawn_blocking(move || {
                let mut writer = writer_logs.create(build, 1).unwrap();
                writer.note("header\n").unwrap();
                writer.write(b"output\n").unwrap();
                writer.finish();
            })
            .await
            .unwrap();
            assert_eq!(
                follower.await.unwrap(),
                b"header\noutput\n",
                "build {build}"
            );
        }
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

    #[tokio::test]
    async fn follower_joining_mid_attempt_gets_every_byte_once() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Arc::new(LogStore::new(dir.path().to_path_buf(), 1 << 20));
        let mut writer = logs.create(7, 1).unwrap();
        writer.write(b"first\n").unwrap();
        let follower = tokio::spawn(collect(logs.stream(7, 1, 0, true)));
        let late = tokio::spawn(collect(logs.stream(7, 1, 3, true)));
        let mut expected = b"first\n".to_vec();
        for i in 0..200 {
            let line = format!("line {i}\n");
            writer.write(line.as_bytes()).unwrap();
            expected.extend_from_slice(line.as_bytes());
            if i % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
        tokio::task::spawn_blocking(move || writer.finish())
            .await
            .unwrap();
        assert_eq!(follower.await.unwrap(), expected);
        assert_eq!(late.await.unwrap(), expected[3..]);
    }
}
