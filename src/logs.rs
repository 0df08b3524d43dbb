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
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::watch;

use crate::log_window::{Want, Window};
use crate::queue::{LogStats, now_ms};
use crate::store::{SqlResultExt, Store, StoreError};

/// Uncompressed size of each zstd frame of an ended log, and of each read
/// of a running one: the piece a reader hands to its connection, and all it
/// holds, whatever the log's size. Small, because a connection that stops
/// reading keeps what it was handed (`crate::listener::MAX_BUF` and one
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
    ///
    /// Nothing is read ahead of the consumer: each piece is read (and an
    /// ended log's frame decoded) on the blocking pool when the connection
    /// asks for it, so a client that stops reading parks no thread and holds
    /// at most one frame ([`FRAME_BYTES`]) whatever the log's size.
    pub fn stream(
        self: &Arc<Self>,
        build: i64,
        attempt: i64,
        offset: u64,
        follow: bool,
    ) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        let reader = Reader {
            store: self.clone(),
            build,
            attempt,
            follow,
            pos: offset,
            source: None,
            ended: false,
        };
        futures_util::stream::unfold(reader, |mut reader| async move {
            if reader.ended {
                return None;
            }
            match reader.next().await {
                Ok(Some(piece)) => Some((Ok(piece), reader)),
                Ok(None) => None,
                Err(e) => {
                    reader.ended = true;
                    Some((Err(e), reader))
                }
            }
        })
    }

    /// Runs a log read on the blocking pool, at most [`READ_JOBS`] at once:
    /// however many clients read logs, the pool keeps room for the
    /// database and git.
    async fn read_job<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        // Held by the job itself: a client that goes away does not free its
        // place before the read ends.
        let permit = self
            .reads
            .clone()
            .acquire_owned()
            .await
            .map_err(io::Error::other)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            job()
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Rewrites a log that an earlier version compressed as one zstd frame
    /// into frames of [`FRAME_BYTES`], so it can be read a frame at a time.
    /// One at a time: decoding such a log holds its whole window (MiBs).
    async fn reframe(&self, path: PathBuf) -> io::Result<()> {
        let _one = self.reframing.lock().await;
        self.read_job(move || {
            let file = File::open(&path)?;
            if !matches!(read_frame(&file, 0, 0)?, Frame::Unframed) {
                return Ok(());
            }
            let tmp = path.with_extension("zst.reframe");
            let result = write_frames(zstd::Decoder::new(file)?, &tmp)
                .and_then(|()| fs::rename(&tmp, &path));
            if result.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            result
        })
        .await
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

/// Where a reader's bytes come from. Files are opened for each read, not
/// held: a connection costs one descriptor, its socket's, however long it
/// lasts (see `crate::listener` on reserved descriptors).
enum Source {
    /// A running attempt's file, readable up to what its writer reported.
    Live {
        progress: watch::Receiver<LiveState>,
    },
    /// An ended attempt's zstd frames; `at` is the next frame's offset.
    Framed { at: u64 },
    /// An ended attempt kept uncompressed (compressing it failed).
    Plain,
}

/// One client's read of one attempt's log.
struct Reader {
    store: Arc<LogStore>,
    build: i64,
    attempt: i64,
    follow: bool,
    /// Offset in the log of the next byte to hand out (for an ended log
    /// before its frames are reached: the bytes still to skip).
    pos: u64,
    source: Option<Source>,
    /// An error was handed out: the stream ends.
    ended: bool,
}

impl Reader {
    /// The next piece of the log, `None` at its end.
    async fn next(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            let source = match self.source.take() {
                Some(source) => source,
                None => self.open().await?,
            };
            let plain = self.store.plain_path(self.build, self.attempt);
            let compressed = self.store.compressed_path(self.build, self.attempt);
            match source {
                Source::Live { mut progress } => {
                    let state = *progress.borrow_and_update();
                    if self.pos < state.len {
                        let pos = self.pos;
                        let want = (state.len - pos).min(FRAME_BYTES as u64) as usize;
                        match self
                            .store
                            .read_job(move || read_at(&File::open(plain)?, pos, want))
                            .await
                        {
                            Ok(chunk) if chunk.is_empty() => return Ok(None),
                            Ok(chunk) => {
                                self.pos += chunk.len() as u64;
                                self.source = Some(Source::Live { progress });
                                return Ok(Some(chunk));
                            }
                            // Ended and compressed meanwhile: the same bytes
                            // are in the frames (`pos` is what to skip).
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                                self.source = Some(Source::Framed { at: 0 });
                                continue;
                            }
                            Err(e) => return Err(e),
                        }
                    } else if state.done || !self.follow {
                        return Ok(None);
                    } else if progress.changed().await.is_err() {
                        // The writer is gone: what it reported last is final.
                        self.follow = false;
                    }
                    self.source = Some(Source::Live { progress });
                }
                Source::Framed { at } => {
                    let skip = self.pos;
                    let path = compressed.clone();
                    match self
                        .store
                        .read_job(move || read_frame(&File::open(path)?, at, skip))
                        .await?
                    {
                        Frame::End => return Ok(None),
                        Frame::Data {
                            next,
                            skipped,
                            bytes,
                        } => {
                            self.pos -= skipped;
                            self.source = Some(Source::Framed { at: next });
                            return Ok(Some(bytes));
                        }
                        Frame::Unframed => {
                            self.store.reframe(compressed).await?;
                            self.source = Some(Source::Framed { at: 0 });
                        }
                    }
                }
                Source::Plain => {
                    let pos = self.pos;
                    let chunk = self
                        .store
                        .read_job(move || read_at(&File::open(plain)?, pos, FRAME_BYTES))
                        .await?;
                    if chunk.is_empty() {
                        return Ok(None);
                    }
                    self.pos += chunk.len() as u64;
                    self.source = Some(Source::Plain);
                    return Ok(Some(chunk));
                }
            }
        }
    }

    /// Finds the attempt's file: the running one, or the ended one.
    async fn open(&mut self) -> io::Result<Source> {
        let store = self.store.clone();
        let (build, attempt) = (self.build, self.attempt);
        let mut live = store.live(build, attempt);
        if self.follow && live.is_none() {
            live = store.await_start(build, attempt).await;
        }
        let plain = store.plain_path(build, attempt);
        let compressed = store.compressed_path(build, attempt);
        store
            .read_job(move || {
                // The file may have been compressed and unlinked since; then
                // the compressed copy has the same bytes.
                if let Some(progress) = live
                    && plain.exists()
                {
                    return Ok(Source::Live { progress });
                }
                if compressed.exists() {
                    return Ok(Source::Framed { at: 0 });
                }
                if plain.exists() {
                    return Ok(Source::Plain);
                }
                Err(io::Error::new(io::ErrorKind::NotFound, "log not found"))
            })
            .await
    }
}

