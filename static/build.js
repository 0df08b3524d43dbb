// One build: its facts, checks, attempts and live log.

import {
  FINAL,
  mergeChecks,
  progressEl,
  STATUS_TEXT,
  h,
  statusIcon,
  buildPill,
  agoEl,
  localTime,
  durationEl,
  duration,
  errorBox,
  formatBytes,
  setTitle,
  toast,
  announce,
  confirmDialog,
} from "./ui.js";
import { api } from "./api.js";
import { View, feed, repoCache } from "./feed.js";
import { LogPane } from "./log.js";
import { buildsHash } from "./builds.js";

// ------------------------------------------------------------ build view

/**
 * Bytes of a log fetched first: its end, what a reader looks at first. A
 * log this long or shorter comes whole, so find in page sees all of it.
 */
const TAIL_BYTES = 256 * 1024;

export class BuildView extends View {
  constructor(id, params) {
    super();
    this.kind = "build";
    this.id = id;
    this.build = null;
    this.streaming = null;
    this.wantLine = Number(params.get("line")) || null;
    // Bumped whenever the log starts over (another attempt).
    this.logGen = 0;
    this.earlier = null;
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
    this.log.onNeedEarlier = () => this.loadEarlier();
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
    // An interruption someone asked for is not an error to jump to.
    if (this.build && this.build.status === "cancelled") return;
    this.errorLink.hidden = false;
    this.errorLink.href = `#/builds/${this.id}?line=${n}`;
    this.errorLink.textContent = `First error: line ${n}`;
    this.errorLink.title = text;
    this.tryWantLine();
  }

  update(params) {
    this.wantLine = Number(params.get("line")) || null;
    this.tryWantLine();
  }

  /** Shows the line the address asks for once it is there, loading it. */
  tryWantLine() {
    const n = this.wantLine;
    if (!n) return;
    if (this.log.showLine(n)) this.wantLine = null;
    else if (n < this.log.base) this.loadEarlier();
  }

  logOffset() {
    return this.log.bytes;
  }

  start() {
    this.reload().then(() => {
      if (!this.destroyed) this.openStream();
    });
  }

  /**
   * The stream: with this build's log once it has started. The end of the
   * log comes first over plain HTTP, and the stream goes on from there.
   */
  openStream() {
    const live = this.build && this.build.status !== "queued";
    const key = live ? this.build.attempt : "queued";
    if (this.streaming === key) return;
    this.streaming = key;
    if (!live) {
      feed.open(null, () => this.reload());
      return;
    }
    this.log.reset();
    this.earlier = null;
    this.updateLogState();
    const gen = ++this.logGen;
    this.loadTail(key).then(() => {
      // Events published while reconnecting are caught up by a reload.
      if (gen === this.logGen && !this.destroyed) feed.open(this.id, () => this.reload());
    });
  }

  /** The end of attempt `attempt`'s log, with where it starts. */
  async loadTail(attempt) {
    const gen = this.logGen;
    let response;
    let text;
    try {
      response = await api(`/api/builds/${this.id}/logs?ansi=1&attempt=${attempt}&tail=${TAIL_BYTES}`, { raw: true });
      text = await response.text();
    } catch (e) {
      if (!this.destroyed) toast(`The log cannot be read: ${e.message}`, "error");
      return;
    }
    if (gen !== this.logGen || this.destroyed) return;
    const offset = Number(response.headers.get("x-log-offset")) || 0;
    const line = Number(response.headers.get("x-log-line")) || 1;
    this.log.startAt(offset, line, `Load lines 1–${line - 1} (${formatBytes(offset)})`);
    const error = Number(response.headers.get("x-log-first-error-line"));
    if (error) this.log.setFirstError(error);
    this.log.piece(offset, text);
    this.tryWantLine();
  }

