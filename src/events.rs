//! Live events for `/api/events`: a bounded ring for replay after a
//! reconnect and a broadcast channel for everyone listening. A slow listener
//! lags and is told to resync; it never blocks the publisher.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::broadcast;

/// Events kept for `Last-Event-ID` replay.
const RING: usize = 1024;

/// One published event.
#[derive(Debug, Clone)]
pub struct Event {
    /// Monotonic; ids of a later daemon instance are larger (they start at
    /// the start time in microseconds), so a stale `Last-Event-ID` is
    /// recognised.
    pub id: u64,
    /// `build.queued`, `build.started`, `build.checks`, `build.finished`,
    /// `build.cache`, `build.forge`, `repo.created`, `repo.deleted`,
    /// `health.changed`.
    pub kind: &'static str,
    /// JSON.
    pub data: Arc<str>,
    /// The build this is about, if any.
    pub build: Option<i64>,
}

/// The event hub; cheap to clone.
#[derive(Clone)]
pub struct Events {
    inner: Arc<Inner>,
}

struct Inner {
    ring: Mutex<Ring>,
    sender: broadcast::Sender<Event>,
}

struct Ring {
    next_id: u64,
    events: VecDeque<Event>,
}

/// What a new listener gets: what it missed, then the live feed.
pub struct Subscription {
    /// Events after the client's `Last-Event-ID`, oldest first.
    pub replay: Vec<Event>,
    /// The client's `Last-Event-ID` is older than the ring (or from another
    /// instance): it must reload.
    pub resync: bool,
    /// Events published after the replay.
    pub live: broadcast::Receiver<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Events::new()
    }
}

impl Events {
    /// A hub whose ids start at the current time in microseconds.
    pub fn new() -> Events {
        let (sender, _) = broadcast::channel(RING);
        let start = chrono::Utc::now().timestamp_micros().max(1) as u64;
        Events {
            inner: Arc::new(Inner {
                ring: Mutex::new(Ring {
                    next_id: start,
                    events: VecDeque::with_capacity(RING),
                }),
                sender,
            }),
        }
    }

    /// Publishes `data` (serialised to JSON) as `kind`.
    pub fn publish<T: Serialize>(&self, kind: &'static str, build: Option<i64>, data: &T) {
        let data: Arc<str> = serde_json::to_string(data)
            .expect("events serialise")
            .into();
        let mut ring = self.inner.ring.lock().expect("event ring");
        let event = Event {
            id: ring.next_id,
            kind,
            data,
            build,
        };
        ring.next_id += 1;
        if ring.events.len() == RING {
            ring.events.pop_front();
        }
        ring.events.push_back(event.clone());
        // Sent under the lock so that live order equals id order.
        let _ = self.inner.sender.send(event);
    }

    /// Subscribes, replaying what came after `last_id`.
    pub fn subscribe(&self, last_id: Option<u64>) -> Subscription {
        let ring = self.inner.ring.lock().expect("event ring");
        let live = self.inner.sender.subscribe();
        let Some(last) = last_id else {
            return Subscription {
                replay: Vec::new(),
                resync: false,
                live,
            };
        };
        let oldest = ring.events.front().map_or(ring.next_id, |e| e.id);
        let resync = last + 1 < oldest || last >= ring.next_id;
        let replay = if resync {
            Vec::new()
        } else {
            ring.events
                .iter()
                .filter(|e| e.id > last)
                .cloned()
                .collect()
        };
        Subscription {
            replay,
            resync,
            live,
        }
    }

    /// A receiver for in-process listeners (the status line, log followers).
    pub fn listen(&self) -> broadcast::Receiver<Event> {
        self.inner.sender.subscribe()
    }

    /// Number of live listeners.
    pub fn listeners(&self) -> usize {
        self.inner.sender.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_after_last_id_and_resync_when_too_old() {
        let events = Events::new();
        events.publish("build.queued", Some(1), &1);
        let first = events.subscribe(None);
        assert!(first.replay.is_empty());
        events.publish("build.started", Some(1), &2);
        events.publish("build.finished", Some(1), &3);
        let all: Vec<u64> = {
            let sub = events.subscribe(Some(0));
            assert!(sub.resync);
            let ring = events.inner.ring.lock().unwrap();
            ring.events.iter().map(|e| e.id).collect()
        };
        let sub = events.subscribe(Some(all[0]));
        assert!(!sub.resync);
        let kinds: Vec<_> = sub.replay.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["build.started", "build.finished"]);
        let up_to_date = events.subscribe(Some(all[2]));
        assert!(!up_to_date.resync && up_to_date.replay.is_empty());
        assert!(
            events.subscribe(Some(all[2] + 100)).resync,
            "id from the future"
        );
    }
}
