//! The storage format of ended logs: zstd frames of [`FRAME_BYTES`] that
//! say their sizes, so that a reader can skip to an offset and decode one
//! frame at a time.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use bytes::Bytes;

use super::FRAME_BYTES;

/// Up to `len` bytes of `file` at `pos` (fewer at its end).
pub(super) fn read_at(file: &File, pos: u64, len: usize) -> io::Result<Bytes> {
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
pub(super) enum Frame {
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
pub(super) fn read_frame(file: &File, mut at: u64, skip: u64) -> io::Result<Frame> {
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
pub(super) fn write_frames(mut input: impl Read, path: &Path) -> io::Result<()> {
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

pub(super) fn compress(plain: &Path, compressed: &Path) -> io::Result<()> {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::LogStore;
    use super::super::testing::{collect, varied};
    use super::*;

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
}