/// Up to `len` bytes of `file` at `pos` (fewer at its end).
fn read_at(file: &File, pos: u64, len: usize) -> io::Result<Bytes> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut buf[filled..], pos + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(Bytes::from(buf))
}

/// What one step through an ended log's frames found.
enum Frame {
    /// The frame ending before `next`, decoded, after `skipped` bytes of it
    /// and of the frames before it were skipped.
    Data {
        next: u64,
        skipped: u64,
        bytes: Bytes,
    },
    /// No frame is left.
    End,
    /// The file is one large frame (written by an earlier version).
    Unframed,
}

/// Decodes the frame at `at`, first skipping whole frames while `skip`
/// covers them (only their headers are read).
fn read_frame(file: &File, mut at: u64, skip: u64) -> io::Result<Frame> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut skipped = 0;
    loop {
        let buf = read_at(file, at, zstd::zstd_safe::compress_bound(FRAME_BYTES))?;
        if buf.is_empty() {
            return Ok(Frame::End);
        }
        let content = match zstd::zstd_safe::get_frame_content_size(&buf) {
            Ok(Some(n)) if n <= FRAME_BYTES as u64 => n,
            Ok(_) if at == 0 => return Ok(Frame::Unframed),
            Ok(_) => return Err(bad("a log frame is larger than a frame may be")),
            Err(_) => return Err(bad("the compressed log is damaged")),
        };
        let size = zstd::zstd_safe::find_frame_compressed_size(&buf)
            .map_err(|_| bad("the compressed log is damaged"))? as u64;
        if content == 0 || skip - skipped >= content {
            skipped += content;
            at += size;
            continue;
        }
        let decoded = zstd::bulk::decompress(&buf[..size as usize], content as usize)?;
        let from = (skip - skipped) as usize;
        return Ok(Frame::Data {
            next: at + size,
            skipped: skip,
            bytes: Bytes::from(decoded).slice(from..),
        });
    }
}

