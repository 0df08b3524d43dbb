// Repositories: the list with the create form, and one repository.

import {
  REPO_NAME_RE,
  h,
  buildPill,
  shortCommit,
  duration,
  agoEl,
  copyField,
  errorBox,
  setTitle,
  toast,
  confirmDialog,
  localTime,
} from "./ui.js";
import { api } from "./api.js";
import { View, repoCache } from "./feed.js";
import { buildsHash } from "./builds.js";

/**
 * The upstream a repository mirrors: its state (a failing one in red, with
 * the error and the next try), the webhook URL to paste into the forge, and
 * the forks' pull requests that wait for a maintainer's approval.
 */
function upstreamCard(name, up, onApproved) {
  const hook = `${location.origin}/api/repos/${encodeURIComponent(name)}/webhook`;
  const facts = [
    ["URL", h("code", { text: up.url })],
    ["State", h("span", { class: `upstream-state upstream-${up.state}`, text: up.state === "failing" ? `failing (${up.failures} in a row)` : up.state })],
    up.last_error ? ["Error", h("pre", { class: "upstream-error", text: up.last_error })] : null,
    up.last_checked_at ? ["Last look", localTime(up.last_checked_at)] : null,
    up.next_check_at ? ["Next look", localTime(up.next_check_at)] : null,
    ["Polling", up.poll_interval_secs ? `every ${up.poll_interval_secs} s` : "off (webhooks only)"],
    ["Forks' pull requests", up.build_fork_pull_requests ? "built at once, untrusted" : "wait for approval, then built untrusted"],
  ].filter(Boolean);
  const waiting = (up.awaiting_approval || []).map((a) =>
    h(
      "li",
      {},
      `#${a.number} at `,
      h("code", { text: shortCommit(a.commit) }),
      " ",
      h("button", {
        type: "button",
        class: "primary approve-pull",
        "data-number": String(a.number),
        text: "Approve and build",
        onclick: async (event) => {
          event.target.disabled = true;
          try {
            const build = await api(`/api/repos/${encodeURIComponent(name)}/pulls/${a.number}/approve`, {
              method: "POST",
              purpose: "Approving a fork's pull request needs the API token.",
            });
            toast(`Build #${build.id} queued for pull request #${a.number} (untrusted).`);
            onApproved();
          } catch (e) {
            event.target.disabled = false;
            toast(e.message, "error");
          }
        },
      }),
    ),
  );
  return h(
    "section",
    { class: "card upstream-card", "aria-labelledby": "upstream-title" },
    h("h2", { id: "upstream-title", text: "Upstream" }),
    h("dl", { class: "facts" }, facts.flatMap(([k, v]) => [h("dt", { text: k }), h("dd", {}, v)])),
    up.webhook
      ? copyField("Webhook URL (content type application/json, the repository's webhook secret)", hook, "webhook-url", 1)
      : h("p", { class: "hint", text: "No webhook_secret_file: the forge's webhooks are refused; the daemon polls." }),
    waiting.length ? h("div", {}, h("h3", { text: "Waiting for approval" }), h("ul", { class: "awaiting" }, waiting)) : null,
  );
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

/** Branches per page of the repository view, and the most one page lists. */
const PAGE = 100;
const PAGE_MAX = 1000;

/** One branch of the repository view's table. */
function branchRow(repoName, b) {
  return h(
    "tr",
    { "data-branch": b.name },
    h("td", {}, h("a", { href: buildsHash({ repo: repoName, branch: b.name }), text: b.name })),
    h("td", {}, h("code", { title: b.commit, text: shortCommit(b.commit) })),
    h(
      "td",
      {},
      b.latest_build
        ? h(
            "a",
            { href: `#/builds/${b.latest_build.id}`, class: "latest" },
            buildPill(b.latest_build),
            h("span", { text: ` #${b.latest_build.id}` }),
            b.latest_build.subject ? h("span", { class: "subject", text: ` ${b.latest_build.subject}` }) : null,
            b.latest_build.commit !== b.commit ? h("span", { class: "muted", text: ` (of ${shortCommit(b.latest_build.commit)})` }) : null,
          )
        : h("span", { class: "muted", text: "never built" }),
    ),
    ...statsCells(b.stats),
  );
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

/** A repository's newest build, as its state on the list. */
function lastBuildEl(build) {
  if (!build) return h("p", { class: "last-build muted", text: "Never built" });
  return h(
    "p",
    { class: "last-build" },
    h(
      "a",
      { href: `#/builds/${build.id}`, "aria-label": `Last build #${build.id}, ${build.status}, on ${build.branch}` },
      buildPill(build),
      h("span", { class: "last-id", text: ` #${build.id}` }),
    ),
    h("span", { class: "branch", text: build.branch }),
    build.subject ? h("span", { class: "subject", title: build.subject, text: build.subject }) : null,
    h("span", { class: "muted" }, agoEl(build.created_ms, new Date(build.created_ms).toISOString())),
  );
}

export class ReposView extends View {
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
      h("div", { class: "repos-layout" }, this.listEl, h("div", { class: "side" }, form, this.cacheCard())),
    );
    setTitle("Repositories", null);
    return this.root;
  }

  /** How other machines substitute from this daemon, once /api/health says. */
  cacheCard() {
    const card = h("section", { class: "card cache-info", "aria-labelledby": "cache-info-title", hidden: true });
    api("/api/health")
      .then((health) => {
        const cache = health.cache;
        if (!cache || this.destroyed) return;
        card.append(
          h("h2", { id: "cache-info-title", text: "Binary cache" }),
          h("p", { class: "hint", text: "Machines substitute what CI built with these nix.settings." }),
          cache.url ? copyField("Substituter", cache.url, "cache-url") : h("p", { class: "muted", text: "Pushed to configured caches; not served here." }),
          copyField("Public key", cache.public_key, "cache-key"),
        );
        card.hidden = false;
      })
      .catch(() => {});
    return card;
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
              lastBuildEl(r.last_build),
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

export class RepoView extends View {
  constructor(name) {
    super();
    this.kind = "repo";
    this.name = name;
    this.timer = 0;
    /** Names of the branches listed, over the pages loaded. */
    this.shown = null;
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
        // A reload keeps the branches the reader opened, also those of a
        // "Show more" answered while it was on its way.
        const wanted = () => Math.min(Math.max(this.shown ? this.shown.size : 0, PAGE), PAGE_MAX);
        let limit;
        do {
          limit = wanted();
          const query = limit > PAGE ? `?branches_limit=${limit}` : "";
          repo = await api(`/api/repos/${encodeURIComponent(this.name)}${query}`);
        } while (!this.destroyed && wanted() > limit);
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
    // The default branch comes with every page: the headline is about it
    // whichever branches are listed.
    const main = repo.default_branch ? repo.default_branch.name : "main";
    const badgePath = `/api/repos/${encodeURIComponent(repo.name)}/badge.svg?branch=${encodeURIComponent(main)}`;
    const markdown = `[![build](${origin}${badgePath})](${origin}/#/repos/${encodeURIComponent(repo.name)})`;
    const badge = h("img", { class: "badge", alt: `Build status of ${main}`, width: 100, height: 20 });
    this.loadBadge(badge, badgePath);
    const latest = repo.default_branch;
    const headStatus = latest && latest.latest_build ? latest.latest_build.status : null;
    setTitle(repo.name, headStatus);
    this.shown = new Set(repo.branches.map((b) => b.name));
    this.tbody = h("tbody", {}, repo.branches.map((b) => branchRow(repo.name, b)));
    this.moreButton = h("button", { type: "button", id: "branches-more", class: "ghost", onclick: () => this.loadMore() });
    this.moreEnd = h("div", { class: "branches-end" }, this.moreButton);
    this.paged(repo);
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
          h("h2", { id: "branches-title", text: `Branches (${repo.branches_total})` }),
          h("a", { href: buildsHash({ repo: repo.name }), text: "All builds of this repository →" }),
        ),
        repo.branches.length
          ? [
              h(
                "div",
                { class: "table-scroll", tabindex: "0", role: "region", "aria-label": "Branches" },
                h(
                  "table",
                  { class: "branches" },
                  h("thead", {}, h("tr", {}, ["Branch", "Head", "Latest build", "Success rate", "Median duration"].map((t) => h("th", { scope: "col", text: t })))),
                  this.tbody,
                ),
              ),
              this.moreEnd,
            ]
          : h("p", { class: "muted", text: "No branches yet: push one." }),
      ),
      repo.declared
        ? null
        : h(
            "section",
            { class: "card danger-zone", "aria-labelledby": "danger-title" },
            h("h2", { id: "danger-title", text: "Delete this repository" }),
            h("p", { class: "hint", text: "Removes the repository from the disk; its builds and logs stay readable." }),
            h("button", { type: "button", id: "repo-delete", class: "danger", text: "Delete repository…", onclick: () => this.remove(repo) }),
          ),
    );
    // A mirrored repository's upstream, after the cards.
    this.upstreamSlot = h("div", { class: "upstream-slot" });
    this.body.insertBefore(this.upstreamSlot, this.body.children[3] || null);
    this.loadUpstream();
  }

  /** Where the next page starts and how many branches are left. */
  paged(page) {
    this.nextOffset = page.branches_next_offset;
    const left = page.branches_total - this.shown.size;
    this.moreEnd.hidden = this.nextOffset === null || left <= 0;
    this.moreButton.textContent = `Show more branches (${left} more)`;
  }

  /** The upstream card of a mirrored repository (nothing for the others). */
  async loadUpstream() {
    const slot = this.upstreamSlot;
    let up;
    try {
      // 204 (null): the repository mirrors nothing.
      up = await api(`/api/repos/${encodeURIComponent(this.name)}/upstream`);
    } catch (e) {
      if (!this.destroyed) slot.replaceChildren(errorBox(e, () => this.loadUpstream()));
      return;
    }
    if (this.destroyed || slot !== this.upstreamSlot || !up) return;
    slot.replaceChildren(upstreamCard(this.name, up, () => this.loadUpstream()));
  }

  /** The next page of branches, after those shown. */
  async loadMore() {
    const button = this.moreButton;
    button.disabled = true;
    let page;
    try {
      page = await api(`/api/repos/${encodeURIComponent(this.name)}?branches_offset=${this.nextOffset}&branches_limit=${PAGE}`);
    } catch (e) {
      toast(`Branches not loaded: ${e.message}`, "error");
      return;
    } finally {
      button.disabled = false;
    }
    if (this.destroyed || button !== this.moreButton) return;
    // A build between two pages can move a branch: each is listed once.
    const rows = page.branches.filter((b) => !this.shown.has(b.name)).map((b) => branchRow(this.name, b));
    for (const b of page.branches) this.shown.add(b.name);
    this.tbody.append(...rows);
    this.paged(page);
    // Keyboard users go on from the first branch added when the button goes.
    if (this.moreEnd.hidden && rows.length) rows[0].querySelector("a").focus();
  }

  /** Deletes the repository once its name is typed; its builds stay. */
  async remove(repo) {
    const sure = await confirmDialog({
      title: `Delete ${repo.name}?`,
      text: `The repository ${repo.path} and everything pushed to it are deleted from the disk. Its builds and their logs stay. This cannot be undone.`,
      confirm: "Delete the repository",
      keep: "Keep it",
      typed: repo.name,
    });
    if (!sure) return;
    try {
      await api(`/api/repos/${encodeURIComponent(repo.name)}?confirm=${encodeURIComponent(repo.name)}`, {
        method: "DELETE",
        purpose: `Deleting ${repo.name} needs the API token.`,
      });
    } catch (e) {
      toast(`Not deleted: ${e.message}`, "error");
      return;
    }
    repoCache.stale = true;
    toast(`Repository ${repo.name} deleted`, "success");
    location.hash = "#/repos";
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
    if (type === "repo.deleted" && data.name === this.name) {
      this.body.replaceChildren(
        h("p", { class: "notice", role: "status" }, "This repository was deleted. ", h("a", { href: "#/repos", text: "See the others." })),
      );
    } else if (type.startsWith("repo.") && data.name === this.name) {
      this.reload();
    } else if (type.startsWith("build.") && type !== "build.log" && type !== "build.cache" && type !== "build.forge" && data.repo === this.name) {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.reload(), 250);
    }
  }

  destroy() {
    super.destroy();
    clearTimeout(this.timer);
  }
}

