//! The binary cache under `/nix-cache/`: `nix-cache-info`, a signed
//! `.narinfo` for every recorded path and its NAR, which `nix store
//! dump-path` writes and this module compresses with zstd as it streams.
//! Only recorded paths (outputs of the daemon's builds and their closures)
//! are served; anything else in the store is "not found".

use std::io::{Read, Write};
use std::process::Stdio;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::mpsc;

use super::narinfo;
use crate::app::{App, AppError};

/// NAR downloads served at once; past it clients are asked to retry.
pub const MAX_NAR_STREAMS: usize = 32;

/// zstd's fastest level: the daemon shares its cores with builds, and the
/// higher levels cost several times the CPU for a few percent.
const ZSTD_LEVEL: i32 = 1;

/// Bytes gathered before a chunk goes to the client.
const CHUNK: usize = 256 * 1024;

/// Chunks buffered between the compressor and a slow client.
const CHANNEL: usize = 8;

/// `nix-cache-info`. Priority 50 puts the daemon after cache.nixos.org (40)
/// for paths both have.
pub const CACHE_INFO: &str = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 50\n";

/// Content type of narinfo files.
pub const NARINFO_TYPE: &str = "text/x-nix-narinfo";

fn cache_of(app: &App) -> Result<&super::Cache, AppError> {
    match &app.cache {
        Some(cache) if app.config.cache_serve => Ok(cache),
        _ => Err(AppError::NotFound(
            "this daemon serves no binary cache (cache_serve is off)".into(),
        )),
    }
}

/// Whether the daemon serves a cache at all.
pub fn enabled(app: &App) -> Result<(), AppError> {
    cache_of(app).map(|_| ())
}

/// The recorded path for `hash`, if it is still valid in the store.
async fn recorded(app: &App, hash: &str) -> Result<narinfo::PathInfo, AppError> {
    let not_found = || AppError::NotFound(format!("{hash} is not in this cache"));
    if !narinfo::is_hash_part(hash) {
        return Err(not_found());
    }
    let key = hash.to_string();
    let info = app
        .store
        .read(move |conn| super::lookup(conn, &key))
        .await?
        .ok_or_else(not_found)?;
    let path = info.path.clone();
    let present = tokio::task::spawn_blocking(move || std::path::Path::new(&path).exists())
        .await
        .unwrap_or(false);
    if !present {
        return Err(AppError::NotFound(format!(
            "{hash} was built here but is no longer in the store"
        )));
    }
    Ok(info)
}

/// The signed narinfo of the path with hash part `hash`.
pub async fn narinfo(app: &App, hash: &str) -> Result<String, AppError> {
    let cache = cache_of(app)?;
    let info = recorded(app, hash).await?;
    narinfo::render(&info, &nar_url(hash), "zstd", &cache.key).map_err(AppError::Internal)
}

/// Where the NAR of `hash` is, relative to the cache.
fn nar_url(hash: &str) -> String {
    format!("nar/{hash}.nar.zst")
}

/// The zstd-compressed NAR of the path with hash part `hash`, streamed as
/// nix writes it. The stream ends in an error if nix fails half way, so the
/// client sees a broken download rather than a short NAR.
pub async fn nar(
    app: &Arc<App>,
    hash: &str,
) -> Result<impl Stream<Item = Result<Bytes, std::io::Error>> + use<>, AppError> {
    let cache = cache_of(app)?;
    let info = recorded(app, hash).await?;
    let permit = cache.streams.clone().try_acquire_owned().map_err(|_| {
        AppError::Unavailable(format!(
            "{MAX_NAR_STREAMS} downloads are running; try again shortly"
        ))
    })?;
    let (tx, rx) = mpsc::channel(CHANNEL);
    let app = app.clone();
    std::thread::Builder::new()
        .name(format!("nar-{hash}"))
        .spawn(move || {
            let _permit = permit;
            if let Err(e) = dump(&app, &info.path, tx.clone()) {
                let _ = tx.blocking_send(Err(e));
            }
        })
        .map_err(|e| AppError::Internal(format!("cannot start a NAR stream: {e}")))?;
    Ok(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }))
}

/// Runs `nix store dump-path` and compresses its output into `tx`.
/// Blocking: runs on the stream's own thread.
fn dump(
    app: &App,
    path: &str,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> Result<(), std::io::Error> {
    let nix = &app.config.nix_bin;
    let args = [
        "store",
        "dump-path",
        "--extra-experimental-features",
        "nix-command",
        path,
    ];
    let mut child = app
        .repos
        .tools()
        .command(nix, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let sink = ChannelWriter {
        tx,
        buf: Vec::with_capacity(CHUNK),
        sent: 0,
    };
    let copied = (|| {
        let mut encoder = zstd::stream::write::Encoder::new(sink, ZSTD_LEVEL)?;
        std::io::copy(&mut stdout, &mut encoder)?;
        let mut sink = encoder.finish()?;
        sink.flush()?;
        Ok::<u64, std::io::Error>(sink.sent)
    })();
    if copied.is_err() {
        // The client went away (or compression failed): stop nix at once.
        let _ = child.kill();
    }
    drop(stdout);
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    let status = child.wait()?;
    let sent = copied?;
    if !status.success() {
        return Err(std::io::Error::other(format!(
            "nix store dump-path {path} failed: {}",
            crate::build::nix::first_error(stderr.as_bytes())
        )));
    }
    app.metrics.cache_served(sent);
    Ok(())
}

/// Hands compressed bytes to the response in chunks; a closed channel (the
/// client is gone) is a broken pipe.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
    sent: u64,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.sent += chunk.len() as u64;
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}
