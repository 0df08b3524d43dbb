// Helpers every view uses: elements, status pills, times and durations,
// the toast, the title and favicon.

export const STATUSES = ["queued", "running", "success", "failed", "cancelled"];
export const FINAL = new Set(["success", "failed", "cancelled"]);
export const STATUS_TEXT = {
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
  untested: ["M5 8h6"],
};
export const BUILD_RE = /^\/builds\/(\d+)$/;
export const REPO_RE = /^\/repos\/([^/]+)$/;
export const REPO_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

// ---------------------------------------------------------------- helpers

/** Creates an element: h("a", {href: "#/", class: "x"}, child, "text"). */
export function h(tag, attrs, ...children) {
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

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";

export function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  for (const child of children) el.append(child);
  return el;
}

export function statusIcon(status) {
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
export function statusPill(status, big) {
  return h(
    "span",
    { class: `pill status-${status}${big ? " big" : ""}` },
    statusIcon(status),
    h("span", { class: "pill-text", text: STATUS_TEXT[status] || status }),
  );
}

/**
 * The pill of a build (or a build reference): a build that passed without
 * testing anything (`nothing_tested`) is not a plain green "Passed".
 */
export function buildPill(build, big) {
  if (build.status !== "success" || !build.nothing_tested) return statusPill(build.status, big);
  return h(
    "span",
    { class: `pill status-untested${big ? " big" : ""}`, title: "The flake has no checks for this host's system" },
    statusIcon("untested"),
    h("span", { class: "pill-text", text: "Passed, nothing tested" }),
  );
}

export function shortCommit(commit) {
  return (commit || "").slice(0, 8);
}

export function ago(ms) {
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

export function duration(ms) {
  if (ms === null || ms === undefined) return "";
  const total = Math.max(0, Math.floor(ms / 1000));
  // Short checks are common: "0.0 s" said nothing about them.
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  if (ms < 10000) return `${(ms / 1000).toFixed(1)} s`;
  const s = total % 60;
  const m = Math.floor(total / 60) % 60;
  const hrs = Math.floor(total / 3600);
  if (hrs) return `${hrs} h ${m} min`;
  if (m) return `${m} min ${s} s`;
  return `${s} s`;
}

export function localTime(iso) {
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
export function agoEl(ms, iso) {
  return h("time", { datetime: iso, title: localTime(iso), "data-ago": ms, text: ago(ms) });
}

/** The duration of a build: fixed when finished, ticking while running. */
export function durationEl(build) {
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

/**
 * A build's checks with those a `build.checks` event says changed, in name
 * order (the API's).
 */
export function mergeChecks(checks, changed) {
  const byName = new Map((checks || []).map((c) => [c.name, c]));
  for (const c of changed) byName.set(c.name, c);
  return [...byName.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

let progressIds = 0;

/**
 * How many of a running build's checks are done: a bar (a <progress>, which
 * assistive technology reads as a progressbar with its value and maximum)
 * named by the words beside it, "3 of 7 checks done".
 */
export function progressEl(progress, className) {
  const id = `progress-${++progressIds}`;
  const { done, total } = progress;
  return h(
    "span",
    { class: `progress ${className || ""}`, "data-done": done, "data-total": total },
    h("progress", { max: Math.max(total, 1), value: done, "aria-labelledby": id }),
    h("span", { id, class: "progress-text", text: `${done} of ${total} check${total === 1 ? "" : "s"} done` }),
  );
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
export function toast(message, kind) {
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
export function announce(message) {
  document.getElementById("announce").textContent = message;
}

export async function copyText(text, input) {
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
export function copyField(label, value, id, rows) {
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

export function setTitle(text, status) {
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


export function errorBox(error, retry) {
  return h(
    "div",
    { class: "notice error", role: "alert" },
    h("p", { text: error.message || String(error) }),
    retry ? h("button", { type: "button", text: "Try again", onclick: retry }) : null,
  );
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/**
 * Asks before something that cannot be undone; resolves true when
 * confirmed. With `typed`, the confirm button waits until that text is typed.
 */
export function confirmDialog({ title, text, confirm, keep, typed }) {
  return new Promise((resolve) => {
    const input = typed
      ? h("input", { id: "confirm-typed", type: "text", autocomplete: "off", spellcheck: "false", "aria-describedby": "confirm-text" })
      : null;
    const yes = h("button", { type: "submit", id: "confirm-yes", class: "danger", text: confirm, disabled: !!typed });
    const no = h("button", { type: "button", id: "confirm-no", class: "ghost", text: keep || "Keep it" });
    const form = h(
      "form",
      { method: "dialog" },
      h("h2", { id: "confirm-title", text: title }),
      h("p", { id: "confirm-text", text }),
      input ? h("label", { for: "confirm-typed", text: `Type ${typed} to confirm` }) : null,
      input,
      h("div", { class: "dialog-buttons" }, h("span", { class: "spacer" }), no, yes),
    );
    const dialog = h("dialog", { class: "confirm-dialog", "aria-labelledby": "confirm-title" }, form);
    let answer = false;
    if (input) input.addEventListener("input", () => (yes.disabled = input.value !== typed));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      if (typed && input.value !== typed) return;
      answer = true;
      dialog.close();
    });
    no.addEventListener("click", () => dialog.close());
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(answer);
    });
    document.body.append(dialog);
    dialog.showModal();
    (input || no).focus();
  });
}