/// Writes `input` to `path` as zstd frames of [`FRAME_BYTES`] each, with
/// their sizes in their headers: a reader can then skip to an offset and
/// decode one frame at a time. (`zstdcat` reads it as one stream.)
fn write_frames(mut input: impl Read, path: &Path) -> io::Result<()> {
    let mut output = io::BufWriter::new(File::create(path)?);
    let mut compressor = zstd::bulk::Compressor::new(3)?;
    let mut buf = vec![0u8; FRAME_BYTES];
    let mut first = true;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match input.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // An empty log is one empty frame: still a valid zstd file.
        if filled == 0 && !first {
            break;
        }
        first = false;
        output.write_all(&compressor.compress(&buf[..filled])?)?;
        if filled < buf.len() {
            break;
        }
    }
    output.into_inner().map_err(|e| e.into_error())?.sync_all()
}

fn compress(plain: &Path, compressed: &Path) -> io::Result<()> {
    let tmp = compressed.with_extension("zst.tmp");
    let result = (|| {
        write_frames(File::open(plain)?, &tmp)?;
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

    /// A log of `len` bytes that differ from frame to frame.
    fn varied(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i % 251) as u8 ^ (i / 7919) as u8)
            .collect()
    }

    #[tokio::test]
    async fn ended_logs_are_frames_that_read_back_from_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Arc::new(LogStore::new(dir.path().to_path_buf(), 1 << 30));
        let data = varied(5 * FRAME_BYTES + 1234);
        let mut writer = logs.create(3, 1).unwrap();
        writer.write(&data).unwrap();
        assert!(writer.finish().compressed);
        // Every frame says its size, and none is larger than a frame.
        let raw = fs::read(logs.compressed_path(3, 1)).unwrap();
        let (mut at, mut frames) = (0, 0);
        while at < raw.len() {
            let content = zstd::zstd_safe::get_frame_content_size(&raw[at..])
                .unwrap()
                .unwrap();
            assert!(content <= FRAME_BYTES as u64);
            at += zstd::zstd_safe::find_frame_compressed_size(&raw[at..]).unwrap();
            frames += 1;
        }
        assert_eq!(frames, 6);
        // Still one zstd stream to zstdcat.
        assert_eq!(zstd::decode_all(&raw[..]).unwrap(), data);
        for offset in [
            0,
            1,
            FRAME_BYTES - 1,
            FRAME_BYTES,
            3 * FRAME_BYTES + 77,
            data.len() - 1,
            data.len(),
            data.len() + 9,
        ] {
            let text = collect(logs.stream(3, 1, offset as u64, false)).await;
            assert_eq!(text, data[offset.min(data.len())..], "offset {offset}");
        }
        // An empty log is a valid, empty zstd file.
        let writer = logs.create(4, 1).unwrap();
        writer.finish();
        assert!(collect(logs.stream(4, 1, 0, false)).await.is_empty());
        assert!(
            zstd::decode_all(&fs::read(logs.compressed_path(4, 1)).unwrap()[..])
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_log_compressed_whole_by_an_earlier_version_is_reframed_on_first_read() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Arc::new(LogStore::new(dir.path().to_path_buf(), 1 << 30));
        let data = varied(3 * FRAME_BYTES + 5);
        let path = logs.compressed_path(5, 1);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut encoder = zstd::Encoder::new(File::create(&path).unwrap(), 3).unwrap();
        encoder.write_all(&data).unwrap();
        encoder.finish().unwrap();
        let readers: Vec<_> = (0..4)
            .map(|n| tokio::spawn(collect(logs.stream(5, 1, n * 1000, false))))
            .collect();
        for (n, reader) in readers.into_iter().enumerate() {
            assert_eq!(reader.await.unwrap(), data[n * 1000..]);
        }
        let raw = fs::read(&path).unwrap();
        let first = zstd::zstd_safe::get_frame_content_size(&raw)
            .unwrap()
            .unwrap();
        assert_eq!(first, FRAME_BYTES as u64, "rewritten in frames");
    }
}
