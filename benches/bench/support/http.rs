//! A keep-alive HTTP/1.1 client and a Server-Sent Events reader on raw
//! loopback sockets.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Res, epoch_ms, err};

/// One blocking request with `Connection: close`; the body as JSON (or a
/// JSON string when it is not JSON).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Res<(u16, Value)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(err("connect"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(err("timeout"))?;
    let mut request = request_bytes(method, path, token, body);
    // Replace keep-alive by close for this one-shot client.
    let head = String::from_utf8_lossy(&request).replacen(
        "Connection: keep-alive",
        "Connection: close",
        1,
    );
    request = head.into_bytes();
    stream.write_all(&request).map_err(err("send"))?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(err("receive"))?;
    let (status, body) = parse_full(&raw).ok_or_else(|| "malformed response".to_string())?;
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    Ok((status, value))
}

/// The bytes of a keep-alive HTTP/1.1 request.
pub fn request_bytes(method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Vec<u8> {
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n");
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    match body {
        Some(b) => {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                b.len()
            ));
            let mut bytes = head.into_bytes();
            bytes.extend_from_slice(b.as_bytes());
            bytes
        }
        None => {
            head.push_str("\r\n");
            head.into_bytes()
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Status and length framing of a response head.
struct Head {
    status: u16,
    length: Option<usize>,
    chunked: bool,
    size: usize,
}

fn parse_head(buf: &[u8]) -> Option<Head> {
    let end = find(buf, b"\r\n\r\n")?;
    let text = std::str::from_utf8(&buf[..end]).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let mut length = None;
    let mut chunked = false;
    for line in text.lines().skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        if name == "content-length" {
            length = value.trim().parse().ok();
        } else if name == "transfer-encoding" && value.to_ascii_lowercase().contains("chunked") {
            chunked = true;
        }
    }
    Some(Head {
        status,
        length,
        chunked,
        size: end + 4,
    })
}

/// Decodes complete chunks from `raw`; returns the bytes consumed and
/// whether the last chunk was seen.
fn dechunk(raw: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
    let mut pos = 0;
    loop {
        let Some(line_end) = find(&raw[pos..], b"\r\n") else {
            return (pos, false);
        };
        let size_text = std::str::from_utf8(&raw[pos..pos + line_end]).unwrap_or("0");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        let data = pos + line_end + 2;
        if size == 0 {
            // Last chunk; trailers are not used by the daemon.
            return if raw.len() >= data + 2 {
                (data + 2, true)
            } else {
                (pos, false)
            };
        }
        if raw.len() < data + size + 2 {
            return (pos, false);
        }
        out.extend_from_slice(&raw[data..data + size]);
        pos = data + size + 2;
    }
}

fn parse_full(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let head = parse_head(raw)?;
    let rest = &raw[head.size..];
    if head.chunked {
        let mut body = Vec::new();
        dechunk(rest, &mut body);
        Some((head.status, body))
    } else {
        let n = head.length.unwrap_or(rest.len()).min(rest.len());
        Some((head.status, rest[..n].to_vec()))
    }
}

/// A keep-alive HTTP/1.1 connection.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub async fn connect(port: u16) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    /// Sends `request` and reads one whole response: status and body.
    pub async fn call(&mut self, request: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        self.stream.write_all(request).await?;
        let head = loop {
            if let Some(head) = parse_head(&self.buf) {
                break head;
            }
            self.fill().await?;
        };
        if head.chunked {
            let mut body = Vec::new();
            let mut pos = head.size;
            loop {
                let (used, done) = dechunk(&self.buf[pos..], &mut body);
                pos += used;
                if done {
                    self.buf.drain(..pos);
                    return Ok((head.status, body));
                }
                self.fill().await?;
            }
        }
        let length = head.length.unwrap_or(0);
        while self.buf.len() < head.size + length {
            self.fill().await?;
        }
        let body = self.buf[head.size..head.size + length].to_vec();
        self.buf.drain(..head.size + length);
        Ok((head.status, body))
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// One Server-Sent Event.
#[derive(Debug, Default, Clone)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
    /// When the read that completed it returned (epoch ms).
    pub at_ms: f64,
}

/// A subscriber of `/api/events`.
pub struct Sse {
    stream: TcpStream,
    raw: Vec<u8>,
    decoded: Vec<u8>,
    pending: SseEvent,
    ready: std::collections::VecDeque<SseEvent>,
    ended: bool,
}

impl Sse {
    /// Connects and reads the response head (200 expected).
    pub async fn connect(port: u16, path: &str) -> std::io::Result<Sse> {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        stream
            .write_all(&request_bytes("GET", path, None, None))
            .await?;
        let mut raw = Vec::new();
        let head = loop {
            if let Some(head) = parse_head(&raw) {
                break head;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            raw.extend_from_slice(&chunk[..n]);
        };
        if head.status != 200 || !head.chunked {
            return Err(std::io::Error::other(format!(
                "events answered {} (chunked: {})",
                head.status, head.chunked
            )));
        }
        raw.drain(..head.size);
        Ok(Sse {
            stream,
            raw,
            decoded: Vec::new(),
            pending: SseEvent::default(),
            ready: Default::default(),
            ended: false,
        })
    }

    /// The next event (comments skipped); `None` when the stream ends.
    pub async fn next(&mut self) -> std::io::Result<Option<SseEvent>> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(Some(event));
            }
            if self.ended {
                return Ok(None);
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            let at = epoch_ms();
            self.raw.extend_from_slice(&chunk[..n]);
            let (used, done) = dechunk(&self.raw, &mut self.decoded);
            self.raw.drain(..used);
            self.parse(at);
            self.ended = done;
        }
    }

    fn parse(&mut self, at: f64) {
        while let Some(end) = self.decoded.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.decoded.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]);
            let line = line.trim_end_matches('\r');
            if line.is_empty() {
                if !self.pending.event.is_empty() || !self.pending.data.is_empty() {
                    let mut event = std::mem::take(&mut self.pending);
                    event.at_ms = at;
                    self.ready.push_back(event);
                }
            } else if let Some(v) = line.strip_prefix("event:") {
                self.pending.event = v.trim_start().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !self.pending.data.is_empty() {
                    self.pending.data.push('\n');
                }
                self.pending.data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
    }
}

/// `"key":<integer>` in a JSON text, without parsing the rest.
pub fn json_int(text: &str, key: &str) -> Option<i64> {
    let needle = format!("\"{key}\":");
    let start = text.find(&needle)? + needle.len();
    let digits: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect();
    digits.parse().ok()
}
