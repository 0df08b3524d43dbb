// The builds list: filters in the URL, live rows, pages of 50 as it scrolls.

import { STATUSES, STATUS_TEXT, h, buildPill, shortCommit, ago, duration, agoEl, durationEl, errorBox, setTitle, progressEl, mergeChecks } from "./ui.js";
import { api } from "./api.js";
import { View, repoCache } from "./feed.js";

// ---------------------------------------------------------- builds view

export function buildsHash(filters) {
  const q = new URLSearchParams();
  for (const key of ["repo", "branch", "status"]) if (filters[key]) q.set(key, filters[key]);
  const s = q.toString();
  return "#/" + (s ? "?" + s : "");
}

export class BuildsView extends View {
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
        ...names.map((n) => h("option", { value: n, text: n })),
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
    const running = b.status === "running";
    const retries = b.retry_count ? `${b.retry_count} of ${b.max_retries}` : "";
    const label = [
      `Build ${b.id}`,
      STATUS_TEXT[b.status],
      `${b.repo} ${b.branch}`,
      `commit ${shortCommit(b.commit)}`,
      b.subject ? `“${b.subject}”` : "",
      retries ? `retried ${retries}` : "",
      running && b.progress ? `${b.progress.done} of ${b.progress.total} checks done` : "",
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
        h("span", { class: "c-status" }, buildPill(b)),
        h("span", { class: "c-id", text: `#${b.id}` }),
        h(
          "span",
          { class: "c-where" },
          h("span", { class: "repo", text: b.repo }),
          h("span", { class: "branch", text: b.branch }),
          b.subject ? h("span", { class: "subject", title: b.subject, text: b.subject }) : null,
          running && b.progress ? progressEl(b.progress, "row-progress") : null,
          b.diagnosis && b.status === "failed"
            ? h("span", { class: "summary", title: b.diagnosis.hint, text: `${b.diagnosis.title}: ${b.failure_summary || ""}` })
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
    if (type === "build.checks") {
      // Progress of a running build on the list: its row follows.
      const old = this.builds.get(data.id);
      if (old && old.build.status === "running") this.insert({ ...old.build, checks: mergeChecks(old.build.checks, data.checks), progress: data.progress }, false);
      return;
    }
    if (!type.startsWith("build.") || type === "build.log" || type === "build.cache" || type === "build.forge") return;
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

