//! Reading part of a log for a reader that shows it: the end of a log (the
//! part a reader sees first), a byte range, the line number where a part
//! starts and the log's first error line; and terminal escapes taken out for
//! readers that are not terminals.
//!
//! A stored log is zstd, which cannot be entered in the middle, so every
//! window reads from the start; counting lines on the way costs little next
//! to decompressing, and spares the reader the whole log.

use std::io::{self, Read};

/// Largest window (`tail` or `limit`) a request may ask for.
pub const MAX_WINDOW: u64 = 16 << 20;

/// The part of a log asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// At most the last `n` bytes, starting at a line start (unless the log
    /// is shorter).
    Tail(u64),
    /// `limit` bytes from byte `offset`.
    Range { offset: u64, limit: u64 },
}

/// The first line of a log that reads as an error, as the page marks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstError {
    /// Its line number (the first line is 1).
    pub line: u64,
    /// The byte offset where it starts.
    pub offset: u64,
}

/// A part of a log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    /// Byte offset of the first byte of `bytes` in the log.
    pub offset: u64,
    /// Line number of the line `bytes` starts in (the first line is 1).
    pub line: u64,
    /// The log's length when it was read (`Tail` reads it all; a `Range`
    /// stops at its end, so this is where it stopped).
    pub size: u64,
    /// The first error line (`Tail` only: it reads the whole log).
    pub first_error: Option<FirstError>,
    pub bytes: Vec<u8>,
}

/// Reads `want` of the log `reader` yields (blocking).
pub fn read(mut reader: impl Read, want: Want) -> io::Result<Window> {
    let mut scan = Scan::default();
    let mut buf = vec![0u8; 64 * 1024];
    match want {
        Want::Tail(n) => {
            let n = n as usize;
            // The last `n` bytes, and a little more to find a line start.
            let mut kept: Vec<u8> = Vec::new();
            let mut kept_from = 0u64;
            loop {
                let got = reader.read(&mut buf)?;
                if got == 0 {
                    break;
                }
                scan.feed(&buf[..got]);
                kept.extend_from_slice(&buf[..got]);
                if kept.len() > 2 * n + buf.len() {
                    let drop = kept.len() - n - 1;
                    kept.drain(..drop);
                    kept_from += drop as u64;
                }
            }
            let size = scan.pos;
            let mut start = kept.len().saturating_sub(n);
            // Begin at a line start: after the newline before the window.
            if kept_from + start as u64 > 0 {
                let before = start.saturating_sub(1);
                match kept[before..].iter().position(|b| *b == b'\n') {
                    Some(nl) if before + nl + 1 < kept.len() => start = before + nl + 1,
                    // One line longer than the window: its end is all there is.
                    _ => {}
                }
            }
            let bytes = kept.split_off(start);
            let newlines_in = bytes.iter().filter(|b| **b == b'\n').count() as u64;
            Ok(Window {
                offset: kept_from + start as u64,
                line: scan.newlines - newlines_in + 1,
                size,
                first_error: scan.first_error,
                bytes,
            })
        }
        Want::Range { offset, limit } => {
            let mut skip = offset;
            let mut bytes = Vec::new();
            loop {
                let want = if skip > 0 {
                    (skip as usize).min(buf.len())
                } else {
                    ((limit as usize) - bytes.len()).min(buf.len())
                };
                if want == 0 {
                    break;
                }
                let got = reader.read(&mut buf[..want])?;
                if got == 0 {
                    break;
                }
                if skip > 0 {
                    // Only lines are counted before the range.
                    scan.newlines += buf[..got].iter().filter(|b| **b == b'\n').count() as u64;
                    scan.pos += got as u64;
                    skip -= got as u64;
                } else {
                    bytes.extend_from_slice(&buf[..got]);
                }
            }
            Ok(Window {
                offset: scan.pos,
                line: scan.newlines + 1,
                size: scan.pos + bytes.len() as u64,
                first_error: None,
                bytes,
            })
        }
    }
}