  /** The lines before the end that was shown, when the reader needs them. */
  loadEarlier() {
    if (this.earlier || !this.log.missingEarlier()) return this.earlier;
    const gen = this.logGen;
    const end = this.log.lineStarts[this.log.base];
    const button = this.log.gapButton;
    button.disabled = true;
    button.textContent = "Loading the earlier lines…";
    const load = async () => {
      const response = await api(`/api/builds/${this.id}/logs?ansi=1&attempt=${this.streaming}`, { raw: true });
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      async function* pieces() {
        let got = 0;
        try {
          while (got < end) {
            const { value, done } = await reader.read();
            if (done) break;
            const part = got + value.length > end ? value.subarray(0, end - got) : value;
            got += part.length;
            yield decoder.decode(part, { stream: true });
          }
          yield decoder.decode();
        } finally {
          reader.cancel().catch(() => {});
        }
      }
      await this.log.fillEarlier(pieces());
      if (gen !== this.logGen || this.destroyed) return;
      this.tryWantLine();
      if (this.wantOffset !== undefined) this.showOffset(this.wantOffset);
    };
    this.earlier = load().catch((e) => {
      if (gen !== this.logGen || this.destroyed) return;
      this.earlier = null;
      button.disabled = false;
      button.textContent = "Load the earlier lines";
      toast(`The earlier lines cannot be read: ${e.message}`, "error");
    });
    return this.earlier;
  }

  reload() {
    return this.loading(async () => {
      let detail;
      try {
        detail = await api(`/api/builds/${this.id}`);
      } catch (e) {
        if (this.destroyed) return;
        if (!this.build && e.status === 404) this.notFound();
        else if (!this.build) {
          this.head.replaceChildren(errorBox(e, () => this.reload()));
          setTitle(`#${this.id}`, null);
        } else toast(e.message, "error");
        return;
      }
      if (this.destroyed) return;
      this.show(detail);
    });
  }

  /** A build that does not exist: said plainly, with nothing else around. */
  notFound() {
    setTitle(`Build #${this.id} not found`, null);
    this.streaming = "none";
    this.root.replaceChildren(
      h(
        "div",
        { class: "not-found card", "data-not-found": true },
        h("h1", { id: "view-title", tabindex: "-1", text: `Build #${this.id} does not exist` }),
        h("p", { text: "It may have been mistyped, or belong to another procurator-ci." }),
        h("p", {}, h("a", { href: "#/", text: "See all builds" })),
      ),
    );
  }

  show(build) {
    const previous = this.build;
    // Keep attempts from the detail when an event (without them) arrives.
    if (!build.attempts && previous && previous.attempts) build = { ...build, attempts: previous.attempts };
    if (!build.cache && previous && previous.cache) build = { ...build, cache: previous.cache };
    if (!build.forge_statuses && previous && previous.forge_statuses) build = { ...build, forge_statuses: previous.forge_statuses };
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
    // A deleted repository's builds are kept but cannot be rebuilt: no
    // button that would only answer an error.
    if (this.rebuildButton) {
      const button = this.rebuildButton;
      repoCache
        .get()
        .then((repos) => {
          if (repos.some((r) => r.name === b.repo) || !button.isConnected) return;
          button.replaceWith(
            h("span", { class: "repo-gone muted", id: "repo-gone", text: "Its repository was deleted: it cannot be rebuilt" }),
          );
          if (this.rebuildButton === button) this.rebuildButton = null;
        })
        .catch(() => {});
    }
    this.head.replaceChildren(
      h(
        "header",
        { class: `build-head status-${b.status}` },
        h(
          "div",
          { class: "title-line" },
          buildPill(b, true),
          h("h1", { id: "view-title", tabindex: "-1", text: `Build #${b.id}` }),
          b.subject ? h("span", { class: "subject", text: b.subject }) : null,
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
      b.message ? ["Message", h("pre", { class: "commit-message", text: b.message })] : null,
      b.author ? ["Author", b.author] : null,
      [
        "Trigger",
        b.rebuild_of
          ? h("span", {}, `${b.trigger}, of `, h("a", { href: `#/builds/${b.rebuild_of}`, text: `#${b.rebuild_of}` }))
          : b.trigger,
      ],
      b.untrusted
        ? ["Trust", h("span", { class: "tag untrusted", text: "untrusted: a fork's pull request, built without secrets (no cache push, no signed notifications)" })]
        : null,
      ["Queued", h("span", {}, agoEl(b.created_ms, b.created_at), h("span", { class: "muted", text: ` · ${localTime(b.created_at)}` }))],
      b.started_at ? ["Started", localTime(b.started_at)] : null,
      b.finished_at ? ["Finished", localTime(b.finished_at)] : null,
      ["Duration", this.durationFact(b)],
      [
        "Attempt",
        `${b.attempt || 0}${b.retry_count ? ` (${b.retry_count} of ${b.max_retries} retries used)` : ` (up to ${b.max_retries} retries)`}`,
      ],
      b.exit_code !== null && b.exit_code !== undefined ? ["Exit code", String(b.exit_code)] : null,
    ].filter(Boolean);
    const problem = problemEl(b);
    if (b.status === "cancelled") this.errorLink.hidden = true;
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
        h(
            "section",
            { class: "card outputs-card", "aria-labelledby": "outputs-title" },
            h("h2", { id: "outputs-title", text: "Flake outputs" }),
            outputsEl(b),
          ),
      ),
      (this.checksSlot = h("div", { class: "checks-slot" }, this.checksEl(b))),
      cacheEl(b),
      forgeEl(b),
      attemptsEl(b),
    );
    this.updateLogState();
    if (previous && previous.status !== b.status) {
      this.root.querySelector(".build-head").classList.add("changed");
      announce(`Build #${b.id} ${STATUS_TEXT[b.status].toLowerCase()}`);
    }
    if (!this.destroyed && this.streaming !== null) this.openStream();
  }

