// procurator-ci web page: builds, a build with its live log, repositories.
// Plain JavaScript, no build step; live updates come from one event stream
// on /api/events. Works under `script-src 'self'; style-src 'self'`: no
// inline styles or handlers, only classes and CSSOM.
"use strict";

(() => {
  const TOKEN_KEY = "procurator-ci.token";
  const STATUSES = ["queued", "running", "success", "failed", "cancelled"];
  const FINAL = new Set(["success", "failed", "cancelled"]);
  const STATUS_TEXT = {
    queued: "Queued",
    running: "Running",
    success: "Passed",
    failed: "Failed",
    cancelled: "Cancelled",
  };
  const TITLE_MARK = { queued: "◷", running: "▶", success: "✓", failed: "✗", cancelled: "⊘" };
  const COLOURS = {
    queued: "#6e7781",
    running: "#bf8700",
    success: "#1f883d",
    failed: "#cf222e",
    cancelled: "#57606a",
  };
  const ICON_PATHS = {
    queued: ["M8 4.8V8l2.2 1.6"],
    running: [],
    success: ["M4.6 8.4l2.3 2.3 4.6-5"],
    failed: ["M5.5 5.5l5 5M10.5 5.5l-5 5"],
    cancelled: ["M4.6 11.4l6.8-6.8"],
  };
  const BUILD_RE = /^\/builds\/(\d+)$/;
  const REPO_RE = /^\/repos\/([^/]+)$/;
  const REPO_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

  // ---------------------------------------------------------------- helpers

  /** Creates an element: h("a", {href: "#/", class: "x"}, child, "text"). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "text") el.textContent = value;
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else if (value === true) el.setAttribute(key, "");
      else el.setAttribute(key, String(value));
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : String(child));
    }
    return el;
  }

  const SVG_NS = "http://www.w3.org/2000/svg";

  function svg(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
    for (const child of children) el.append(child);
    return el;
  }

  function statusIcon(status) {
    const icon = svg("svg", {
      viewBox: "0 0 16 16",
      width: 16,
      height: 16,
      "aria-hidden": "true",
      class: "icon icon-" + status,
      fill: "none",
      stroke: "currentColor",
      "stroke-width": 1.8,
      "stroke-linecap": "round",
      "stroke-linejoin": "round",
    });
    if (status === "running") {
      icon.append(
        svg("circle", { cx: 8, cy: 8, r: 6, opacity: 0.3 }),
        svg("path", { d: "M8 2a6 6 0 0 1 6 6", class: "spin" }),
      );
    } else {
      icon.append(svg("circle", { cx: 8, cy: 8, r: 6 }));
      for (const d of ICON_PATHS[status] || []) icon.append(svg("path", { d }));
    }
    return icon;
  }

  /** A status label: colour, icon and word, so it reads without colour. */
  function statusPill(status, big) {
    return h(
      "span",
      { class: `pill status-${status}${big ? " big" : ""}` },
      statusIcon(status),
      h("span", { class: "pill-text", text: STATUS_TEXT[status] || status }),
    );
  }

  function shortCommit(commit) {
    return (commit || "").slice(0, 8);
  }

  function ago(ms) {
    const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (s < 5) return "just now";
    if (s < 60) return `${s} s ago`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ago`;
    const hrs = Math.floor(m / 60);
    if (hrs < 24) return `${hrs} h ago`;
    const days = Math.floor(hrs / 24);
    if (days < 45) return `${days} d ago`;
    return new Date(ms).toLocaleDateString();
  }

  function duration(ms) {
    if (ms === null || ms === undefined) return "";
    const total = Math.max(0, Math.floor(ms / 1000));
    if (ms < 10000 && ms >= 0) return `${(Math.max(0, ms) / 1000).toFixed(1)} s`;
    const s = total % 60;
    const m = Math.floor(total / 60) % 60;
    const hrs = Math.floor(total / 3600);
    if (hrs) return `${hrs} h ${m} min`;
    if (m) return `${m} min ${s} s`;
    return `${s} s`;
  }

  function localTime(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return d.toLocaleString(undefined, {
      year: "numeric",
      month: "short",
      day: "numeric",
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
    });
  }

  /** A <time> that keeps saying how long ago `ms` was. */
  function agoEl(ms, iso) {
    return h("time", { datetime: iso, title: localTime(iso), "data-ago": ms, text: ago(ms) });
  }

  /** The duration of a build: fixed when finished, ticking while running. */
  function durationEl(build) {
    if (build.duration_ms !== null && build.duration_ms !== undefined) {
      return h("span", { class: "duration", text: duration(build.duration_ms) });
    }
    if (build.status === "running" && build.started_ms) {
      return h("span", {
        class: "duration ticking",
        "data-since": build.started_ms,
        text: duration(Date.now() - build.started_ms),
      });
    }
    return h("span", { class: "duration muted", text: "—" });
  }

  // One ticker for every relative time and running duration on the page.
  setInterval(() => {
    for (const el of document.querySelectorAll("[data-ago]")) {
      el.textContent = ago(Number(el.dataset.ago));
    }
    for (const el of document.querySelectorAll("[data-since]")) {
      el.textContent = duration(Date.now() - Number(el.dataset.since));
    }
  }, 1000);

  let toastTimer = 0;
  function toast(message, kind) {
    const el = document.getElementById("toast");
    el.textContent = message;
    el.className = `toast ${kind || "info"}`;
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => {
      el.hidden = true;
    }, kind === "error" ? 9000 : 5000);
  }

  /** Tells screen readers about a change they did not ask for. */
  function announce(message) {
    document.getElementById("announce").textContent = message;
  }

  async function copyText(text, input) {
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      if (input) {
        input.select();
        document.execCommand("copy");
      }
    }
    toast("Copied to the clipboard");
  }

  /** A read-only field with a copy button. */
  function copyField(label, value, id, rows) {
    const input = rows
      ? h("textarea", { id, readonly: true, rows, spellcheck: "false", class: "mono", text: value })
      : h("input", { id, type: "text", readonly: true, value, spellcheck: "false", class: "mono" });
    input.addEventListener("focus", () => input.select());
    return h(
      "div",
      { class: "copy-field" },
      h("label", { for: id, text: label }),
      h(
        "div",
        { class: "copy-row" },
        input,
        h("button", {
          type: "button",
          class: "ghost small",
          text: "Copy",
          "aria-label": `Copy ${label.toLowerCase()}`,
          onclick: () => copyText(input.value, input),
        }),
      ),
    );
  }

  // ------------------------------------------------------- title and favicon

  function setTitle(text, status) {
    document.title = text ? `${status ? TITLE_MARK[status] + " " : ""}${text} — procurator-ci` : "procurator-ci";
    const link = document.getElementById("favicon");
    if (!status) {
      link.href = "/favicon.svg";
      return;
    }
    const mark =
      status === "running"
        ? '<circle cx="16" cy="16" r="5" fill="#fff"/>'
        : `<path d="${(ICON_PATHS[status] || [])
            .map((d) => d.replace(/[\d.]+/g, (n) => String(Number(n) * 2)))
            .join("")}" fill="none" stroke="#fff" stroke-width="3.6" stroke-linecap="round"/>`;
    const icon = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><circle cx="16" cy="16" r="15" fill="${COLOURS[status]}"/>${mark}</svg>`;
    link.href = "data:image/svg+xml," + encodeURIComponent(icon);
  }

  // ------------------------------------------------------------------ API

  class ApiError extends Error {
    constructor(status, code, message, field) {
      super(message);
      this.status = status;
      this.code = code;
      this.field = field;
    }
  }

  let token = localStorage.getItem(TOKEN_KEY) || "";
  /** Reads need the token (`public_read = false`). */
  let privateReads = false;
  /** The read cookie was set for the current token. */
  let session = false;

  function saveToken(value) {
    if (value !== token) {
      session = false;
      // Removes the read cookie; harmless when there is none.
      if (!value) fetch("/api/session", { method: "DELETE" }).catch(() => {});
    }
    token = value;
    if (value) localStorage.setItem(TOKEN_KEY, value);
    else localStorage.removeItem(TOKEN_KEY);
    updateTokenButton();
  }

  /**
   * When reads need the token, asks the daemon for the read cookie once the
   * token has been accepted: the event stream and plain links (the raw log)
   * cannot send the token, but they send the cookie.
   */
  async function openSession() {
    if (session || !privateReads || !token) return;
    const response = await fetch("/api/session", {
      method: "POST",
      headers: { Authorization: `Bearer ${token}` },
      cache: "no-store",
    }).catch(() => null);
    session = !!response && response.ok;
  }

  /**
   * Learns from the daemon whether reads need the token and, with a token
   * already stored, opens the read session before the event stream starts:
   * reads that succeed with the token never see the 401 that would tell.
   */
  async function learnReadMode() {
    try {
      const response = await fetch("/api/health", { cache: "no-store" });
      if (response.ok) privateReads = (await response.json()).public_read === false;
    } catch {
      // Unreachable now: the first read says what it needs.
    }
    await openSession();
  }

  function updateTokenButton() {
    const button = document.getElementById("token-button");
    button.textContent = token ? "API token ✓" : "API token";
    button.title = token ? "A token is stored in this browser" : "No token stored";
  }

  async function errorOf(response) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      // not JSON
    }
    const e = body && body.error;
    if (e && e.message) return new ApiError(response.status, e.code, e.message, e.field);
    return new ApiError(response.status, "http", `The daemon answered ${response.status} ${response.statusText}`);
  }

  /**
   * Calls the API. A 401 asks for the token (once per call, again after a
   * wrong one) and retries; other errors throw ApiError with the server's
   * message.
   */
  async function api(path, options = {}) {
    const method = options.method || "GET";
    const mutating = method !== "GET";
    if (mutating && !token) {
      // Ask before sending a request bound to be refused.
      const given = await askToken({ reason: options.purpose || "This action needs the API token." });
      if (!given) throw new ApiError(401, "unauthorized", "This needs the API token; nothing was done.");
    }
    for (;;) {
      const headers = { Accept: "application/json" };
      if (options.body !== undefined) headers["Content-Type"] = "application/json";
      // A stored token goes with reads too: harmless when they are public.
      const sent = token;
      if (sent) headers.Authorization = `Bearer ${sent}`;
      let response;
      try {
        response = await fetch(path, {
          method,
          headers,
          cache: "no-store",
          body: options.body === undefined ? undefined : JSON.stringify(options.body),
        });
      } catch (e) {
        throw new ApiError(0, "network", `The daemon cannot be reached (${e.message}).`);
      }
      if (response.status === 401) {
        const error = await errorOf(response);
        if (!mutating) privateReads = true;
        const given = await askToken({
          reason:
            options.purpose ||
            (mutating ? "This action needs the API token." : "This daemon shows builds only to holders of the API token."),
          error: sent ? `The daemon refused the token: ${error.message}` : null,
          refused: sent,
        });
        if (!given) {
          throw new ApiError(
            401,
            "unauthorized",
            sent ? "The API token is wrong; nothing was done." : "This needs the API token; nothing was done.",
          );
        }
        continue;
      }
      if (!response.ok) throw await errorOf(response);
      if (sent && !mutating) await openSession();
      if (response.status === 204) return null;
      const type = response.headers.get("content-type") || "";
      return type.includes("json") ? response.json() : response.text();
    }
  }

  // ---------------------------------------------------------- token dialog

  let tokenAsk = null;

  /** Opens the token dialog; resolves with the token, or null if cancelled. */
  function askToken({ reason, error, refused }) {
    if (refused && refused === token) saveToken("");
    if (tokenAsk) {
      tokenAsk.show(reason, error);
      return tokenAsk.promise;
    }
    const dialog = document.getElementById("token-dialog");
    const input = document.getElementById("token-input");
    const errorEl = document.getElementById("token-error");
    let resolve;
    const promise = new Promise((r) => {
      resolve = r;
    });
    const finish = (value) => {
      tokenAsk = null;
      if (dialog.open) dialog.close();
      resolve(value);
    };
    tokenAsk = {
      promise,
      finish,
      show(why, err) {
        document.getElementById("token-reason").textContent = why;
        errorEl.textContent = err || "";
        errorEl.hidden = !err;
        input.setAttribute("aria-invalid", err ? "true" : "false");
        input.value = "";
        if (!dialog.open) dialog.showModal();
        input.focus();
      },
    };
    tokenAsk.show(reason, error);
    return promise;
  }

  function setupTokenDialog() {
    const dialog = document.getElementById("token-dialog");
    const form = document.getElementById("token-form");
    const input = document.getElementById("token-input");
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const value = input.value.trim();
      if (!value) return;
      saveToken(value);
      if (tokenAsk) {
        tokenAsk.finish(value);
      } else {
        dialog.close();
        toast("Token saved in this browser");
      }
    });
    document.getElementById("token-cancel").addEventListener("click", () => {
      if (tokenAsk) tokenAsk.finish(null);
      else dialog.close();
    });
    document.getElementById("token-forget").addEventListener("click", () => {
      saveToken("");
      if (tokenAsk) tokenAsk.finish(null);
      else dialog.close();
      toast("The stored token was removed");
    });
    dialog.addEventListener("cancel", () => {
      if (tokenAsk) tokenAsk.finish(null);
    });
    document.getElementById("token-button").addEventListener("click", () => {
      document.getElementById("token-reason").textContent = token
        ? "A token is stored in this browser. Enter another one to replace it."
        : "Rebuilding, cancelling and creating repositories need the daemon's API token.";
      document.getElementById("token-error").hidden = true;
      input.value = "";
      dialog.showModal();
      input.focus();
    });
    updateTokenButton();
  }

  // ------------------------------------------------------------ live feed

  const EVENT_TYPES = ["build.queued", "build.started", "build.finished", "repo.created", "repo.deleted", "resync", "build.log"];

  /**
   * The one EventSource on /api/events (when reads need the token, the read
   * cookie admits it). Reconnects with exponential backoff; after a gap it
   * cannot replay, the view reloads its data.
   */
  const feed = {
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
      if (privateReads) {
        // The stream may have been refused for a stale cookie (the token
        // changed): a read with the token renews it, or asks for the token.
        session = false;
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
        return;
      }
      if (type === "repo.created" || type === "repo.deleted") repoCache.stale = true;
      if (currentView) currentView.deliver(type, data);
    },
  };

  function setLive(state, delay) {
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

  // ----------------------------------------------------------- repo cache

  const repoCache = {
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
  class View {
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

  function errorBox(error, retry) {
    return h(
      "div",
      { class: "notice error", role: "alert" },
      h("p", { text: error.message || String(error) }),
      retry ? h("button", { type: "button", text: "Try again", onclick: retry }) : null,
    );
  }

  // ---------------------------------------------------------- builds view

  function buildsHash(filters) {
    const q = new URLSearchParams();
    for (const key of ["repo", "branch", "status"]) if (filters[key]) q.set(key, filters[key]);
    const s = q.toString();
    return "#/" + (s ? "?" + s : "");
  }

  class BuildsView extends View {
    constructor(params) {
      super();
      this.kind = "builds";
      this.filters = this.readFilters(params);
      this.builds = new Map();
      this.next = null;
      this.loadingMore = false;
      this.done = false;
      this.error = null;
    }

    readFilters(params) {
      return {
        repo: params.get("repo") || "",
        branch: params.get("branch") || "",
        status: STATUSES.includes(params.get("status")) ? params.get("status") : "",
      };
    }

    render() {
      this.repoSelect = h(
        "select",
        { id: "filter-repo", name: "repo" },
        h("option", { value: "", text: "All repositories" }),
      );
      this.branchInput = h("input", {
        id: "filter-branch",
        name: "branch",
        type: "search",
        placeholder: "Any branch",
        autocomplete: "off",
        spellcheck: "false",
        value: this.filters.branch,
      });
      this.statusSelect = h(
        "select",
        { id: "filter-status", name: "status" },
        h("option", { value: "", text: "Any status" }),
        STATUSES.map((s) => h("option", { value: s, text: STATUS_TEXT[s] })),
      );
      this.statusSelect.value = this.filters.status;
      const form = h(
        "form",
        { class: "filters", role: "search", "aria-label": "Filter builds" },
        h("div", { class: "field" }, h("label", { for: "filter-repo", text: "Repository" }), this.repoSelect),
        h("div", { class: "field" }, h("label", { for: "filter-branch", text: "Branch" }), this.branchInput),
        h("div", { class: "field" }, h("label", { for: "filter-status", text: "Status" }), this.statusSelect),
        (this.clearButton = h("button", {
          type: "button",
          class: "ghost clear",
          text: "Clear filters",
          onclick: () => this.setFilters({ repo: "", branch: "", status: "" }, true),
        })),
      );
      form.addEventListener("submit", (e) => {
        e.preventDefault();
        this.fromForm(true);
      });
      this.repoSelect.addEventListener("change", () => this.fromForm(true));
      this.statusSelect.addEventListener("change", () => this.fromForm(true));
      let typing = 0;
      this.branchInput.addEventListener("input", () => {
        clearTimeout(typing);
        typing = setTimeout(() => this.fromForm(false), 400);
      });
      this.branchInput.addEventListener("change", () => {
        clearTimeout(typing);
        this.fromForm(false);
      });

      this.list = h("ol", { class: "build-list", "aria-label": "Builds, newest first", "aria-live": "off" });
      this.summary = h("p", { class: "list-summary muted", "aria-live": "polite" });
      this.more = h("button", {
        type: "button",
        class: "ghost",
        text: "Load older builds",
        onclick: () => this.loadMore(),
      });
      this.end = h("div", { class: "list-end" }, this.more);
      this.root = h(
        "section",
        { class: "view builds-view", "aria-labelledby": "view-title" },
        h("div", { class: "view-head" }, h("h1", { id: "view-title", tabindex: "-1", text: "Builds" }), this.summary),
        form,
        h(
          "div",
          { class: "build-table" },
          h(
            "div",
            { class: "build-header", "aria-hidden": "true" },
            ["Status", "Build", "Repository · branch", "Commit", "Retries", "Queued", "Duration"].map((t) =>
              h("span", { text: t }),
            ),
          ),
          this.list,
        ),
        this.end,
      );
      this.observer = new IntersectionObserver(
        (entries) => {
          if (entries.some((e) => e.isIntersecting)) this.loadMore();
        },
        { rootMargin: "600px" },
      );
      this.observer.observe(this.end);
      this.syncForm();
      return this.root;
    }

    fromForm(push) {
      this.setFilters(
        {
          repo: this.repoSelect.value,
          branch: this.branchInput.value.trim(),
          status: this.statusSelect.value,
        },
        push,
      );
    }

    setFilters(filters, push) {
      const hash = buildsHash(filters);
      if (hash === location.hash || (hash === "#/" && !location.hash)) return;
      if (push) history.pushState(null, "", hash);
      else history.replaceState(null, "", hash);
      this.update(new URLSearchParams(hash.split("?")[1] || ""));
    }

    /** The route changed within this view (filters, back/forward). */
    update(params) {
      this.filters = this.readFilters(params);
      this.syncForm();
      this.reload();
    }

    syncForm() {
      if (document.activeElement !== this.branchInput) this.branchInput.value = this.filters.branch;
      this.statusSelect.value = this.filters.status;
      this.fillRepos();
      this.clearButton.hidden = !(this.filters.repo || this.filters.branch || this.filters.status);
    }

    async fillRepos() {
      let repos = [];
      try {
        repos = await repoCache.get();
      } catch {
        // the list still works without the names
      }
      const names = repos.map((r) => r.name);
      if (this.filters.repo && !names.includes(this.filters.repo)) names.push(this.filters.repo);
      const current = [...this.repoSelect.options].slice(1).map((o) => o.value);
      if (current.join("\n") !== names.join("\n")) {
        this.repoSelect.replaceChildren(
          h("option", { value: "", text: "All repositories" }),
          names.map((n) => h("option", { value: n, text: n })),
        );
      }
      this.repoSelect.value = this.filters.repo;
    }

    query(before) {
      const q = new URLSearchParams();
      for (const key of ["repo", "branch", "status"]) if (this.filters[key]) q.set(key, this.filters[key]);
      q.set("limit", "50");
      if (before) q.set("before", before);
      return "/api/builds?" + q.toString();
    }

    reload() {
      const seq = (this.seq = (this.seq || 0) + 1);
      return this.loading(async () => {
        let body;
        try {
          body = await api(this.query(null));
        } catch (e) {
          if (seq !== this.seq || this.destroyed) return;
          this.builds.clear();
          this.list.replaceChildren();
          this.done = true;
          this.showError(e);
          return;
        }
        if (seq !== this.seq || this.destroyed) return;
        this.error = null;
        this.builds.clear();
        this.list.replaceChildren();
        this.next = body.next_before;
        this.done = body.next_before === null;
        for (const b of body.builds) this.insert(b, false);
        this.updateEnd();
        this.updateTitle();
        // Fill a tall screen.
        requestAnimationFrame(() => this.maybeMore());
      });
    }

    showError(e) {
      this.error = e;
      this.end.replaceChildren(errorBox(e, () => this.reload()));
    }

    maybeMore() {
      if (this.destroyed || this.done) return;
      const rect = this.end.getBoundingClientRect();
      if (rect.top < window.innerHeight + 600) this.loadMore();
    }

    async loadMore() {
      if (this.loadingMore || this.done || this.buffer || this.error || !this.next) return;
      this.loadingMore = true;
      const seq = this.seq;
      this.more.textContent = "Loading…";
      try {
        const body = await api(this.query(this.next));
        if (seq !== this.seq || this.destroyed) return;
        this.next = body.next_before;
        this.done = body.next_before === null;
        for (const b of body.builds) this.insert(b, false);
      } catch (e) {
        if (seq === this.seq) this.showError(e);
        return;
      } finally {
        this.loadingMore = false;
        this.more.textContent = "Load older builds";
      }
      this.updateEnd();
      requestAnimationFrame(() => this.maybeMore());
    }

    updateEnd() {
      const n = this.builds.size;
      const filtered = this.filters.repo || this.filters.branch || this.filters.status;
      if (this.done) {
        if (n === 0) {
          this.end.replaceChildren(
            filtered
              ? h("p", { class: "empty", text: "No builds match these filters." })
              : h(
                  "div",
                  { class: "empty" },
                  h("p", { text: "No builds yet." }),
                  h(
                    "p",
                    {},
                    "Create a repository on the ",
                    h("a", { href: "#/repos", text: "repositories page" }),
                    ", push a flake to it, and its build appears here.",
                  ),
                ),
          );
        } else {
          this.end.replaceChildren(h("p", { class: "muted end-note", text: "That is all of them." }));
        }
      } else {
        this.end.replaceChildren(this.more);
      }
      this.summary.textContent = n
        ? `${n}${this.done ? "" : "+"} build${n === 1 ? "" : "s"}${filtered ? " matching" : ""}`
        : "";
    }

    matches(b) {
      const f = this.filters;
      return (!f.repo || b.repo === f.repo) && (!f.branch || b.branch === f.branch) && (!f.status || b.status === f.status);
    }

    row(b, fresh) {
      const retries = b.retry_count ? `${b.retry_count} of ${b.max_retries}` : "";
      const label = [
        `Build ${b.id}`,
        STATUS_TEXT[b.status],
        `${b.repo} ${b.branch}`,
        `commit ${shortCommit(b.commit)}`,
        retries ? `retried ${retries}` : "",
        `queued ${ago(b.created_ms)}`,
        b.duration_ms !== null && b.duration_ms !== undefined ? `took ${duration(b.duration_ms)}` : "",
      ]
        .filter(Boolean)
        .join(", ");
      return h(
        "li",
        { class: `build-row status-${b.status}${fresh ? " fresh" : ""}`, "data-id": b.id, "data-status": b.status },
        h(
          "a",
          { class: "row-link", href: `#/builds/${b.id}`, "aria-label": label },
          h("span", { class: "c-status" }, statusPill(b.status)),
          h("span", { class: "c-id", text: `#${b.id}` }),
          h(
            "span",
            { class: "c-where" },
            h("span", { class: "repo", text: b.repo }),
            h("span", { class: "branch", text: b.branch }),
            b.failure_summary && b.status === "failed"
              ? h("span", { class: "summary", text: b.failure_summary })
              : null,
          ),
          h("code", { class: "c-commit", title: b.commit, text: shortCommit(b.commit) }),
          h(
            "span",
            { class: "c-retries" + (b.retry_count ? "" : " muted"), title: "Retries" },
            b.retry_count ? `↻ ${retries}` : "",
          ),
          h("span", { class: "c-queued" }, agoEl(b.created_ms, b.created_at)),
          h("span", { class: "c-duration" }, durationEl(b)),
        ),
      );
    }

    /** Adds or replaces build `b` in id order. */
    insert(b, fresh) {
      const old = this.builds.get(b.id);
      if (!this.matches(b)) {
        if (old) {
          old.el.remove();
          this.builds.delete(b.id);
        }
        return;
      }
      // Only where it belongs among what is loaded: older ones come with
      // their page.
      if (!old && fresh && !this.done && this.builds.size && b.id < this.lowest) return;
      const el = this.row(b, fresh && !old);
      if (old) {
        old.el.replaceWith(el);
      } else if (!this.builds.size || b.id < this.lowest) {
        this.list.append(el);
        this.lowest = b.id;
      } else {
        let before = null;
        for (const child of this.list.children) {
          if (Number(child.dataset.id) < b.id) {
            before = child;
            break;
          }
        }
        this.list.insertBefore(el, before);
      }
      this.builds.set(b.id, { build: b, el });
    }

    event(type, data) {
      if (!type.startsWith("build.") || type === "build.log") return;
      this.insert(data, true);
      this.updateEnd();
      this.updateTitle();
    }

    updateTitle() {
      const first = this.list.firstElementChild;
      const latest = first && this.builds.get(Number(first.dataset.id));
      if (latest) setTitle(`#${latest.build.id} ${latest.build.repo}:${latest.build.branch}`, latest.build.status);
      else setTitle("Builds", null);
    }

    destroy() {
      super.destroy();
      this.observer.disconnect();
    }
  }

  // ----------------------------------------------------------- ANSI and log

  const BASIC = 16;

  function colour256(n) {
    if (n < BASIC) return null;
    if (n >= 232) {
      const v = 8 + (n - 232) * 10;
      return `rgb(${v},${v},${v})`;
    }
    const i = n - 16;
    const steps = [0, 95, 135, 175, 215, 255];
    return `rgb(${steps[Math.floor(i / 36)]},${steps[Math.floor(i / 6) % 6]},${steps[i % 6]})`;
  }

  function freshState() {
    return { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false, inverse: false };
  }

  function applySgr(state, raw) {
    const codes = raw === "" ? [0] : raw.split(";").map((c) => (c === "" ? 0 : Number(c)));
    for (let i = 0; i < codes.length; i++) {
      const c = codes[i];
      if (c === 0) Object.assign(state, freshState());
      else if (c === 1) state.bold = true;
      else if (c === 2) state.dim = true;
      else if (c === 3) state.italic = true;
      else if (c === 4) state.underline = true;
      else if (c === 7) state.inverse = true;
      else if (c === 22) state.bold = state.dim = false;
      else if (c === 23) state.italic = false;
      else if (c === 24) state.underline = false;
      else if (c === 27) state.inverse = false;
      else if (c >= 30 && c <= 37) state.fg = c - 30;
      else if (c >= 90 && c <= 97) state.fg = c - 90 + 8;
      else if (c === 39) state.fg = null;
      else if (c >= 40 && c <= 47) state.bg = c - 40;
      else if (c >= 100 && c <= 107) state.bg = c - 100 + 8;
      else if (c === 49) state.bg = null;
      else if (c === 38 || c === 48) {
        let value = null;
        if (codes[i + 1] === 5) {
          const n = codes[i + 2];
          value = n < BASIC ? n : colour256(n);
          i += 2;
        } else if (codes[i + 1] === 2) {
          value = `rgb(${codes[i + 2] | 0},${codes[i + 3] | 0},${codes[i + 4] | 0})`;
          i += 4;
        }
        if (c === 38) state.fg = value;
        else state.bg = value;
      }
    }
  }

  // CSI sequences, OSC sequences (such as hyperlinks), other escapes.
  const ESCAPES = /\x1b\[([0-9;?]*)([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]?/g;

  /** Renders one log line into `el`, updating the ANSI `state`. */
  function renderAnsi(el, line, state) {
    // A carriage return redraws the line: keep what was drawn last.
    const cr = line.lastIndexOf("\r", line.length - 2);
    if (cr >= 0) line = line.slice(cr + 1);
    line = line.replace(/\r$/, "");
    let plain = "";
    let last = 0;
    const push = (text) => {
      if (!text) return;
      plain += text;
      const s = state;
      if (s.fg === null && s.bg === null && !s.bold && !s.dim && !s.italic && !s.underline && !s.inverse) {
        el.append(text);
        return;
      }
      const span = document.createElement("span");
      const classes = [];
      let fg = s.fg;
      let bg = s.bg;
      if (s.inverse) {
        [fg, bg] = [bg === null ? "inv-fg" : bg, fg === null ? "inv-bg" : fg];
      }
      if (typeof fg === "number") classes.push(`fg${fg}`);
      else if (fg === "inv-fg") classes.push("fg-inv");
      else if (fg) span.style.color = fg;
      if (typeof bg === "number") classes.push(`bg${bg}`);
      else if (bg === "inv-bg") classes.push("bg-inv");
      else if (bg) span.style.backgroundColor = bg;
      if (s.bold) classes.push("b");
      if (s.dim) classes.push("d");
      if (s.italic) classes.push("i");
      if (s.underline) classes.push("u");
      span.className = classes.join(" ");
      span.textContent = text;
      el.append(span);
    };
    ESCAPES.lastIndex = 0;
    let m;
    while ((m = ESCAPES.exec(line))) {
      push(line.slice(last, m.index));
      last = ESCAPES.lastIndex;
      if (m[2] === "m") applySgr(state, m[1]);
      if (m[0] === "") ESCAPES.lastIndex++;
    }
    push(line.slice(last));
    return plain;
  }

  const FIRST_ERROR = /(^|[^A-Za-z0-9_-])error:/i;
  const encoder = new TextEncoder();

  /** The text of a log line as it shows: after its last redraw, no escapes. */
  function plainOf(line) {
    const cr = line.lastIndexOf("\r", line.length - 2);
    if (cr >= 0) line = line.slice(cr + 1);
    return line.replace(/\r$/, "").replace(ESCAPES, "");
  }

  /** Applies a line's colour changes to `state` without rendering it. */
  function advanceAnsi(state, line) {
    for (const m of line.matchAll(ESCAPES)) if (m[2] === "m") applySgr(state, m[1]);
  }

  /** Lines per chunk of a log pane; a chunk is rendered or emptied whole. */
  const CHUNK_LINES = 200;
  /**
   * A log of up to this many lines stays wholly in the page, so find in page
   * sees all of it. A longer one keeps only the chunks near the visible part
   * rendered; the rest keep their text and their height, so a log of a
   * million lines costs the page about what a screenful does.
   */
  const WHOLE_LOG_LINES = 5000;

  /** A log pane fed with text pieces; keeps ANSI state and partial lines. */
  class LogPane {
    constructor(onFirstError) {
      this.onFirstError = onFirstError;
      this.lines = h("div", { class: "log-lines" });
      this.el = h(
        "div",
        { class: "log", role: "log", tabindex: "0", "aria-label": "Build log", "aria-live": "off" },
        this.lines,
      );
      this.observer = new IntersectionObserver((entries) => this.seen(entries), {
        root: this.el,
        rootMargin: "1500px 0px",
      });
      this.reset();
      // Following stops when the reader scrolls up and resumes at the end;
      // the page's own scrolls land at the end, so they keep it on.
      this.el.addEventListener("scroll", () => {
        this.setFollow(this.el.scrollHeight - this.el.scrollTop - this.el.clientHeight < 24);
      });
      this.onFollow = null;
    }

    reset() {
      this.bytes = 0;
      this.count = 0;
      // Byte offset where each line starts (index = line number), so that a
      // check's log offset can be shown as a line.
      this.lineStarts = [0, 0];
      this.partialStart = 0;
      this.partial = "";
      this.partialEl = null;
      // The ANSI state after the last complete line.
      this.state = freshState();
      this.firstError = null;
      this.target = null;
      this.follow = true;
      this.observer.disconnect();
      // {el, first: line number, texts, state: ANSI state at `first`,
      // shown: rendered, near: within reach of the visible part}
      this.chunks = [];
      this.byEl = new Map();
      this.lines.replaceChildren();
      this.el.classList.add("empty");
    }

    setFollow(on) {
      if (this.follow === on) return;
      this.follow = on;
      if (this.onFollow) this.onFollow(on);
    }

    /** A `build.log` piece at byte `offset`; overlaps are skipped. */
    piece(offset, text) {
      let bytes = encoder.encode(text);
      if (offset + bytes.length <= this.bytes) return;
      if (offset < this.bytes) {
        bytes = bytes.subarray(this.bytes - offset);
        text = new TextDecoder().decode(bytes);
      }
      this.bytes = Math.max(this.bytes, offset) + bytes.length;
      this.add(text);
    }

    add(text) {
      if (!text) return;
      this.el.classList.remove("empty");
      const wasWhole = this.whole();
      const parts = (this.partial + text).split("\n");
      const rest = parts.pop();
      if (this.partialEl) {
        this.partialEl.remove();
        this.partialEl = null;
      }
      const touched = new Set();
      for (const line of parts) {
        let chunk = this.chunks[this.chunks.length - 1];
        if (!chunk || chunk.texts.length === CHUNK_LINES) chunk = this.newChunk();
        const n = ++this.count;
        const plain = plainOf(line);
        if (!this.firstError && FIRST_ERROR.test(plain)) {
          this.firstError = n;
          if (this.onFirstError) this.onFirstError(n, plain);
        }
        chunk.texts.push(line);
        if (chunk.shown) chunk.el.append(this.line(n, line, chunk.running));
        advanceAnsi(this.state, line);
        touched.add(chunk);
        this.partialStart += encoder.encode(line).length + 1;
        this.lineStarts[n + 1] = this.partialStart;
      }
      // New chunks are rendered while the log is whole, and where a reader
      // following the end sees them (the last two); the others only take
      // their place until they come near the visible part.
      const tail = this.chunks.slice(-2);
      for (const chunk of touched) {
        if (this.whole() || (this.follow && tail.includes(chunk))) this.show(chunk);
        else if (!chunk.shown) this.estimate(chunk);
      }
      this.partial = rest;
      if (rest) {
        this.partialEl = this.line(this.count + 1, rest, { ...this.state });
        this.lines.append(this.partialEl);
      }
      if (wasWhole && !this.whole()) {
        for (const chunk of this.chunks) if (!chunk.near && !tail.includes(chunk)) this.hide(chunk);
      }
      if (this.follow) this.toEnd();
    }

    whole() {
      return this.count <= WHOLE_LOG_LINES;
    }

    /** A new, empty last chunk; watched so it is rendered when near. */
    newChunk() {
      const chunk = {
        el: h("div", { class: "log-chunk" }),
        first: this.count + 1,
        texts: [],
        state: { ...this.state },
        // The state while rendering appended lines; set by `show`.
        running: null,
        shown: false,
        near: false,
      };
      this.chunks.push(chunk);
      this.byEl.set(chunk.el, chunk);
      this.lines.append(chunk.el);
      this.observer.observe(chunk.el);
      return chunk;
    }

    /** Renders a chunk's lines. */
    show(chunk) {
      if (chunk.shown) return;
      chunk.shown = true;
      chunk.running = { ...chunk.state };
      const fragment = document.createDocumentFragment();
      chunk.texts.forEach((text, i) => fragment.append(this.line(chunk.first + i, text, chunk.running)));
      chunk.el.replaceChildren(fragment);
      chunk.el.style.height = "";
    }

    /** Empties a chunk, keeping its height. */
    hide(chunk) {
      if (!chunk.shown) return;
      const height = chunk.el.offsetHeight;
      chunk.shown = false;
      chunk.el.replaceChildren();
      chunk.el.style.height = `${height}px`;
    }

    /** The height of an empty chunk: its lines at one row each. */
    estimate(chunk) {
      if (!this.lineHeight) this.lineHeight = parseFloat(getComputedStyle(this.el).lineHeight) || 20;
      chunk.el.style.height = `${chunk.texts.length * this.lineHeight}px`;
    }

    seen(entries) {
      for (const entry of entries) {
        const chunk = this.byEl.get(entry.target);
        if (!chunk) continue;
        chunk.near = entry.isIntersecting;
        if (chunk.near) this.show(chunk);
        else if (!this.whole()) this.hide(chunk);
      }
    }

    line(n, text, state) {
      const el = h("div", { class: "ln", id: `L${n}`, "data-n": n });
      if (!renderAnsi(el, text, state)) el.append("\u200b");
      if (n === this.firstError) el.classList.add("first-error");
      if (n === this.target) el.classList.add("target");
      return el;
    }

    toEnd() {
      this.el.scrollTop = this.el.scrollHeight;
    }

    /** The number of the line holding byte `offset`, once it has arrived. */
    lineAt(offset) {
      if (offset >= this.partialStart) return this.partial ? this.count + 1 : null;
      let low = 1;
      let high = this.count;
      while (low < high) {
        const mid = Math.ceil((low + high) / 2);
        if (this.lineStarts[mid] <= offset) low = mid;
        else high = mid - 1;
      }
      return low;
    }

    jumpToEnd() {
      this.setFollow(true);
      this.toEnd();
    }

    /** Scrolls line `n` into view and marks it; false until it arrived. */
    showLine(n) {
      if (!(n >= 1 && (n <= this.count || (n === this.count + 1 && this.partialEl)))) return false;
      const chunk = this.chunks[Math.floor((n - 1) / CHUNK_LINES)];
      if (chunk) this.show(chunk);
      const el = document.getElementById(`L${n}`);
      if (!el) return false;
      this.setFollow(false);
      for (const old of this.lines.querySelectorAll(".target")) old.classList.remove("target");
      this.target = n;
      el.classList.add("target");
      const top = el.getBoundingClientRect().top - this.el.getBoundingClientRect().top;
      this.el.scrollTop += top - this.el.clientHeight / 3;
      return true;
    }
  }

  // ------------------------------------------------------------ build view

  class BuildView extends View {
    constructor(id, params) {
      super();
      this.kind = "build";
      this.id = id;
      this.build = null;
      this.streaming = null;
      this.wantLine = Number(params.get("line")) || null;
    }

    render() {
      this.head = h("div", { class: "build-head-wrap" }, h("p", { class: "loading", text: "Loading…" }));
      this.details = h("div", { class: "build-details" });
      this.errorLink = h("a", { class: "error-link", hidden: true });
      this.followNote = h("span", { class: "follow-note muted", "aria-live": "polite" });
      this.jump = h("button", {
        type: "button",
        class: "ghost small",
        text: "Jump to end ↓",
        onclick: () => this.log.jumpToEnd(),
      });
      this.log = new LogPane((n, text) => this.firstError(n, text));
      this.log.onFollow = (on) => this.followChanged(on);
      this.rawLink = h("a", {
        href: `/api/builds/${this.id}/logs`,
        target: "_blank",
        rel: "noopener",
        text: "Raw log",
        class: "raw-link",
        "data-raw-log": true,
      });
      this.logState = h("span", { class: "log-state muted" });
      this.root = h(
        "section",
        { class: "view build-view", "aria-labelledby": "view-title" },
        h(
          "nav",
          { class: "crumbs", "aria-label": "Breadcrumb" },
          h("a", { href: "#/", text: "Builds" }),
          h("span", { "aria-hidden": "true", text: " / " }),
          (this.crumbRepo = h("span")),
          h("span", { text: `#${this.id}` }),
        ),
        this.head,
        this.details,
        h(
          "section",
          { class: "log-section", "aria-labelledby": "log-title" },
          h(
            "div",
            { class: "log-toolbar" },
            h("h2", { id: "log-title", text: "Log" }),
            this.logState,
            this.errorLink,
            h("span", { class: "spacer" }),
            this.followNote,
            this.jump,
            this.rawLink,
          ),
          this.log.el,
        ),
      );
      this.followChanged(true);
      return this.root;
    }

    followChanged(on) {
      this.followNote.textContent = on ? "Following" : "Paused — scrolled up";
      this.jump.classList.toggle("attention", !on);
    }

    firstError(n, text) {
      this.errorLink.hidden = false;
      this.errorLink.href = `#/builds/${this.id}?line=${n}`;
      this.errorLink.textContent = `First error: line ${n}`;
      this.errorLink.title = text;
      if (this.wantLine && this.log.showLine(this.wantLine)) this.wantLine = null;
    }

    update(params) {
      const line = Number(params.get("line")) || null;
      this.wantLine = line;
      if (line && this.log.showLine(line)) this.wantLine = null;
    }

    logOffset() {
      return this.log.bytes;
    }

    start() {
      this.reload().then(() => {
        if (!this.destroyed) this.openStream();
      });
    }

    /** The stream: with this build's log once it has started. */
    openStream() {
      const live = this.build && this.build.status !== "queued";
      const key = live ? this.build.attempt : "queued";
      if (this.streaming === key) return;
      this.streaming = key;
      if (live) {
        this.log.reset();
        this.updateLogState();
      }
      // Events published while reconnecting are caught up by a reload.
      feed.open(live ? this.id : null, () => this.reload());
    }

    reload() {
      return this.loading(async () => {
        let detail;
        try {
          detail = await api(`/api/builds/${this.id}`);
        } catch (e) {
          if (this.destroyed) return;
          if (!this.build) {
            this.head.replaceChildren(errorBox(e, () => this.reload()));
            setTitle(`#${this.id}`, null);
          } else toast(e.message, "error");
          return;
        }
        if (this.destroyed) return;
        this.show(detail);
      });
    }

    show(build) {
      const previous = this.build;
      // Keep attempts from the detail when an event (without them) arrives.
      if (!build.attempts && previous && previous.attempts) build = { ...build, attempts: previous.attempts };
      this.build = build;
      const b = build;
      setTitle(`#${b.id} ${b.repo}:${b.branch}`, b.status);
      this.crumbRepo.replaceChildren(
        h("a", { href: `#/repos/${encodeURIComponent(b.repo)}`, text: b.repo }),
        h("span", { "aria-hidden": "true", text: " / " }),
      );
      const live = !FINAL.has(b.status);
      // A rebuild of a live build would only find that build again.
      this.rebuildButton = live
        ? null
        : h("button", { type: "button", id: "rebuild", class: "primary", text: "Rebuild", onclick: () => this.rebuild() });
      this.cancelButton = live
        ? h("button", { type: "button", id: "cancel", class: "danger", text: "Cancel", onclick: () => this.cancel() })
        : null;
      this.head.replaceChildren(
        h(
          "header",
          { class: `build-head status-${b.status}` },
          h(
            "div",
            { class: "title-line" },
            statusPill(b.status, true),
            h("h1", { id: "view-title", tabindex: "-1", text: `Build #${b.id}` }),
            h(
              "span",
              { class: "where" },
              h("a", { href: `#/repos/${encodeURIComponent(b.repo)}`, text: b.repo }),
              " · ",
              h("a", {
                href: buildsHash({ repo: b.repo, branch: b.branch }),
                text: b.branch,
                title: `Builds of ${b.branch}`,
              }),
            ),
          ),
          h("div", { class: "actions" }, this.cancelButton, this.rebuildButton),
        ),
      );
      const facts = [
        ["Commit", h("code", { class: "commit-full", text: b.commit })],
        b.author ? ["Author", b.author] : null,
        [
          "Trigger",
          b.rebuild_of
            ? h("span", {}, `${b.trigger}, of `, h("a", { href: `#/builds/${b.rebuild_of}`, text: `#${b.rebuild_of}` }))
            : b.trigger,
        ],
        ["Queued", h("span", {}, agoEl(b.created_ms, b.created_at), h("span", { class: "muted", text: ` · ${localTime(b.created_at)}` }))],
        b.started_at ? ["Started", localTime(b.started_at)] : null,
        b.finished_at ? ["Finished", localTime(b.finished_at)] : null,
        ["Duration", durationEl(b)],
        [
          "Attempt",
          `${b.attempt || 0}${b.retry_count ? ` (${b.retry_count} of ${b.max_retries} retries used)` : ` (up to ${b.max_retries} retries)`}`,
        ],
        b.exit_code !== null && b.exit_code !== undefined ? ["Exit code", String(b.exit_code)] : null,
      ].filter(Boolean);
      const problem =
        b.status === "failed"
          ? h(
              "div",
              { class: "problem failed", role: "note" },
              h("strong", { text: `${kindText(b.failure_kind)}` }),
              b.failure_summary ? h("span", { text: b.failure_summary }) : null,
            )
          : b.status === "cancelled"
            ? h(
                "div",
                { class: "problem cancelled", role: "note" },
                h("strong", { text: "Cancelled" }),
                b.cancel_reason ? h("span", { text: b.cancel_reason }) : null,
              )
            : null;
      this.details.replaceChildren(
        problem || "",
        h(
          "div",
          { class: "cards" },
          h(
            "section",
            { class: "card facts-card", "aria-label": "Details" },
            h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", { text: k }), h("dd", {}, v)])),
          ),
          h("section", { class: "card outputs-card", "aria-labelledby": "outputs-title" }, h("h2", { id: "outputs-title", text: "Flake outputs" }), outputsEl(b.outputs)),
        ),
        this.checksEl(b),
        attemptsEl(b),
      );
      this.updateLogState();
      if (previous && previous.status !== b.status) {
        this.root.querySelector(".build-head").classList.add("changed");
        announce(`Build #${b.id} ${STATUS_TEXT[b.status].toLowerCase()}`);
      }
      if (!this.destroyed && this.streaming !== null) this.openStream();
    }

    /** One row per check with its result and a jump to its part of the log. */
    checksEl(b) {
      if (!b.checks || !b.checks.length) return "";
      const rows = b.checks.map((c) => {
        const jump =
          c.log_offset === null || c.log_offset === undefined
            ? h("span", { class: "muted", text: c.status === "cached" ? "nothing built" : "" })
            : h("button", {
                type: "button",
                class: "ghost small",
                text: "Show in log",
                "aria-label": `Show ${c.name} in the log`,
                "data-check-jump": c.name,
                onclick: () => this.showOffset(c.log_offset),
              });
        const detail = c.error || (c.status === "failed" && c.log_excerpt ? c.log_excerpt.split("\n").slice(-1)[0] : "");
        return h(
          "tr",
          { "data-check": c.name },
          h("td", {}, checkPill(c.status)),
          h("td", {}, h("code", { text: c.name })),
          h("td", { class: "muted", text: c.system }),
          h("td", { text: c.duration_ms === null || c.duration_ms === undefined ? "" : duration(c.duration_ms) }),
          h("td", { class: "check-detail" }, detail ? h("code", { text: detail }) : ""),
          h("td", {}, jump),
        );
      });
      const failed = b.checks.filter((c) => c.status === "failed").length;
      return h(
        "section",
        { class: "card checks-card", "aria-labelledby": "checks-title" },
        h("h2", { id: "checks-title", text: `Checks (${b.checks.length}${failed ? `, ${failed} failed` : ""})` }),
        h(
          "table",
          { class: "checks" },
          h("thead", {}, h("tr", {}, ["Result", "Check", "System", "Duration", "Detail", "Log"].map((t) => h("th", { scope: "col", text: t })))),
          h("tbody", {}, rows),
        ),
      );
    }

    showOffset(offset) {
      const n = this.log.lineAt(offset);
      if (n === null) return toast("That part of the log has not arrived yet.", "info");
      location.hash = `#/builds/${this.id}?line=${n}`;
    }

    updateLogState() {
      const b = this.build;
      if (!b) return;
      if (b.status === "queued") this.logState.textContent = "Waiting for a worker…";
      else if (b.status === "running") this.logState.textContent = "Streaming";
      else this.logState.textContent = "";
      this.log.el.classList.toggle("running", b.status === "running");
    }

    event(type, data) {
      if (type === "build.log") {
        if (data.build !== this.id) return;
        this.log.piece(data.offset, data.text);
        if (this.wantLine && this.log.showLine(this.wantLine)) this.wantLine = null;
        return;
      }
      if (!type.startsWith("build.") || data.id !== this.id) return;
      this.show(data);
      if (type === "build.finished") this.reload();
    }

    async rebuild() {
      const button = this.rebuildButton;
      button.disabled = true;
      try {
        const build = await api(`/api/builds/${this.id}/rebuild`, {
          method: "POST",
          purpose: `Rebuilding #${this.id} needs the API token.`,
        });
        toast(`Build #${build.id} queued`, "success");
        location.hash = `#/builds/${build.id}`;
      } catch (e) {
        toast(`Rebuild failed: ${e.message}`, "error");
      } finally {
        button.disabled = false;
      }
    }

    async cancel() {
      const button = this.cancelButton;
      button.disabled = true;
      try {
        const build = await api(`/api/builds/${this.id}/cancel`, {
          method: "POST",
          purpose: `Cancelling #${this.id} needs the API token.`,
        });
        toast(`Cancelling build #${build.id}`, "info");
      } catch (e) {
        toast(`Cancel failed: ${e.message}`, "error");
        button.disabled = false;
      }
    }
  }

  /** Success rate and median duration over a branch's recent builds. */
  function statsCells(stats) {
    if (!stats || !stats.builds) return [h("td", { class: "muted", text: "—" }), h("td", { class: "muted", text: "—" })];
    const rate = Math.round(stats.success_rate * 100);
    return [
      h("td", { class: "stat-rate", title: `${stats.successes} of the last ${stats.builds} finished builds passed`, text: `${rate}% of ${stats.builds}` }),
      h("td", { class: "stat-median", text: stats.median_duration_ms === null ? "—" : duration(stats.median_duration_ms) }),
    ];
  }

  /** A check's result, as a pill readable without colour. */
  function checkPill(status) {
    const as = { passed: "success", failed: "failed", cached: "success", not_built: "cancelled" }[status] || "cancelled";
    const text = { passed: "Passed", failed: "Failed", cached: "Cached", not_built: "Not built" }[status] || status;
    return h("span", { class: `pill status-${as} check-${status}` }, statusIcon(as), h("span", { class: "pill-text", text }));
  }

  function kindText(kind) {
    return (
      {
        check: "A check failed",
        timeout: "Timed out",
        infrastructure: "Infrastructure failure",
      }[kind] || "Failed"
    );
  }

  function outputsEl(outputs) {
    if (!outputs) return h("p", { class: "muted", text: "Not introspected yet." });
    if (outputs.error) return h("p", { class: "problem-text" }, "Could not list the outputs: ", h("code", { text: outputs.error }));
    const keys = Object.keys(outputs);
    if (!keys.length) return h("p", { class: "muted", text: "The flake has no outputs." });
    const chips = (names) => h("span", { class: "chips" }, names.map((n) => h("code", { class: "chip", text: String(n) })));
    return h(
      "dl",
      { class: "outputs" },
      keys.map((key) => {
        const value = outputs[key];
        let body;
        if (Array.isArray(value)) body = chips(value);
        else if (value && typeof value === "object") {
          body = Object.entries(value).map(([system, names]) =>
            h("div", { class: "system" }, h("span", { class: "system-name", text: system }), chips(Array.isArray(names) ? names : [])),
          );
        } else body = String(value);
        return [h("dt", { text: key }), h("dd", {}, body)];
      }),
    );
  }

  function attemptsEl(b) {
    const attempts = b.attempts || [];
    if (attempts.length < 2 && !attempts.some((a) => a.log_truncated || a.log_deleted)) return "";
    return h(
      "section",
      { class: "card attempts-card", "aria-labelledby": "attempts-title" },
      h("h2", { id: "attempts-title", text: "Attempts" }),
      h(
        "table",
        { class: "attempts" },
        h("thead", {}, h("tr", {}, ["Attempt", "Started", "Outcome", "Exit code", "Log"].map((t) => h("th", { scope: "col", text: t })))),
        h(
          "tbody",
          {},
          attempts.map((a) =>
            h(
              "tr",
              {},
              h("td", { text: String(a.attempt) }),
              h("td", { text: localTime(a.started_at) }),
              h("td", { text: a.outcome || (a.finished_at ? "" : "running") }),
              h("td", { text: a.exit_code === null || a.exit_code === undefined ? "" : String(a.exit_code) }),
              h(
                "td",
                {},
                a.log_deleted
                  ? h("span", { class: "muted", text: "deleted" })
                  : h("a", {
                      href: `/api/builds/${b.id}/logs?attempt=${a.attempt}`,
                      "data-raw-log": true,
                      target: "_blank",
                      rel: "noopener",
                      text: `${formatBytes(a.log_bytes)}${a.log_truncated ? " (truncated)" : ""}`,
                    }),
              ),
            ),
          ),
        ),
      ),
    );
  }

  function formatBytes(n) {
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
    return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  }

  // ------------------------------------------------------ repositories view

  function repoNameProblem(name) {
    if (!name) return "Enter a name.";
    if (name.length > 100) return "At most 100 characters.";
    if (!/^[A-Za-z0-9]/.test(name)) return "Start with a letter or digit.";
    if (!REPO_NAME_RE.test(name)) return "Use only letters, digits, '.', '_' and '-'.";
    if (name.includes("..")) return "No '..' please.";
    if (name.toLowerCase().endsWith(".git")) return "Leave out '.git'; it is added on disk.";
    return "";
  }

  function pushHelp(repo, idPrefix) {
    return h(
      "div",
      { class: "push" },
      copyField("Push URL on this host", repo.path, `${idPrefix}-path`),
      repo.ssh_url ? copyField("Push URL over SSH", repo.ssh_url, `${idPrefix}-ssh`) : null,
    );
  }

  class ReposView extends View {
    constructor() {
      super();
      this.kind = "repos";
    }

    render() {
      this.listEl = h("div", { class: "repo-list" }, h("p", { class: "loading", text: "Loading…" }));
      this.nameInput = h("input", {
        id: "repo-name",
        name: "name",
        type: "text",
        required: true,
        maxlength: 100,
        autocomplete: "off",
        spellcheck: "false",
        "aria-describedby": "repo-name-hint",
      });
      this.descInput = h("input", { id: "repo-description", name: "description", type: "text", maxlength: 1000, autocomplete: "off" });
      this.hint = h("p", { id: "repo-name-hint", class: "hint", text: "Letters, digits, '.', '_' and '-'; at most 100." });
      this.formError = h("p", { id: "repo-error", class: "form-error", role: "alert", hidden: true });
      this.submit = h("button", { type: "submit", id: "repo-create", class: "primary", text: "Create repository" });
      this.nameInput.addEventListener("input", () => {
        const problem = this.nameInput.value ? repoNameProblem(this.nameInput.value) : "";
        this.hint.textContent = problem || "Letters, digits, '.', '_' and '-'; at most 100.";
        this.hint.classList.toggle("warn", !!problem);
        this.nameInput.setAttribute("aria-invalid", problem ? "true" : "false");
      });
      // The server decides: its message is shown when it refuses.
      const form = h(
        "form",
        { class: "card create-form", "aria-labelledby": "create-title", novalidate: true },
        h("h2", { id: "create-title", text: "New repository" }),
        h("div", { class: "field" }, h("label", { for: "repo-name", text: "Name" }), this.nameInput, this.hint),
        h("div", { class: "field" }, h("label", { for: "repo-description", text: "Description (optional)" }), this.descInput),
        this.formError,
        h("div", { class: "form-buttons" }, this.submit),
      );
      form.addEventListener("submit", (e) => {
        e.preventDefault();
        this.create();
      });
      this.root = h(
        "section",
        { class: "view repos-view", "aria-labelledby": "view-title" },
        h("div", { class: "view-head" }, h("h1", { id: "view-title", tabindex: "-1", text: "Repositories" })),
        h("div", { class: "repos-layout" }, this.listEl, form),
      );
      setTitle("Repositories", null);
      return this.root;
    }

    async create() {
      const name = this.nameInput.value.trim();
      this.formError.hidden = true;
      this.submit.disabled = true;
      try {
        const repo = await api("/api/repos", {
          method: "POST",
          body: { name, description: this.descInput.value.trim() },
          purpose: "Creating a repository needs the API token.",
        });
        repoCache.stale = true;
        toast(`Repository ${repo.name} created`, "success");
        this.nameInput.value = "";
        this.descInput.value = "";
        location.hash = `#/repos/${encodeURIComponent(repo.name)}`;
      } catch (e) {
        this.formError.textContent = e.message;
        this.formError.hidden = false;
        if (e.field === "name" || e.status === 409) {
          this.nameInput.setAttribute("aria-invalid", "true");
          this.nameInput.focus();
        }
      } finally {
        this.submit.disabled = false;
      }
    }

    reload() {
      return this.loading(async () => {
        repoCache.stale = true;
        let repos;
        try {
          repos = await repoCache.get();
        } catch (e) {
          this.listEl.replaceChildren(errorBox(e, () => this.reload()));
          return;
        }
        if (this.destroyed) return;
        if (!repos.length) {
          this.listEl.replaceChildren(
            h(
              "div",
              { class: "empty card" },
              h("p", { text: "No repositories yet." }),
              h("p", { text: "Create one with the form, push a flake to it, and every push is checked with nix flake check." }),
            ),
          );
          return;
        }
        this.listEl.replaceChildren(
          h(
            "ul",
            { class: "repo-cards", "aria-label": "Repositories" },
            repos.map((r, i) =>
              h(
                "li",
                { class: "card repo-card", "data-repo": r.name },
                h(
                  "div",
                  { class: "repo-card-head" },
                  h("h2", {}, h("a", { href: `#/repos/${encodeURIComponent(r.name)}`, text: r.name })),
                  r.declared ? h("span", { class: "tag", text: "declared", title: "Declared in the configuration" }) : null,
                ),
                h("p", { class: r.description ? "desc" : "desc muted", text: r.description || "No description" }),
                pushHelp(r, `repo-${i}`),
              ),
            ),
          ),
        );
      });
    }

    event(type) {
      if (type === "repo.created" || type === "repo.deleted") this.reload();
    }
  }

  class RepoView extends View {
    constructor(name) {
      super();
      this.kind = "repo";
      this.name = name;
      this.timer = 0;
    }

    render() {
      this.body = h("div", { class: "repo-body" }, h("p", { class: "loading", text: "Loading…" }));
      this.root = h(
        "section",
        { class: "view repo-view", "aria-labelledby": "view-title" },
        h(
          "nav",
          { class: "crumbs", "aria-label": "Breadcrumb" },
          h("a", { href: "#/repos", text: "Repositories" }),
          h("span", { "aria-hidden": "true", text: " / " }),
          h("span", { text: this.name }),
        ),
        this.body,
      );
      setTitle(this.name, null);
      return this.root;
    }

    reload() {
      return this.loading(async () => {
        let repo;
        try {
          repo = await api(`/api/repos/${encodeURIComponent(this.name)}`);
        } catch (e) {
          if (!this.destroyed) this.body.replaceChildren(errorBox(e, () => this.reload()));
          return;
        }
        if (this.destroyed) return;
        this.show(repo);
      });
    }

    show(repo) {
      const origin = location.origin;
      const main = repo.branches.some((b) => b.name === "main") || !repo.branches.length ? "main" : repo.branches[0].name;
      const badgePath = `/api/repos/${encodeURIComponent(repo.name)}/badge.svg?branch=${encodeURIComponent(main)}`;
      const markdown = `[![build](${origin}${badgePath})](${origin}/#/repos/${encodeURIComponent(repo.name)})`;
      const badge = h("img", { class: "badge", alt: `Build status of ${main}`, width: 100, height: 20 });
      this.loadBadge(badge, badgePath);
      const latest = repo.branches.find((b) => b.name === main);
      const headStatus = latest && latest.latest_build ? latest.latest_build.status : null;
      setTitle(repo.name, headStatus);
      this.body.replaceChildren(
        h(
          "div",
          { class: "repo-head" },
          h("h1", { id: "view-title", tabindex: "-1", text: repo.name }),
          badge,
          repo.declared ? h("span", { class: "tag", text: "declared" }) : null,
        ),
        h("p", { class: repo.description ? "desc" : "desc muted", text: repo.description || "No description" }),
        h(
          "div",
          { class: "cards" },
          h(
            "section",
            { class: "card", "aria-labelledby": "push-title" },
            h("h2", { id: "push-title", text: "Push to build" }),
            pushHelp(repo, "detail"),
            h(
              "p",
              { class: "hint" },
              "For example: ",
              h("code", { text: `git remote add ci ${repo.ssh_url || repo.path} && git push ci HEAD:main` }),
            ),
          ),
          h(
            "section",
            { class: "card", "aria-labelledby": "badge-title" },
            h("h2", { id: "badge-title", text: "Status badge" }),
            copyField(`Markdown for ${main}`, markdown, "badge-markdown", 3),
          ),
        ),
        h(
          "section",
          { class: "card", "aria-labelledby": "branches-title" },
          h(
            "div",
            { class: "card-head" },
            h("h2", { id: "branches-title", text: "Branches" }),
            h("a", { href: buildsHash({ repo: repo.name }), text: "All builds of this repository →" }),
          ),
          repo.branches.length
            ? h(
                "table",
                { class: "branches" },
                h("thead", {}, h("tr", {}, ["Branch", "Head", "Latest build", "Success rate", "Median duration"].map((t) => h("th", { scope: "col", text: t })))),
                h(
                  "tbody",
                  {},
                  repo.branches.map((b) =>
                    h(
                      "tr",
                      { "data-branch": b.name },
                      h("td", {}, h("a", { href: buildsHash({ repo: repo.name, branch: b.name }), text: b.name })),
                      h("td", {}, h("code", { title: b.commit, text: shortCommit(b.commit) })),
                      h(
                        "td",
                        {},
                        b.latest_build
                          ? h(
                              "a",
                              { href: `#/builds/${b.latest_build.id}`, class: "latest" },
                              statusPill(b.latest_build.status),
                              h("span", { text: ` #${b.latest_build.id}` }),
                              b.latest_build.commit !== b.commit
                                ? h("span", { class: "muted", text: ` (of ${shortCommit(b.latest_build.commit)})` })
                                : null,
                            )
                          : h("span", { class: "muted", text: "never built" }),
                      ),
                      ...statsCells(b.stats),
                    ),
                  ),
                ),
              )
            : h("p", { class: "muted", text: "No branches yet: push one." }),
        ),
      );
    }

    async loadBadge(img, path) {
      try {
        const text = await api(path);
        img.src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(text);
      } catch {
        img.remove();
      }
    }

    event(type, data) {
      if (type.startsWith("repo.") && data.name === this.name) {
        this.reload();
      } else if (type.startsWith("build.") && type !== "build.log" && data.repo === this.name) {
        clearTimeout(this.timer);
        this.timer = setTimeout(() => this.reload(), 250);
      }
    }

    destroy() {
      super.destroy();
      clearTimeout(this.timer);
    }
  }

  class NotFoundView extends View {
    render() {
      setTitle("Not found", null);
      return h(
        "section",
        { class: "view" },
        h("h1", { id: "view-title", tabindex: "-1", text: "Nothing here" }),
        h("p", {}, "This address is not a page of procurator-ci. ", h("a", { href: "#/", text: "See the builds." })),
      );
    }
  }

  // --------------------------------------------------------------- router

  let currentView = null;

  function parseRoute() {
    const raw = location.hash.replace(/^#/, "") || "/";
    const [path, query] = raw.split("?", 2);
    const params = new URLSearchParams(query || "");
    let m;
    if (path === "/" || path === "") return { kind: "builds", key: "builds", params };
    if ((m = BUILD_RE.exec(path))) return { kind: "build", key: `build/${m[1]}`, id: Number(m[1]), params };
    if (path === "/repos" || path === "/repos/") return { kind: "repos", key: "repos", params };
    if ((m = REPO_RE.exec(path))) {
      let name = m[1];
      try {
        name = decodeURIComponent(name);
      } catch {
        // keep it as it is
      }
      return { kind: "repo", key: `repo/${name}`, name, params };
    }
    return { kind: "notfound", key: "notfound", params };
  }

  function route() {
    const r = parseRoute();
    for (const link of document.querySelectorAll("[data-nav]")) {
      const active = link.dataset.nav === (r.kind === "build" || r.kind === "builds" ? "builds" : "repos");
      if (active) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    if (currentView && currentView.routeKey === r.key && currentView.update) {
      currentView.update(r.params);
      return;
    }
    if (currentView) currentView.destroy();
    let view;
    if (r.kind === "builds") view = new BuildsView(r.params);
    else if (r.kind === "build") view = new BuildView(r.id, r.params);
    else if (r.kind === "repos") view = new ReposView();
    else if (r.kind === "repo") view = new RepoView(r.name);
    else view = new NotFoundView();
    view.routeKey = r.key;
    currentView = view;
    const main = document.getElementById("main");
    main.replaceChildren(view.render());
    main.dataset.view = r.kind;
    window.scrollTo(0, 0);
    if (routed) {
      const title = main.querySelector("h1") || main;
      title.focus({ preventScroll: true });
    }
    routed = true;
    view.start();
  }

  let routed = false;

  // ------------------------------------------------------------------ boot

  async function boot() {
    setupTokenDialog();
    setLive("connecting");
    await learnReadMode();
    // Learns whether reads need the token, asking for it before anything
    // is shown when they do.
    try {
      await repoCache.get();
    } catch (e) {
      if (e.status === 401) {
        document.getElementById("main").replaceChildren(
          h(
            "section",
            { class: "view" },
            h("h1", { text: "The API token is needed" }),
            h("p", { text: "This daemon shows its builds only to holders of its API token." }),
            h("button", { type: "button", class: "primary", text: "Enter the token", onclick: () => boot2() }),
          ),
        );
        setLive("offline");
        return;
      }
      // Other failures show in the view.
    }
    window.addEventListener("hashchange", route);
    route();
  }

  async function boot2() {
    try {
      await repoCache.get();
    } catch (e) {
      if (e.status === 401) return;
    }
    if (!routed) {
      window.addEventListener("hashchange", route);
      route();
    }
  }

  boot();
})();
