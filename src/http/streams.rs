//! Long-lived answers over TCP: event streams, followed logs and NAR
//! downloads. Each holds its connection for as long as it lasts, so
//! together they may hold at most [`share`] of the connection cap: the rest
//! stays for short requests (health, the API, the page's first load), which
//! then always find a connection while streams are held. NAR downloads are
//! also capped per IP address (`cache_downloads_per_peer`), so one client
//! cannot take every download. The excess is answered 503 at once, and its
//! connection closed (see [`ApiError`]'s 503s), so a refused client holds
//! nothing.
//!
//! Requests over the hook's Unix socket are not counted: its connections
//! are not under the cap, and only the daemon's user reaches it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;

use crate::http::api::ApiError;

/// Long-lived answers the connection cap `cap` allows at once: three
/// quarters of it (at least one), so a quarter always stays for short
/// requests.
pub fn share(cap: usize) -> usize {
    (cap * 3 / 4).max(1)
}

/// The long-lived answers being served, in all and NAR downloads per peer.
#[derive(Debug)]
pub struct Streams {
    total: usize,
    downloads_per_peer: usize,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    open: usize,
    downloads: HashMap<IpAddr, usize>,
}

/// A TCP request's peer and the long-lived answers of its listener; set on
/// every request of a capped listener's connections.
#[derive(Debug, Clone)]
pub struct Peer {
    pub ip: IpAddr,
    pub streams: Arc<Streams>,
}

/// A long-lived answer's place, given back when the answer ends (its body
/// is dropped).
#[derive(Debug)]
pub struct Slot {
    streams: Arc<Streams>,
    download_of: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.streams.held.lock().expect("stream counts");
        held.open -= 1;
        if let Some(ip) = self.download_of
            && let Some(n) = held.downloads.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                held.downloads.remove(&ip);
            }
        }
    }
}

impl Streams {
    /// At most [`share`]`(cap)` long-lived answers, `downloads_per_peer`
    /// NAR downloads from one address.
    pub fn new(cap: usize, downloads_per_peer: usize) -> Arc<Streams> {
        Arc::new(Streams {
            total: share(cap),
            downloads_per_peer,
            held: Mutex::default(),
        })
    }
}

/// `stream`, holding `slot` until it ends or is dropped.
pub fn holding<S: futures_util::Stream>(
    stream: S,
    slot: Option<Slot>,
) -> impl futures_util::Stream<Item = S::Item> {
    use futures_util::StreamExt;
    stream.map(move |item| {
        let _held = &slot;
        item
    })
}

/// A place for an event stream or a followed log when the request came
/// over a capped listener; none otherwise.
pub fn stream_slot(peer: Option<&Peer>) -> Result<Option<Slot>, ApiError> {
    peer.map(Peer::stream).transpose()
}

impl Peer {
    /// A place for an event stream or a followed log.
    pub fn stream(&self) -> Result<Slot, ApiError> {
        self.take(false)
    }

    /// A place for a NAR download.
    pub fn download(&self) -> Result<Slot, ApiError> {
        self.take(true)
    }

    fn take(&self, download: bool) -> Result<Slot, ApiError> {
        let mut held = self.streams.held.lock().expect("stream counts");
        if held.open >= self.streams.total {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_streams",
                format!(
                    "the daemon serves {} event streams, followed logs and downloads at once \
                     (three quarters of max_connections), and all are taken; try again shortly",
                    self.streams.total
                ),
            ));
        }
        if download {
            let mine = held.downloads.entry(self.ip).or_insert(0);
            if *mine >= self.streams.downloads_per_peer {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too_many_downloads",
                    format!(
                        "this address has {} downloads running, as many as one address may \
                         (cache_downloads_per_peer); try again when one ends",
                        self.streams.downloads_per_peer
                    ),
                ));
            }
            *mine += 1;
        }
        held.open += 1;
        Ok(Slot {
            streams: self.streams.clone(),
            download_of: download.then_some(self.ip),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(streams: &Arc<Streams>, last: u8) -> Peer {
        Peer {
            ip: IpAddr::from([127, 0, 0, last]),
            streams: streams.clone(),
        }
    }

    #[test]
    fn long_lived_answers_leave_a_quarter_of_the_cap() {
        assert_eq!(share(1024), 768);
        assert_eq!(share(16), 12);
        assert_eq!(share(1), 1);
        let streams = Streams::new(16, 2);
        let (a, b) = (peer(&streams, 2), peer(&streams, 3));
        let mut held: Vec<Slot> = (0..6).map(|_| a.stream().unwrap()).collect();
        held.extend((0..6).map(|_| b.stream().unwrap()));
        assert_eq!(
            b.stream().unwrap_err().body()["error"]["code"],
            "too_many_streams"
        );
        held.pop();
        held.push(b.download().unwrap());
    }

    #[test]
    fn downloads_are_capped_per_address_and_given_back() {
        let streams = Streams::new(1024, 2);
        let (a, b) = (peer(&streams, 2), peer(&streams, 3));
        let first = a.download().unwrap();
        let _second = a.download().unwrap();
        let refused = a.download().unwrap_err();
        assert_eq!(refused.body()["error"]["code"], "too_many_downloads");
        let _other = b.download().unwrap();
        let _stream = a.stream().unwrap();
        drop(first);
        let _again = a.download().unwrap();
        assert_eq!(streams.held.lock().unwrap().open, 4);
    }
}
