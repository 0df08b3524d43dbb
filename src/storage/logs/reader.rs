//! Reading logs: streamed to a client, followed while the attempt runs,
//! a frame at a time once it has ended; and windows of lines.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::watch;

use super::frames::{Frame, read_at, read_frame, write_frames};
use super::{FRAME_BYTES, LiveState, LogStore};
use crate::storage::logs::window::{Want, Window};

impl LogStore {
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

    /// Runs a log read on the blocking pool, at most [`READ_JOBS`](super::READ_JOBS) at once:
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
            Some(reader) => crate::storage::logs::window::read(reader, want),
            None => Ok(Window {
                line: 1,
                ..Window::default()
            }),
        }
    }
}

/// Where a reader's bytes come from. Files are opened for each read, not
/// held: a connection costs one descriptor, its socket's, however long it
/// lasts (see `crate::http::listener` on reserved descriptors).
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::super::testing::{collect, varied};
    use super::*;

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
