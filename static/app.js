// procurator-ci web page: builds, a build with its live log, repositories.
// Plain JavaScript modules, no build step; live updates come from one event
// stream on /api/events. Works under `script-src 'self'; style-src 'self'`:
// no inline styles or handlers, only classes and CSSOM.

import { BUILD_RE, REPO_RE, h, setTitle } from "./ui.js";
import { setupTokenDialog, learnReadMode } from "./api.js";
import { View, setLive, repoCache, setCurrentView, currentView, checkHealth } from "./feed.js";
import { BuildsView } from "./builds.js";
import { BuildView } from "./build.js";
import { ReposView, RepoView } from "./repos.js";

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

function parseRoute() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, query] = raw.split("?", 2);
  const params = new URLSearchParams(query || "");
  let m;
  // `#/builds` is the builds list as much as `#/` (links and users say so).
  if (path === "/" || path === "" || path === "/builds" || path === "/builds/") return { kind: "builds", key: "builds", params };
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
  setCurrentView(view);
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

/** Period of re-reading the daemon's health for the banner. */
const HEALTH_PERIOD_MS = 60000;

async function boot() {
  setupTokenDialog();
  checkHealth();
  setInterval(checkHealth, HEALTH_PERIOD_MS);
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