  /**
   * How long the build took: its last attempt, and every attempt together
   * when there were several (retries spend time too).
   */
  durationFact(b) {
    const attempts = b.attempts || [];
    if (attempts.length < 2) return durationEl(b);
    const total = attempts.reduce((sum, a) => {
      const end = a.finished_at ? Date.parse(a.finished_at) : Date.now();
      return sum + Math.max(0, end - Date.parse(a.started_at));
    }, 0);
    return h(
      "span",
      { class: "duration-total", "data-total-ms": total },
      `${duration(total)} over ${attempts.length} attempts (the last: `,
      durationEl(b),
      ")",
    );
  }

  /**
   * Some of a running build's checks changed (`build.checks`): the table
   * and the progress follow, the rest of the page stays as it is.
   */
  liveChecks(data) {
    const b = this.build;
    if (!b || b.status !== "running" || !this.checksSlot) return;
    this.build = { ...b, checks: mergeChecks(b.checks, data.checks), progress: data.progress };
    const focused = document.activeElement && document.activeElement.dataset.checkJump;
    this.checksSlot.replaceChildren(this.checksEl(this.build));
    if (focused) {
      const again = this.checksSlot.querySelector(`[data-check-jump="${CSS.escape(focused)}"]`);
      if (again) again.focus();
    }
  }

  /** One row per check with its result and a jump to its part of the log. */
  checksEl(b) {
    if (!b.checks || !b.checks.length) return "";
    // Where each check was built, once any was built on a remote builder.
    const remote = b.checks.some((c) => c.machine && c.machine !== "local");
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
        h("td", { class: "c-result" }, checkPill(c.status)),
        h("td", { class: "c-name" }, h("code", { text: c.name })),
        h("td", { class: "c-system muted", text: c.system }),
        h("td", { class: "c-duration" }, checkDuration(c)),
        remote ? h("td", { class: "c-machine" }, c.machine ? h("code", { text: c.machine }) : "") : "",
        h("td", { class: "check-detail" }, detail ? h("code", { text: detail }) : ""),
        h("td", { class: "c-log" }, jump),
      );
    });
    const failed = b.checks.filter((c) => c.status === "failed").length;
    return h(
      "section",
      { class: "card checks-card", "aria-labelledby": "checks-title" },
      h("h2", { id: "checks-title", text: `Checks (${b.checks.length}${failed ? `, ${failed} failed` : ""})` }),
      b.status === "running" && b.progress ? progressEl(b.progress, "check-progress") : "",
      h(
        "table",
        { class: "checks" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["Result", "Check", "System", "Duration", ...(remote ? ["Machine"] : []), "Detail", "Log"].map((t) =>
              h("th", { scope: "col", text: t }),
            ),
          ),
        ),
        h("tbody", {}, rows),
      ),
    );
  }

  showOffset(offset) {
    const n = this.log.lineAt(offset);
    if (n === null && offset < this.log.lineStarts[this.log.base]) {
      // Before the part loaded: load it, then come back.
      this.wantOffset = offset;
      this.loadEarlier();
      return;
    }
    this.wantOffset = undefined;
    if (n === null) return toast("That part of the log has not arrived yet.", "info");
    const hash = `#/builds/${this.id}?line=${n}`;
    // The same address again changes nothing: show the line anyway.
    if (location.hash === hash) this.update(new URLSearchParams(`line=${n}`));
    else location.hash = hash;
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
      this.tryWantLine();
      return;
    }
    if (!type.startsWith("build.") || data.id !== this.id) return;
    if (type === "build.cache") {
      if (this.build) this.show({ ...this.build, cache: data.cache });
      return;
    }
    if (type === "build.forge") {
      if (this.build) this.show({ ...this.build, forge_statuses: data.forge_statuses });
      return;
    }
    if (type === "build.checks") {
      this.liveChecks(data);
      return;
    }
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
    const sure = await confirmDialog({
      title: `Cancel build #${this.id}?`,
      text: "Its checks stop now and the build ends as cancelled. You can rebuild it later.",
      confirm: "Cancel the build",
      keep: "Keep it running",
    });
    if (!sure) return;
    button.disabled = true;
    try {
      const build = await api(`/api/builds/${this.id}/cancel?from=page`, {
        method: "POST",
        purpose: `Cancelling #${this.id} needs the API token.`,
      });
      toast(build.status === "cancelled" ? `Build #${build.id} cancelled` : `Stopping build #${build.id}…`, "info");
    } catch (e) {
      toast(`Cancel failed: ${e.message}`, "error");
      button.disabled = false;
    }
  }
}

