// The JSON API: the token (kept in local storage, asked for in a dialog when
// a request needs it) and the read cookie for private reads.

import { toast } from "./ui.js";

const TOKEN_KEY = "procurator-ci.token";

// ------------------------------------------------------------------ API

export class ApiError extends Error {
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
export async function learnReadMode() {
  try {
    const response = await fetch("/api/health", { cache: "no-store" });
    if (response.ok) {
      const health = await response.json();
      privateReads = health.public_read === false;
      // The token dialog names the file the daemon really reads.
      if (health.api_token_file) document.getElementById("token-file").textContent = health.api_token_file;
    }
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

/** Whether reads need the token (the daemon said so with a 401). */
export function readsArePrivate() {
  return privateReads;
}

/** Forgets the read cookie, so the next read with the token renews it. */
export function dropSession() {
  session = false;
}

/**
 * Calls the API. A 401 asks for the token (once per call, again after a
 * wrong one) and retries; other errors throw ApiError with the server's
 * message. With `raw`, resolves with the response itself (its body unread).
 */
export async function api(path, options = {}) {
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
    if (options.raw) return response;
    if (response.status === 204) return null;
    const type = response.headers.get("content-type") || "";
    return type.includes("json") ? response.json() : response.text();
  }
}

// ---------------------------------------------------------- token dialog

let tokenAsk = null;

/** Opens the token dialog; resolves with the token, or null if cancelled. */
export function askToken({ reason, error, refused }) {
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

export function setupTokenDialog() {
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