/// Line counting and the first error, fed a log piece by piece.
#[derive(Default)]
struct Scan {
    pos: u64,
    newlines: u64,
    /// The current line so far, while no error has been found.
    partial: Vec<u8>,
    first_error: Option<FirstError>,
}

impl Scan {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let (line, rest, complete) = match data.iter().position(|b| *b == b'\n') {
                Some(nl) => (&data[..nl], &data[nl + 1..], true),
                None => (data, &data[data.len()..], false),
            };
            if self.first_error.is_none() {
                self.partial.extend_from_slice(line);
                if complete {
                    if self.partial.contains(&b':')
                        && is_error_line(&String::from_utf8_lossy(&self.partial))
                    {
                        self.first_error = Some(FirstError {
                            line: self.newlines + 1,
                            offset: self.pos + line.len() as u64 - self.partial.len() as u64,
                        });
                    }
                    self.partial.clear();
                }
            }
            self.pos += (line.len() + usize::from(complete)) as u64;
            self.newlines += u64::from(complete);
            data = rest;
        }
    }
}

/// Whether a log line reads as an error: `error:` as a word of what the
/// line shows (after its last carriage return, without escapes). The page
/// marks the same line.
pub fn is_error_line(line: &str) -> bool {
    if !line.contains(':') {
        return false;
    }
    let shown = match line.trim_end_matches('\r').rfind('\r') {
        Some(cr) => &line[cr + 1..],
        None => line,
    };
    let plain = crate::build::nix::strip_ansi(shown).to_ascii_lowercase();
    plain.match_indices("error:").any(|(at, _)| {
        plain[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    })
}

/// Takes terminal escape sequences out of a byte stream fed piece by
/// piece: CSI (colours, cursor moves), OSC (titles, hyperlinks) and the
/// two-byte escapes. A sequence may be split across pieces.
#[derive(Debug, Default)]
pub struct StripAnsi {
    state: Esc,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Esc {
    #[default]
    Text,
    /// After ESC.
    Start,
    /// After ESC and intermediate bytes (`ESC ( B`), until a final byte.
    Intermediate,
    /// Inside `ESC [`, until a final byte.
    Csi,
    /// Inside `ESC ]`, until BEL or `ESC \`.
    Osc,
    /// ESC inside an OSC.
    OscEnd,
}

impl StripAnsi {
    /// `data` without escapes; a piece with none, outside a sequence, is
    /// passed on as it is (most of a log), without a copy.
    pub fn feed_bytes(&mut self, data: bytes::Bytes) -> bytes::Bytes {
        if self.state == Esc::Text && !data.contains(&0x1b) {
            return data;
        }
        bytes::Bytes::from(self.feed(&data))
    }

    /// The text of `data` without escapes.
    pub fn feed(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len());
        for &b in data {
            self.state = match (self.state, b) {
                (Esc::Text, 0x1b) => Esc::Start,
                (Esc::Text, _) => {
                    out.push(b);
                    Esc::Text
                }
                (Esc::Start, b'[') => Esc::Csi,
                (Esc::Start, b']') => Esc::Osc,
                (Esc::Start, 0x40..=0x5f) => Esc::Text,
                (Esc::Start, 0x1b) => Esc::Start,
                (Esc::Start | Esc::Intermediate, 0x20..=0x2f) => Esc::Intermediate,
                (Esc::Intermediate, _) => Esc::Text,
                (Esc::Start, _) => {
                    out.push(b);
                    Esc::Text
                }
                (Esc::Csi, 0x40..=0x7e) => Esc::Text,
                (Esc::Csi, _) => Esc::Csi,
                (Esc::Osc, 0x07) => Esc::Text,
                (Esc::Osc, 0x1b) => Esc::OscEnd,
                (Esc::Osc, _) => Esc::Osc,
                (Esc::OscEnd, _) => Esc::Text,
            };
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(lines: u64, error_at: Option<u64>) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 1..=lines {
            if Some(i) == error_at {
                out.extend_from_slice(b"\x1b[31;1merror:\x1b[0m broken\n");
            } else {
                out.extend_from_slice(format!("line {i}\n").as_bytes());
            }
        }
        out
    }

    #[test]
    fn the_tail_starts_at_a_line_and_knows_its_number_and_the_first_error() {
        let text = log(100_000, Some(4321));
        let w = read(&text[..], Want::Tail(1000)).unwrap();
        assert!(
            w.bytes.len() <= 1000 && w.bytes.len() > 900,
            "{}",
            w.bytes.len()
        );
        assert!(w.bytes.starts_with(b"line "), "{:?}", &w.bytes[..20]);
        assert!(w.bytes.ends_with(b"line 100000\n"));
        let first: u64 = String::from_utf8_lossy(&w.bytes[5..])
            .split('\n')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(w.line, first);
        assert_eq!(w.offset as usize + w.bytes.len(), text.len());
        assert_eq!(&text[w.offset as usize..], &w.bytes[..]);
        assert_eq!(w.size as usize, text.len());
        let error = w.first_error.unwrap();
        assert_eq!(error.line, 4321);
        assert!(text[error.offset as usize..].starts_with(b"\x1b[31;1merror:"));
        // Small logs come whole; a log without errors has none.
        let small = log(3, None);
        let w = read(&small[..], Want::Tail(1000)).unwrap();
        assert_eq!((w.offset, w.line, w.bytes.len()), (0, 1, small.len()));
        assert_eq!(w.first_error, None);
    }

    #[test]
    fn a_range_knows_its_line() {
        let text = log(1000, None);
        let at = text.windows(9).position(|w| w == b"line 500\n").unwrap() as u64;
        let w = read(
            &text[..],
            Want::Range {
                offset: at,
                limit: 18,
            },
        )
        .unwrap();
        assert_eq!(w.bytes, b"line 500\nline 501\n");
        assert_eq!((w.offset, w.line), (at, 500));
        let past = read(
            &text[..],
            Want::Range {
                offset: 1 << 30,
                limit: 10,
            },
        )
        .unwrap();
        assert!(past.bytes.is_empty());
        assert_eq!(past.offset as usize, text.len());
    }

    #[test]
    fn error_lines_as_the_page_marks_them() {
        assert!(is_error_line("error: x"));
        assert!(is_error_line("\x1b[31;1merror:\x1b[0m undefined variable"));
        assert!(is_error_line("widget> Error: bad"));
        assert!(is_error_line("progress 10%\rerror: late"));
        assert!(!is_error_line("no-error: fine"));
        assert!(!is_error_line("myerror: fine"));
        assert!(!is_error_line("error: gone\rredrawn"));
        assert!(!is_error_line("errors are fine"));
    }

    #[test]
    fn escapes_are_stripped_across_pieces() {
        let text = b"\x1b[31;1merror:\x1b[0m x \x1b]8;;http://a\x07link\x1b]8;;\x1b\\ end\x1b(B.\n";
        let whole = StripAnsi::default().feed(text);
        assert_eq!(String::from_utf8_lossy(&whole), "error: x link end.\n");
        for split in 0..text.len() {
            let mut s = StripAnsi::default();
            let mut out = s.feed(&text[..split]);
            out.extend(s.feed(&text[split..]));
            assert_eq!(out, whole, "split at {split}");
            let mut s = StripAnsi::default();
            let mut out = s
                .feed_bytes(bytes::Bytes::copy_from_slice(&text[..split]))
                .to_vec();
            out.extend(s.feed_bytes(bytes::Bytes::copy_from_slice(&text[split..])));
            assert_eq!(out, whole, "split at {split}, as bytes");
        }
    }
}