/**
 * How long a check took; while it runs, how long it has been running
 * (the page's ticker keeps it current).
 */
function checkDuration(c) {
  if (c.duration_ms !== null && c.duration_ms !== undefined) return duration(c.duration_ms);
  if (c.status === "running" && c.started_ms) {
    return h("span", { class: "duration ticking", "data-since": c.started_ms, text: duration(Date.now() - c.started_ms) });
  }
  return "";
}

/** A check's result or state, as a pill readable without colour. */
function checkPill(status) {
  const as =
    { passed: "success", failed: "failed", cached: "success", not_built: "cancelled", queued: "queued", running: "running" }[status] ||
    "cancelled";
  const text =
    { passed: "Passed", failed: "Failed", cached: "Cached", not_built: "Not built", queued: "Queued", running: "Running" }[status] ||
    status;
  return h("span", { class: `pill status-${as} check-${status}` }, statusIcon(as), h("span", { class: "pill-text", text }));
}

const PUSH_TEXT = { pending: "Waiting", pushed: "Pushed", failed: "Gave up" };

/** What the binary cache holds of a green build and where it was pushed. */
function cacheEl(b) {
  const cache = b.cache;
  if (!cache) return "";
  const outputs = cache.outputs.length
    ? h(
        "ul",
        { class: "cache-outputs" },
        cache.outputs.map((o) => h("li", {}, h("code", { text: o.name }), " ", h("code", { class: "muted", text: o.path }))),
      )
    : h("p", { class: "muted", text: "No outputs to cache." });
  const pushes = cache.pushes.length
    ? h(
        "table",
        { class: "cache-pushes" },
        h("thead", {}, h("tr", {}, ["Cache", "Push", "Attempts", "Detail"].map((t) => h("th", { scope: "col", text: t })))),
        h(
          "tbody",
          {},
          cache.pushes.map((p) => {
            const retrying = p.status === "pending" && p.attempts > 0;
            const state = retrying ? "Retrying" : PUSH_TEXT[p.status] || p.status;
            const next = retrying && p.next_attempt_at ? ` · next try ${localTime(p.next_attempt_at)}` : "";
            return h(
              "tr",
              { "data-push": p.target, "data-push-status": p.status },
              h("td", {}, h("code", { text: p.target })),
              h("td", { class: `push-${retrying ? "retrying" : p.status}`, text: state }),
              h("td", { text: String(p.attempts) }),
              h("td", { class: "check-detail" }, p.error ? h("code", { text: p.error + next }) : next),
            );
          }),
        ),
      )
    : "";
  return h(
    "section",
    { class: "card cache-card", "aria-labelledby": "cache-title" },
    h("h2", { id: "cache-title", text: "Binary cache" }),
    cache.error ? h("p", { class: "problem-text" }, "Could not record the outputs: ", h("code", { text: cache.error })) : "",
    outputs,
    cache.outputs.length ? h("p", { class: "muted", text: cache.rooted ? "Kept alive by GC roots." : "No longer a GC root: the garbage collector may reclaim it." }) : "",
    pushes,
  );
}

