// The live feed (one EventSource on /api/events), the repository cache and
// the base of every view.

import { api, readsArePrivate, dropSession } from "./api.js";
import { h } from "./ui.js";

/** The view on the page; the router sets it. */
export let currentView = null;

export function setCurrentView(view) {
  currentView = view;
}

// ------------------------------------------------------------ live feed

const EVENT_TYPES = ["build.queued", "build.started", "build.checks", "build.finished", "build.cache", "build.forge", "repo.created", "repo.deleted", "health.changed", "resync", "build.log"];

/**
 * The one EventSource on /api/events (when reads need the token, the read
 * cookie admits it). Reconnects with exponential backoff; after a gap it
 * cannot replay, the view reloads its data.
 */
export const feed = {
  build: null,
  source: null,
  failures: 0,
  timer: 0,
  generation: 0,
  onOpen: null,

  /** (Re)connects, streaming build `build`'s log too when given. */
  open(build, onOpen) {
    this.close();
    this.build = build || null;
    this.failures = 0;
    this.onOpen = onOpen || null;
    this.connect(false);
  },

  close() {
    this.generation++;
    clearTimeout(this.timer);
    if (this.source) this.source.close();
    this.source = null;
  },

  url() {
    const q = new URLSearchParams();
    if (this.build) {
      q.set("build", this.build);
      if (currentView && currentView.logOffset) q.set("offset", currentView.logOffset());
    }
    const s = q.toString();
    return "/api/events" + (s ? "?" + s : "");
  },

  connect(resumed) {
    const gen = this.generation;
    setLive("connecting");
    this.connectSource(gen, resumed);
  },

  opened(gen, resumed) {
    if (gen !== this.generation) return;
    this.failures = 0;
    setLive("live");
    const cb = this.onOpen;
    this.onOpen = null;
    if (cb) cb();
    else if (resumed && currentView) currentView.resync();
  },

  failed(gen) {
    if (gen !== this.generation) return;
    this.close();
    const gen2 = this.generation;
    this.failures++;
    const delay = Math.min(30000, 1000 * 2 ** (this.failures - 1)) * (0.8 + Math.random() * 0.4);
    setLive("reconnecting", delay);
    if (readsArePrivate()) {
      // The stream may have been refused for a stale cookie (the token
      // changed): a read with the token renews it, or asks for the token.
      dropSession();
      api("/api/builds?limit=1").catch(() => {});
    }
    if (this.onOpen) {
      // The view waited for the stream; load it anyway.
      const cb = this.onOpen;
      this.onOpen = null;
      cb();
    }
    this.timer = setTimeout(() => {
      if (gen2 === this.generation) this.connect(true);
    }, delay);
  },

  connectSource(gen, resumed) {
    const source = new EventSource(this.url());
    this.source = source;
    let errors = 0;
    let seenId = false;
    source.onopen = () => {
      // A reconnect by the browser sends Last-Event-ID and the server
      // replays what was missed (or says `resync`); without an id seen
      // on this source, nothing can be replayed: reload instead.
      this.opened(gen, (resumed || errors > 0) && !seenId);
    };
    source.onerror = () => {
      if (gen !== this.generation) return;
      errors++;
      // Let the browser retry once (it replays with Last-Event-ID), then
      // back off ourselves.
      if (source.readyState === EventSource.CLOSED || errors > 1) this.failed(gen);
      else setLive("reconnecting");
    };
    for (const type of EVENT_TYPES) {
      source.addEventListener(type, (e) => {
        if (e.lastEventId) seenId = true;
        if (gen === this.generation) this.dispatch(type, e.data);
      });
    }
  },

  dispatch(type, raw) {
    let data;
    try {
      data = JSON.parse(raw);
    } catch {
      return;
    }
    if (type === "resync") {
      if (currentView) currentView.resync();
      checkHealth();
      return;
    }
    if (type === "health.changed") {
      checkHealth();
      return;
    }
    if (type === "repo.created" || type === "repo.deleted") repoCache.stale = true;
    if (currentView) currentView.deliver(type, data);
  },
};

/**
 * Shows what the daemon's pre-flight found wrong with the host's nix in a
 * banner: a misconfigured host is obvious before anyone pushes.
 */
export async function checkHealth() {
  let health;
  try {
    health = await api("/api/health");
  } catch {
    return;
  }
  const banner = document.getElementById("health-banner");
  const warnings = (health && health.warnings) || [];
  banner.hidden = !warnings.length;
  banner.replaceChildren(
    ...(warnings.length
      ? [
          h("strong", { text: "This CI host has a problem: " }),
          h(
            "ul",
            {},
            warnings.map((w) => h("li", { "data-code": w.code, text: w.message })),
          ),
        ]
      : []),
  );
}

export function setLive(state, delay) {
  const el = document.getElementById("live");
  el.dataset.state = state;
  const text = {
    live: "Live",
    connecting: "Connecting…",
    reconnecting: delay ? `Reconnecting in ${Math.round(delay / 1000)} s…` : "Reconnecting…",
    offline: "Offline",
  }[state];
  el.querySelector(".live-text").textContent = text;
  el.title =
    state === "live" ? "Updates arrive as they happen" : "Not receiving updates; the page will catch up when it reconnects";
}

window.addEventListener("online", () => {
  if (feed.failures) {
    feed.close();
    feed.connect(true);
  }
});

// A page left for another keeps its connections while the browser holds it
// for "back" (the back/forward cache): the stream is closed, so that pages
// left behind cannot use up the browser's connections to the daemon, and
// opened again, catching up, when the page comes back.
window.addEventListener("pagehide", () => feed.close());
window.addEventListener("pageshow", (e) => {
  if (e.persisted) feed.connect(true);
});

// ----------------------------------------------------------- repo cache

export const repoCache = {
  repos: null,
  stale: true,
  async get() {
    if (this.stale || !this.repos) {
      const body = await api("/api/repos");
      this.repos = body.repos;
      this.stale = false;
    }
    return this.repos;
  },
};

// ---------------------------------------------------------------- views

/** Shared by views: events that arrive while loading wait for the load. */
export class View {
  constructor() {
    this.buffer = null;
    this.destroyed = false;
  }
  deliver(type, data) {
    if (this.buffer) this.buffer.push([type, data]);
    else this.event(type, data);
  }
  /** Runs `load`, then applies the events that arrived meanwhile. */
  async loading(load) {
    this.buffer = this.buffer || [];
    try {
      await load();
    } finally {
      const pending = this.buffer || [];
      this.buffer = null;
      if (!this.destroyed) for (const [type, data] of pending) this.event(type, data);
    }
  }
  /** Opens the live feed; the view loads once it is open. */
  start() {
    feed.open(null, this.reload ? () => this.reload() : null);
  }
  /** After a gap in the feed: load again. */
  resync() {
    if (this.reload) this.reload();
  }
  event() {}
  destroy() {
    this.destroyed = true;
  }
}


