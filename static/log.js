// A build's log: ANSI colours, and a pane that renders only what is near
// the visible part of a long log.

import { h } from "./ui.js";

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

/** UTF-8 length of a string, without allocating. */
function utf8Length(text) {
  let n = text.length;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) n += 1;
    else if (c >= 0xd800 && c <= 0xdbff) {
      // A surrogate pair: two units, four bytes.
      n += 2;
      i++;
    } else n += 2;
  }
  return n;
}

/** Yields to the browser, so that long work never blocks it for long. */
function breather() {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** Milliseconds of work between breathers while a log loads. */
const SLICE_MS = 12;

/**
 * A log pane fed with text pieces; keeps ANSI state and partial lines. It
 * may start at any line of a log (the end of a long one, shown first):
 * the lines before it are a gap of their own height until they are loaded,
 * which happens on demand, a slice at a time, without moving what is shown.
 */
export class LogPane {
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
    this.gapObserver = new IntersectionObserver(
      (entries) => {
        if (entries.some((e) => e.isIntersecting) && this.onNeedEarlier) this.onNeedEarlier();
      },
      { root: this.el, rootMargin: "300px 0px" },
    );
    /** Called when the reader needs the lines before the loaded part. */
    this.onNeedEarlier = null;
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
    // The first line held (lines before it are not loaded yet).
    this.base = 1;
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
    this.gapObserver.disconnect();
    this.gap = null;
    this.earlier = null;
    // {el, first: line number, texts, state: ANSI state at `first`,
    // shown: rendered, near: within reach of the visible part}
    this.chunks = [];
    this.byEl = new Map();
    this.lines.replaceChildren();
    this.el.classList.add("empty");
  }

  lineHeight() {
    if (!this.height) this.height = parseFloat(getComputedStyle(this.el).lineHeight) || 20;
    return this.height;
  }

  /**
   * Starts the pane at byte `offset`, the start of line `line`; lines
   * before it are a gap of their height, with `label` on its button.
   */
  startAt(offset, line, label) {
    this.bytes = offset;
    this.partialStart = offset;
    this.base = line;
    this.count = line - 1;
    this.lineStarts[line] = offset;
    if (line <= 1) return;
    this.el.classList.remove("empty");
    this.gapButton = h("button", {
      type: "button",
      class: "ghost small",
      text: label,
      "data-load-earlier": true,
      onclick: () => this.onNeedEarlier && this.onNeedEarlier(),
    });
    this.gap = h("div", { class: "log-gap", "data-lines": line - 1 }, this.gapButton);
    this.gap.style.height = `${(line - 1) * this.lineHeight()}px`;
    this.lines.prepend(this.gap);
    this.gapObserver.observe(this.gap);
  }

  /** Whether lines before the loaded part are still to load. */
  missingEarlier() {
    return this.base > 1;
  }

  /** The first error is known (from the daemon) before its line arrives. */
  setFirstError(n) {
    if (this.firstError) return;
    this.firstError = n;
    if (this.onFirstError) this.onFirstError(n, "");
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

  /** Notes a line: its first error, its byte offset. */
  account(n, line) {
    if (!this.firstError && FIRST_ERROR.test(plainOf(line))) {
      this.firstError = n;
      if (this.onFirstError) this.onFirstError(n, plainOf(line));
    }
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
      this.account(n, line);
      chunk.texts.push(line);
      if (chunk.shown) chunk.el.append(this.line(n, line, chunk.running));
      advanceAnsi(this.state, line);
      touched.add(chunk);
      this.partialStart += utf8Length(line) + 1;
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

  /**
   * Fills the gap with the log from its start: `pieces` yields the text of
   * bytes [0, start of the loaded part). Lines go in a slice at a time, each
   * chunk taking the gap's room so that nothing shown moves.
   */
  async fillEarlier(pieces) {
    const state = freshState();
    let n = 0;
    let offset = 0;
    let carry = "";
    let chunk = null;
    let at = 0;
    const flush = () => {
      if (!chunk) return;
      this.estimate(chunk);
      this.lines.insertBefore(chunk.el, this.gap);
      this.chunks.splice(at++, 0, chunk);
      this.byEl.set(chunk.el, chunk);
      this.observer.observe(chunk.el);
      const left = this.base - 1 - n;
      this.gap.style.height = `${left * this.lineHeight()}px`;
      chunk = null;
    };
    let slice = performance.now();
    for await (const text of pieces) {
      const parts = (carry + text).split("\n");
      carry = parts.pop();
      for (const line of parts) {
        // Reset meanwhile (another attempt), or past the loaded part.
        if (!this.gap || n + 1 >= this.base) break;
        if (!chunk) chunk = this.makeChunk(n + 1, state);
        n++;
        this.lineStarts[n] = offset;
        offset += utf8Length(line) + 1;
        this.account(n, line);
        chunk.texts.push(line);
        advanceAnsi(state, line);
        if (chunk.texts.length === CHUNK_LINES) flush();
        if (performance.now() - slice > SLICE_MS) {
          await breather();
          slice = performance.now();
        }
      }
    }
    if (!this.gap) return;
    flush();
    // The loaded part may start inside a line longer than its window: the
    // start of that line is left out rather than numbered twice.
    this.gap.remove();
    this.gapObserver.disconnect();
    this.gap = null;
    this.base = 1;
  }

  whole() {
    return this.count - this.base + 1 <= WHOLE_LOG_LINES && this.base === 1;
  }

  makeChunk(first, state) {
    return {
      el: h("div", { class: "log-chunk" }),
      first,
      texts: [],
      state: { ...state },
      // The state while rendering appended lines; set by `show`.
      running: null,
      shown: false,
      near: false,
    };
  }

  /** A new, empty last chunk; watched so it is rendered when near. */
  newChunk() {
    const chunk = this.makeChunk(this.count + 1, this.state);
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
    chunk.el.style.height = `${chunk.texts.length * this.lineHeight()}px`;
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
    // An empty line keeps its row by .ln's min-height: no invisible
    // character that a copy of the log would carry.
    renderAnsi(el, text, state);
    if (n === this.firstError) el.classList.add("first-error");
    if (n === this.target) el.classList.add("target");
    return el;
  }

  toEnd() {
    this.el.scrollTop = this.el.scrollHeight;
  }

  /** The number of the line holding byte `offset`, once it has arrived. */
  lineAt(offset) {
    if (offset < this.lineStarts[this.base]) return null;
    if (offset >= this.partialStart) return this.partial ? this.count + 1 : null;
    let low = this.base;
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

  /** The chunk holding line `n`. */
  chunkOf(n) {
    let low = 0;
    let high = this.chunks.length - 1;
    while (low < high) {
      const mid = Math.ceil((low + high) / 2);
      if (this.chunks[mid].first <= n) low = mid;
      else high = mid - 1;
    }
    return this.chunks[low];
  }

  /**
   * Brings line `n` into view, in the log and on the page, and marks it;
   * false until it has arrived.
   */
  showLine(n) {
    if (!(n >= this.base && (n <= this.count || (n === this.count + 1 && this.partialEl)))) return false;
    const chunk = this.chunkOf(n);
    if (chunk) this.show(chunk);
    const el = document.getElementById(`L${n}`);
    if (!el) return false;
    this.setFollow(false);
    for (const old of this.lines.querySelectorAll(".target")) old.classList.remove("target");
    this.target = n;
    el.classList.add("target");
    // Both the log and the page scroll: the log alone left the line below
    // the fold when the log itself was.
    el.scrollIntoView({ block: "center", inline: "nearest" });
    return true;
  }
}