const DELIVERY_TEXT = { pending: "Waiting", delivered: "Posted", failed: "Gave up", superseded: "Replaced" };

/** The commit statuses the build posts on its forge, and how each went. */
function forgeEl(b) {
  const statuses = b.forge_statuses;
  if (!statuses || !statuses.length) return "";
  return h(
    "section",
    { class: "card forge-card", "aria-labelledby": "forge-title" },
    h("h2", { id: "forge-title", text: "Commit statuses" }),
    h(
      "table",
      { class: "cache-pushes forge-statuses" },
      h("thead", {}, h("tr", {}, ["Context", "State", "Delivery", "Attempts", "Detail"].map((t) => h("th", { scope: "col", text: t })))),
      h(
        "tbody",
        {},
        statuses.map((s) => {
          const retrying = s.status === "pending" && s.attempts > 0;
          const delivery = retrying ? "Retrying" : DELIVERY_TEXT[s.status] || s.status;
          const next = retrying && s.next_attempt_at ? ` · next try ${localTime(s.next_attempt_at)}` : "";
          const detail = s.error ? h("code", { text: s.error + next }) : s.description;
          return h(
            "tr",
            { "data-forge-context": s.context, "data-forge-status": s.status },
            h("td", {}, h("code", { text: s.context })),
            h("td", { text: s.state }),
            h("td", { class: `push-${retrying ? "retrying" : s.status === "delivered" ? "pushed" : s.status}`, text: delivery }),
            h("td", { text: String(s.attempts) }),
            h("td", { class: "check-detail" }, detail),
          );
        }),
      ),
    ),
  );
}

/**
 * What a build that did not pass means, in the taxonomy's words: its title,
 * the summary and a one-line hint; for a passing build, what it did not test.
 */
function problemEl(b) {
  const d = b.diagnosis;
  if (b.status === "success" && b.notices && b.notices.length) {
    return h(
      "div",
      { class: "problem notice", role: "note", "data-notices": true },
      h("strong", { text: "Nothing tested here" }),
      b.notices.map((n) => h("span", { class: "notice-text", text: n })),
    );
  }
  if (!d || !(b.status === "failed" || b.status === "cancelled" || b.status === "queued")) return null;
  const summary = b.status === "cancelled" ? b.cancel_reason : b.failure_summary;
  const retrying = b.status === "queued";
  return h(
    "div",
    { class: `problem ${b.status === "cancelled" ? "cancelled" : retrying ? "retrying" : "failed"}`, role: "note", "data-kind": d.kind },
    h("strong", { class: "problem-title", text: retrying ? `${d.title} — retrying` : d.title }),
    summary ? h("span", { class: "problem-summary", text: summary }) : null,
    h("span", { class: "problem-hint", text: d.hint }),
  );
}

function outputsEl(b) {
  const outputs = b.outputs;
  if (!outputs) {
    const why =
      b.status === "queued"
        ? "Listed once the build starts."
        : b.status === "running"
          ? "Being listed…"
          : "Not listed: the build ended before the flake's outputs could be read.";
    return h("p", { class: "muted", "data-outputs-state": b.status, text: why });
  }
  if (outputs.error) return h("p", { class: "problem-text" }, "Could not list the outputs: ", h("code", { text: outputs.error }));
  const keys = Object.keys(outputs);
  if (!keys.length) return h("p", { class: "muted", text: "The flake has no outputs." });
  // A category nix shows as one value (lib, formatter.<system>) has no
  // names: it is listed all the same.
  const chips = (names) =>
    names.length
      ? h("span", { class: "chips" }, names.map((n) => h("code", { class: "chip", text: String(n) })))
      : h("span", { class: "muted", text: "defined" });
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
  const remote = attempts.some((a) => (a.machines || []).some((m) => m !== "local"));
  if (attempts.length < 2 && !attempts.some((a) => a.log_truncated || a.log_deleted)) return "";
  return h(
    "section",
    { class: "card attempts-card", "aria-labelledby": "attempts-title" },
    h("h2", { id: "attempts-title", text: "Attempts" }),
    h(
      "table",
      { class: "attempts" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["Attempt", "Started", "Outcome", "Exit code", ...(remote ? ["Machines"] : []), "Log"].map((t) =>
            h("th", { scope: "col", text: t }),
          ),
        ),
      ),
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
            remote ? h("td", { class: "a-machines", text: (a.machines || []).join(", ") }) : "",
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


