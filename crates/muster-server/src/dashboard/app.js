// muster dashboard: a small single-page app over the HTTP API v1.
// Everything from the API is untrusted text: the DOM is built with createElement and
// textContent only, never innerHTML, so escaping holds by construction (and the CSP forbids
// inline scripts and styles anyway).
"use strict";

const API = "/api/v1";
const ROLES = ["viewer", "submitter", "operator", "admin"];
const STATES = ["pending", "claimed", "running", "cancelling", "completed", "failed", "cancelled"];
const FINISHED = new Set(["completed", "failed", "cancelled"]);
const DAG_STATUSES = new Set(["completed", "running", "failed", "pending", "skipped", "cancelled"]);
const ATTEMPT_OUTCOMES = { in_progress: "running", completed: "completed", failed: "failed", cancelled: "cancelled" };
const FAILURE_REASONS = {
  runner_error: "the runner reported an error",
  lease_expired: "lease lost (no heartbeat in time)",
  timed_out: "ran past its timeout",
  cancelled: "cancelled",
};
const WORKLOAD_STATUSES = ["starting", "running", "stopping", "stopped", "failed"];
// The job state whose colours each workload status borrows.
const WORKLOAD_COLOURS = { starting: "claimed", running: "running", stopping: "cancelling", stopped: "completed", failed: "failed" };
const PAGE_LIMIT = 50;
const LOG_LEVELS = ["trace", "debug", "info", "warn", "error"];
const LOG_ROW_PX = 20; // every log row's height (.log-line in app.css)
const LOG_VIEW_MAX_PX = 448; // the log view's height at most (.log in app.css: 28rem)
const LOG_PAGE = 1000; // entries per read
const LOG_PAGES_KEPT = 40; // pages of entries kept in memory at most
const LOG_OVERSCAN = 60; // rows drawn above and below the view
const LOG_MAX_SCROLL_PX = 30000000; // under Chromium's tallest element; longer logs scroll scaled
const MAX_DAG_DRAWN = 200;
const OVERVIEW_REFRESH_MS = 10000; // the overview's lists: about 5 store queries a read
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

let me = null; // the WhoAmI of the session, null when signed out
let page = null; // the current page's lifecycle: {alive, cleanups}

// ---------- DOM helpers ----------

// el("a", {href: "/x", class: "c", dataset: {testid: "t"}}, "text", child, ...)
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  for (const child of children) append(node, child);
  return node;
}

function setAttrs(node, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "on") for (const [type, fn] of Object.entries(value)) node.addEventListener(type, fn);
    else if (key === "text") node.textContent = value;
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
}

function append(node, child) {
  if (child === null || child === undefined || child === false) return;
  if (Array.isArray(child)) child.forEach((c) => append(node, c));
  else node.append(child instanceof Node ? child : String(child));
}

const SVG_NS = "http://www.w3.org/2000/svg";
function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, String(value));
  }
  for (const child of children) append(node, child);
  return node;
}

function clear(node) {
  while (node.firstChild) node.firstChild.remove();
}

function main() {
  return document.getElementById("main");
}

function alertBox(message) {
  return el("p", { class: "alert", role: "alert" }, message);
}

function tableWrap(label, table) {
  // Wide tables scroll inside this wrapper on small screens; it is focusable so keyboard users
  // can scroll it too.
  return el("div", { class: "table-wrap", role: "region", "aria-label": label, tabindex: "0" }, table);
}

function table(columns, rows, caption) {
  return el(
    "table",
    {},
    caption ? el("caption", { class: "visually-hidden" }, caption) : null,
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", { scope: "col" }, c)))),
    el("tbody", {}, rows)
  );
}

function badge(state, attrs) {
  const known = STATES.includes(state) ? state : "other";
  return el("span", Object.assign({ class: `badge state-${known}` }, attrs || {}), state);
}

function pad(n, width) {
  return String(n).padStart(width || 2, "0");
}

// A timestamp in the viewer's local time, with the exact instant for machines.
function timeEl(iso) {
  if (!iso) return el("span", { class: "muted" }, "—");
  const d = new Date(iso);
  if (isNaN(d)) return el("span", {}, iso);
  const text = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return el("time", { datetime: iso, title: iso }, text);
}

function clockTime(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return String(iso);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

function shortId(id) {
  return String(id).slice(0, 8) + "…" + String(id).slice(-4);
}

function jobLink(id) {
  return el("a", { href: `/jobs/${encodeURIComponent(id)}`, class: "mono", title: id }, shortId(id));
}

function runnerLink(id) {
  if (!id) return el("span", { class: "muted" }, "—");
  return el("a", { href: `/runners#runner-${id}`, class: "mono", title: id }, shortId(id));
}

function roleAtLeast(role) {
  return !!me && ROLES.indexOf(me.role) >= ROLES.indexOf(role);
}

function isBootstrapAdmin() {
  return !!me && me.kind === "bootstrap-admin";
}

// HH:MM:SS in local time, with the exact instant as a tooltip.
function hms(iso) {
  const d = new Date(iso);
  if (!iso || isNaN(d)) return el("span", {}, String(iso));
  return el("time", { datetime: iso, title: iso }, `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`);
}

// "850 ms", "42 s", "3 min 4 s", "2 h 5 min".
function durationText(ms) {
  if (!isFinite(ms) || ms < 0) return "?";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function requirementsText(req) {
  const parts = [];
  for (const [k, v] of Object.entries((req && req.labels) || {})) parts.push(`${k}=${v}`);
  for (const t of (req && req.tags) || []) parts.push(`tag ${t}`);
  for (const [k, v] of Object.entries((req && req.resources) || {})) parts.push(`${k} ≥ ${v}`);
  return parts.join(", ");
}

// Why a pending job waits, as a sentence (text and nodes, for append()).
function pendingSentence(job) {
  switch (job.pending_reason) {
    case "no_runner_for_kind":
      return ["no runner hosts kind ", el("code", {}, job.kind)];
    case "requirements_unmet": {
      const needs = requirementsText(job.requirements);
      return ["runners host kind ", el("code", {}, job.kind), ", but none meets its requirements",
        needs ? ` (${needs})` : ""];
    }
    case "scheduled": {
      const at = new Date(job.run_after);
      if (isNaN(at)) return job.attempt > 0 ? `scheduled: retry ${job.attempt}` : "scheduled for later";
      const left = at - Date.now();
      const when = left > 0 ? `in ${durationText(Math.max(1000, Math.ceil(left / 1000) * 1000))}` : "now";
      const what = job.attempt > 0 ? `retry ${job.attempt} (attempt ${job.attempt + 1} of ${job.max_attempts})` : "starts";
      return [`scheduled: ${what} ${when}, at `, hms(job.run_after)];
    }
    default:
      return job.pending_reason ? String(job.pending_reason) : "waiting for a runner to claim it";
  }
}

// A page the caller's role may not open: say so instead of calling the API.
function refused(root, what) {
  root.append(el("p", { class: "alert", role: "alert" }, `Your role (${me ? me.role : "none"}) cannot ${what}.`));
}

function formError(container, message) {
  clear(container);
  container.append(alertBox(message));
}

// Keyset pagination: the cursor goes into the URL so Back returns to the previous page.
function pagerEl(path, query, nextCursor) {
  const pager = el("div", { class: "pager" });
  if (query.get("cursor")) {
    const first = new URLSearchParams(query);
    first.delete("cursor");
    pager.append(el("a", { href: path + (first.toString() ? "?" + first : "") }, "First page"));
  }
  if (nextCursor) {
    const next = new URLSearchParams(query);
    next.set("cursor", nextCursor);
    pager.append(el("button", {
      type: "button", class: "secondary", dataset: { testid: "next-page" },
      on: { click: () => navigate(path + "?" + next) },
    }, "Next page"));
  }
  return pager;
}

// A table of one API page (`{items, next_cursor}`) that can reload itself after a change.
// opts: {path, api, params (extra query), label, columns, row(item, reload), empty}
function pagedTable(ctx, opts) {
  const holder = el("div", {});
  const query = new URLSearchParams(location.search);
  const load = async () => {
    const q = new URLSearchParams(opts.params || {});
    q.set("limit", String(PAGE_LIMIT));
    if (query.get("cursor")) q.set("cursor", query.get("cursor"));
    const list = await api("GET", `${opts.api}?${q}`);
    if (!ctx.alive) return;
    const rows = (list.items || []).map((item) => opts.row(item, load));
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: String(opts.columns.length), class: "muted" }, opts.empty)));
    clear(holder);
    holder.append(tableWrap(opts.label, table(opts.columns, rows, opts.label)), pagerEl(opts.path, query, list.next_cursor));
  };
  return { holder, load };
}

// A small row button that calls the API (after confirm() when confirmText is given), then
// reloads the table; an API error goes into `message`.
function rowAction(o) {
  const button = el("button", { type: "button", class: `small ${o.cls || ""}`.trim(), "aria-label": o.aria, dataset: { testid: o.testid } }, o.label);
  button.addEventListener("click", async () => {
    if (o.confirmText && !confirm(o.confirmText)) return;
    clear(o.message);
    button.disabled = true;
    try {
      await api(o.method, o.path);
      await o.reload();
    } catch (error) {
      button.disabled = false;
      if (!error.handled) o.message.append(alertBox(o.describe ? o.describe(error) : error.message));
    }
  });
  return button;
}

// Runs `action` on submit with the button disabled; an API error goes into `message`.
function onSubmit(form, message, action) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(message);
    const button = form.querySelector('button[type="submit"]');
    if (button) button.disabled = true;
    try {
      await action();
    } catch (error) {
      if (!error.handled) message.append(alertBox(error.message));
    } finally {
      if (button) button.disabled = false;
    }
  });
}

function field(id, label, control, hint) {
  return el("div", { class: "field" }, el("label", { for: id }, label), control,
    hint ? el("span", { class: "muted small-text", id: `${id}-hint` }, hint) : null);
}

// A throttle: run `fn` now, and at most once a second however often this is called.
function throttled(ctx, fn) {
  let timer = null;
  let again = false;
  const soon = () => {
    if (timer) { again = true; return; }
    fn();
    timer = setTimeout(() => {
      timer = null;
      if (again && ctx.alive) { again = false; soon(); }
    }, 1000);
  };
  ctx.cleanups.push(() => clearTimeout(timer));
  return soon;
}

// ---------- API ----------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function csrfToken() {
  for (const part of document.cookie.split(";")) {
    const [name, ...rest] = part.trim().split("=");
    if (name === "muster_csrf") return decodeURIComponent(rest.join("="));
  }
  return "";
}

// Same-origin JSON call. State-changing methods carry the CSRF header. A 401 anywhere (except
// the sign-in call itself) sends the user to the sign-in page and comes back afterwards.
async function api(method, path, body, options) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = csrfToken();
  let response;
  try {
    response = await fetch(API + path, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    throw new ApiError(0, "network", "The coordinator could not be reached: " + error.message);
  }
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    data = null;
  }
  if (response.ok) return data;
  const detail = (data && data.error) || {};
  const error = new ApiError(response.status, detail.code || "http_" + response.status,
    detail.message || `The request failed (HTTP ${response.status}).`);
  if (response.status === 401 && !(options && options.noRedirect)) {
    error.handled = true;
    signedOut(true);
  }
  throw error;
}

// ---------- routing ----------

function navigate(url, replace) {
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  render(true);
}

function signedOut(comeBack) {
  me = null;
  const here = location.pathname + location.search;
  const next = comeBack && location.pathname !== "/sign-in" ? "?next=" + encodeURIComponent(here) : "";
  navigate("/sign-in" + next, true);
}

function routeOf(pathname) {
  if (pathname === "/") return { name: "overview", render: overviewPage };
  if (pathname === "/jobs") return { name: "jobs", render: jobsPage };
  const job = pathname.match(/^\/jobs\/([^/]+)$/);
  if (job) return { name: "jobs", render: (ctx, root) => jobPage(ctx, root, decodeURIComponent(job[1])) };
  if (pathname === "/runners") return { name: "runners", render: runnersPage };
  if (pathname === "/workloads") return { name: "workloads", render: workloadsPage };
  const workload = pathname.match(/^\/workloads\/([^/]+)$/);
  if (workload) return { name: "workloads", render: (ctx, root) => workloadPage(ctx, root, decodeURIComponent(workload[1])) };
  if (pathname === "/keys") return { name: "keys", render: keysPage };
  if (pathname === "/kinds") return { name: "kinds", render: kindsPage };
  if (pathname === "/tokens") return { name: "tokens", render: tokensPage };
  if (pathname === "/organizations") return { name: "organizations", render: organizationsPage };
  if (pathname === "/audit") return { name: "audit", render: auditPage };
  if (pathname === "/sign-in") return { name: "sign-in", render: signInPage };
  return { name: "", render: notFoundPage };
}

function startPage() {
  if (page) {
    page.alive = false;
    page.cleanups.forEach((fn) => {
      try { fn(); } catch (_) { /* a cleanup must not stop the others */ }
    });
  }
  page = { alive: true, cleanups: [] };
  return page;
}

function setTitle(text) {
  document.title = text ? `${text} · muster` : "muster";
}

function markReady(ctx) {
  if (ctx.alive) main().dataset.ready = "1";
}

async function render(moved) {
  const ctx = startPage();
  const route = routeOf(location.pathname);
  const root = main();
  delete root.dataset.ready;
  if (!me) {
    // On the sign-in page an open session just skips the form; elsewhere a 401 leads there.
    const signingIn = route.name === "sign-in";
    try {
      me = await api("GET", "/whoami", undefined, { noRedirect: signingIn });
    } catch (error) {
      if (!signingIn) {
        if (!error.handled && ctx.alive) {
          clear(root);
          root.append(alertBox(error.message));
        }
        return;
      }
    }
    if (!ctx.alive) return;
  }
  renderHeader(route.name);
  clear(root);
  if (moved) root.focus({ preventScroll: true });
  window.scrollTo(0, 0);
  try {
    await route.render(ctx, root);
  } catch (error) {
    if (error.handled || !ctx.alive) return;
    root.append(alertBox(error.message));
  }
  markReady(ctx);
  if (ctx.alive && location.hash) {
    const target = document.getElementById(decodeURIComponent(location.hash.slice(1)));
    if (target) target.scrollIntoView();
  }
}

function renderHeader(current) {
  const signedIn = !!me && current !== "sign-in";
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("user").hidden = !signedIn;
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.nav === current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
    // Links to pages the role cannot use are not shown (the API refuses them anyway).
    let shown = !!me;
    if (link.dataset.role) shown = shown && roleAtLeast(link.dataset.role);
    if (link.dataset.who) shown = shown && me.kind === link.dataset.who;
    link.parentElement.hidden = !shown;
  }
  if (signedIn) {
    const org = me.organization_id ? `organization ${me.organization_id}` : "all organizations";
    const who = me.token_info ? me.token_info.name : "bootstrap admin";
    document.getElementById("whoami").textContent = `${who} · ${me.role} · ${org}`;
  }
}

// ---------- sign in ----------

function safeNext() {
  const next = new URLSearchParams(location.search).get("next") || "/";
  // Only paths of this site: never another origin, never the sign-in page itself.
  return next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/sign-in") ? next : "/";
}

async function signInPage(ctx, root) {
  setTitle("Sign in");
  if (me) {
    navigate(safeNext(), true);
    return;
  }
  const input = el("input", { id: "token", name: "token", type: "password", autocomplete: "current-password", required: true, spellcheck: "false" });
  const message = el("div", { class: "form-error" });
  const button = el("button", { type: "submit" }, "Sign in");
  const form = el("form", { class: "sign-in", novalidate: true },
    el("h1", {}, "Sign in to muster"),
    el("p", { class: "muted" }, "Use a user token or the admin token. It is sent once to open a session and is not stored by this page."),
    el("label", { for: "token" }, "Token"),
    input,
    button,
    message);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(message);
    const token = input.value.trim();
    if (!token) {
      message.append(alertBox("Enter a token."));
      input.focus();
      return;
    }
    button.disabled = true;
    try {
      const answer = await api("POST", "/session", { token }, { noRedirect: true });
      input.value = "";
      me = answer.whoami;
      navigate(safeNext(), true);
    } catch (error) {
      if (!ctx.alive) return;
      message.append(alertBox(error.message));
      input.select();
    } finally {
      button.disabled = false;
    }
  });
  root.append(form);
  input.focus();
}

async function signOut() {
  try {
    await api("DELETE", "/session", undefined, { noRedirect: true });
  } catch (_) {
    // Signed out already, or the server is gone: the sign-in page is right either way.
  }
  startPage();
  me = null;
  navigate("/sign-in", false);
}

// ---------- jobs table (overview and jobs page) ----------

// `selection` (optional): {selected: Set of ids, onSelect()} adds a checkbox per row and one
// for the whole page.
function jobsTable(jobs, label, selection) {
  const boxes = [];
  const box = (job) => {
    const input = el("input", { type: "checkbox", "aria-label": `Select job ${job.id}`, dataset: { testid: "select-job", id: job.id } });
    input.checked = selection.selected.has(job.id);
    input.addEventListener("change", () => {
      if (input.checked) selection.selected.add(job.id);
      else selection.selected.delete(job.id);
      if (all) all.checked = boxes.every((b) => b.checked);
      selection.onSelect();
    });
    boxes.push(input);
    return el("td", {}, input);
  };
  const rows = jobs.map((job) => el("tr", { dataset: { job: job.id } },
    selection ? box(job) : null,
    el("td", {}, jobLink(job.id)),
    el("td", {}, job.kind),
    el("td", {}, badge(job.state)),
    el("td", { class: "num" }, `${job.attempt}/${job.max_attempts}`),
    el("td", {}, runnerLink(job.runner_id)),
    el("td", {}, timeEl(job.created_at)),
    el("td", {}, timeEl(job.finished_at))));
  const columns = ["Job", "Kind", "State", "Attempt", "Runner", "Created", "Finished"];
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: String(columns.length + (selection ? 1 : 0)), class: "muted" }, "No jobs.")));
  let all = null;
  const built = table(columns, rows, label);
  if (selection) {
    all = el("input", { type: "checkbox", "aria-label": "Select every job on this page", dataset: { testid: "select-page" } });
    all.addEventListener("change", () => {
      for (const b of boxes) {
        b.checked = all.checked;
        if (all.checked) selection.selected.add(b.dataset.id);
        else selection.selected.delete(b.dataset.id);
      }
      selection.onSelect();
    });
    built.querySelector("thead tr").prepend(el("th", { scope: "col" }, all));
  }
  return tableWrap(label, built);
}

// ---------- overview ----------

async function overviewPage(ctx, root) {
  setTitle("Overview");
  root.append(el("h1", {}, "Overview"));
  const body = el("div", { class: "overview" });
  root.append(body);
  let summary = null;
  const load = async () => {
    const [jobs, runners, pending, counted] = await Promise.all([
      api("GET", "/jobs?limit=10"),
      api("GET", "/runners?limit=1000"),
      api("GET", "/jobs?state=pending&limit=200"),
      summary ? Promise.resolve(summary) : api("GET", "/jobs/summary"),
    ]);
    if (!ctx.alive) return;
    summary = counted;
    clear(body);
    body.append(
      el("section", { "aria-labelledby": "h-states", class: "card" },
        el("h2", { id: "h-states" }, "Jobs by state"), stateSummary(summary)),
      summary.last_hour ? el("section", { "aria-labelledby": "h-hour", class: "card" },
        el("h2", { id: "h-hour" }, "Last hour"), lastHour(summary.last_hour)) : null,
      el("section", { "aria-labelledby": "h-runners", class: "card" },
        el("h2", { id: "h-runners" }, "Runners"), runnerSummary(runners)),
      el("section", { "aria-labelledby": "h-pending", class: "card" },
        el("h2", { id: "h-pending" }, "Oldest pending job"), oldestPending(pending)),
      el("section", { "aria-labelledby": "h-kinds", class: "wide" },
        el("h2", { id: "h-kinds" }, "Jobs by kind"), kindSummary(summary)),
      el("section", { "aria-labelledby": "h-newest", class: "wide" },
        el("h2", { id: "h-newest" }, "Newest jobs"),
        jobsTable(jobs.items, "Newest jobs"),
        el("p", {}, el("a", { href: "/jobs" }, "All jobs"))));
  };
  await load();
  // The coordinator pushes the counts when jobs change (at most every 5 s); the lists beside
  // them are read again then, at most every OVERVIEW_REFRESH_MS, and never while the tab is
  // hidden. An idle fleet costs an open overview next to nothing.
  let timer = null;
  let lastLoad = Date.now();
  let stale = false;
  const reload = async () => {
    timer = null;
    if (!ctx.alive) return;
    if (document.hidden) { stale = true; return; }
    stale = false;
    lastLoad = Date.now();
    try { await load(); } catch (error) { if (!error.handled && ctx.alive) showTransient(body, error.message); }
  };
  const reloadSoon = () => {
    if (timer) return;
    timer = setTimeout(reload, Math.max(0, lastLoad + OVERVIEW_REFRESH_MS - Date.now()));
  };
  // The stream's first summary is usually the one just drawn.
  let first = true;
  const stream = openStream(ctx, `${API}/jobs/summary`, {
    summary: (pushed) => {
      const same = first && JSON.stringify(pushed) === JSON.stringify(summary);
      first = false;
      if (same) return;
      summary = pushed;
      reloadSoon();
    },
  });
  const onVisible = () => { if (!document.hidden && stale) reloadSoon(); };
  document.addEventListener("visibilitychange", onVisible);
  ctx.cleanups.push(() => { clearTimeout(timer); stream.close(); document.removeEventListener("visibilitychange", onVisible); });
}

// Throughput and failed attempts by reason, across every coordinator.
function lastHour(hour) {
  const failed = Object.entries(hour.failed_attempts || {}).filter(([, n]) => n > 0);
  return el("div", {},
    el("dl", { class: "facts" },
      el("dt", {}, "Completed"), el("dd", { dataset: { testid: "hour-completed" } }, hour.completed.toLocaleString("en-US")),
      el("dt", {}, "Failed attempts"), el("dd", { dataset: { testid: "hour-failed" } }, failed.reduce((a, [, n]) => a + n, 0).toLocaleString("en-US")),
      failed.map(([reason, n]) => [el("dt", { class: "indent" }, FAILURE_REASONS[reason] || reason), el("dd", {}, n.toLocaleString("en-US"))])),
    el("p", { class: "muted small-text" }, "Since ", hms(hour.since), "."));
}

function stateSummary(summary) {
  const facts = STATES.map((state) => [
    el("dt", {}, el("a", { href: `/jobs?state=${state}` }, state)),
    el("dd", { dataset: { testid: `count-${state}` } }, (summary.by_state[state] || 0).toLocaleString("en-US")),
  ]);
  return el("dl", { class: "facts" }, facts);
}

// The kinds with the most jobs: waiting, leased, failed and done, each a link to the list.
function kindSummary(summary) {
  const cell = (kind, state, n) => el("td", { class: "num" },
    n ? el("a", { href: `/jobs?kind=${encodeURIComponent(kind)}&state=${state}` }, n.toLocaleString("en-US")) : "0");
  const rows = summary.kinds.map((k) => el("tr", { dataset: { testid: "kind-row", kind: k.kind } },
    el("td", {}, el("a", { href: `/jobs?kind=${encodeURIComponent(k.kind)}` }, k.kind)),
    cell(k.kind, "pending", k.by_state.pending),
    el("td", { class: "num" }, ((k.by_state.claimed || 0) + (k.by_state.running || 0) + (k.by_state.cancelling || 0)).toLocaleString("en-US")),
    cell(k.kind, "failed", k.by_state.failed),
    cell(k.kind, "cancelled", k.by_state.cancelled),
    cell(k.kind, "completed", k.by_state.completed),
    el("td", { class: "num" }, k.total.toLocaleString("en-US"))));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "7", class: "muted" }, "No jobs yet.")));
  const wrap = tableWrap("Jobs by kind", table(["Kind", "Pending", "Leased", "Failed", "Cancelled", "Completed", "Total"], rows, "Jobs by kind"));
  if (!summary.other_kind_count) return wrap;
  const others = Object.values(summary.other_kinds).reduce((a, b) => a + b, 0);
  return el("div", {}, wrap, el("p", { class: "muted" },
    `${summary.other_kind_count.toLocaleString("en-US")} more kinds with ${others.toLocaleString("en-US")} jobs are not shown.`));
}

function showTransient(container, message) {
  const old = container.querySelector(".transient");
  if (old) old.remove();
  container.prepend(el("p", { class: "alert transient", role: "alert" }, message));
}

function runnerSummary(list) {
  const count = (fn) => list.items.filter(fn).length;
  const facts = [
    ["Online", count((r) => r.status === "online")],
    ["Draining", count((r) => r.status === "draining")],
    ["Offline", count((r) => r.status === "offline")],
    ["Pending enrollment", count((r) => r.enrollment === "pending")],
    ["Running jobs", list.items.reduce((sum, r) => sum + (r.running_jobs || 0), 0)],
  ];
  return el("div", {},
    el("dl", { class: "facts" }, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))])),
    el("p", {}, el("a", { href: "/runners" }, "All runners")));
}

function oldestPending(list) {
  const job = list.items[list.items.length - 1];
  if (!job) return el("p", { class: "muted" }, "No job is waiting.");
  return el("div", {},
    el("p", {}, jobLink(job.id), ` (${job.kind}), created `, timeEl(job.created_at)),
    el("p", { dataset: { testid: "pending-reason" } }, "Why: ", pendingSentence(job)),
    list.next_cursor ? el("p", { class: "muted" }, "More than 200 jobs are pending; this is the oldest of the newest 200.") : null);
}

// ---------- jobs list ----------

const JOB_FILTERS = ["state", "kind", "runner_id", "organization_id", "created_after", "created_before"];
const BULK_PAGE = 200;
const COUNT_CAP_TEXT = "10,000+";

// An RFC 3339 instant as a datetime-local input's value, in the viewer's time zone.
function localInputValue(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (isNaN(d)) return "";
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function countText(counted) {
  return counted.capped ? COUNT_CAP_TEXT : counted.count.toLocaleString("en-US");
}

async function jobsPage(ctx, root) {
  setTitle("Jobs");
  const query = new URLSearchParams(location.search);
  const chosen = {};
  for (const name of JOB_FILTERS) if (query.get(name)) chosen[name] = query.get(name);
  root.append(el("h1", {}, "Jobs"));

  const stateSelect = el("select", { id: "f-state", name: "state" },
    el("option", { value: "" }, "any"),
    STATES.map((s) => el("option", { value: s, selected: s === chosen.state }, s)));
  const textFilter = (id, name, extra) => el("input", Object.assign({ id, name, type: "text", value: chosen[name] || "", autocomplete: "off" }, extra || {}));
  const kindInput = textFilter("f-kind", "kind");
  const runnerInput = textFilter("f-runner", "runner_id", { class: "mono", placeholder: "runner id" });
  const orgInput = textFilter("f-org", "organization_id", { placeholder: "default" });
  // Created range: picked in local time, sent as RFC 3339 in UTC.
  const timeFilter = (id, name) => el("input", { id, name, type: "datetime-local", step: "1", value: localInputValue(chosen[name]) });
  const fromInput = timeFilter("f-from", "created_after");
  const untilInput = timeFilter("f-until", "created_before");
  const filterError = el("div", {});
  const scoped = !!(me && me.organization_id);
  const filter = el("form", { class: "inline-form", "aria-label": "Filter jobs" },
    el("div", {}, el("label", { for: "f-state" }, "State"), stateSelect),
    el("div", {}, el("label", { for: "f-kind" }, "Kind"), kindInput),
    el("div", {}, el("label", { for: "f-runner" }, "Runner"), runnerInput),
    scoped ? null : el("div", {}, el("label", { for: "f-org" }, "Organization"), orgInput),
    el("div", {}, el("label", { for: "f-from" }, "Created from"), fromInput),
    el("div", {}, el("label", { for: "f-until" }, "Created before"), untilInput),
    el("button", { type: "submit" }, "Filter"),
    filterError);
  filter.addEventListener("submit", (event) => {
    event.preventDefault();
    clear(filterError);
    const runner = runnerInput.value.trim();
    if (runner && !UUID_RE.test(runner)) {
      filterError.append(alertBox("Runner: enter a full runner id (a UUID)."));
      return;
    }
    const q = new URLSearchParams();
    if (stateSelect.value) q.set("state", stateSelect.value);
    if (kindInput.value.trim()) q.set("kind", kindInput.value.trim());
    if (runner) q.set("runner_id", runner.toLowerCase());
    if (!scoped && orgInput.value.trim()) q.set("organization_id", orgInput.value.trim());
    for (const [input, name] of [[fromInput, "created_after"], [untilInput, "created_before"]]) {
      if (!input.value) continue;
      const at = new Date(input.value);
      if (isNaN(at)) { filterError.append(alertBox("Created: enter a date and time.")); return; }
      q.set(name, at.toISOString());
    }
    navigate("/jobs" + (q.toString() ? "?" + q : ""));
  });

  const idInput = el("input", { id: "f-id", name: "id", type: "search", class: "mono", autocomplete: "off", placeholder: "0190…", "aria-keyshortcuts": "/", dataset: { shortcut: "/" } });
  const idError = el("div", {});
  const search = el("form", { class: "inline-form", role: "search", "aria-label": "Find a job by id" },
    el("div", {}, el("label", { for: "f-id" }, "Job id"), idInput),
    el("button", { type: "submit", class: "secondary" }, "Open"),
    idError);
  search.addEventListener("submit", (event) => {
    event.preventDefault();
    clear(idError);
    const id = idInput.value.trim();
    if (UUID_RE.test(id)) navigate(`/jobs/${id.toLowerCase()}`);
    else idError.append(alertBox("Enter a full job id (a UUID)."));
  });
  root.append(el("div", { class: "toolbar" }, filter, search));

  const filterQuery = new URLSearchParams(chosen);
  const listQuery = new URLSearchParams(chosen);
  listQuery.set("limit", String(PAGE_LIMIT));
  if (query.get("cursor")) listQuery.set("cursor", query.get("cursor"));
  const [list, counted] = await Promise.all([
    api("GET", "/jobs?" + listQuery),
    api("GET", "/jobs/count?" + filterQuery),
  ]);
  if (!ctx.alive) return;
  root.append(el("p", { dataset: { testid: "job-count" }, "aria-live": "polite" },
    `${countText(counted)} ${counted.count === 1 && !counted.capped ? "job matches" : "jobs match"}`,
    Object.keys(chosen).length ? " the filter." : "."));

  const steer = roleAtLeast("submitter");
  const selected = new Set();
  const bulk = steer ? bulkPanel(ctx, chosen, selected, counted) : null;
  if (bulk) root.append(bulk.panel);
  root.append(jobsTable(list.items, "Jobs", steer ? { selected, onSelect: () => bulk.selectionChanged() } : null));
  root.append(pagerEl("/jobs", query, list.next_cursor));
}

// Cancel or retry the selected jobs, or every job matching the filter: a dry run counts what
// would change first, then the change runs a page at a time with its progress shown, and can
// be stopped between pages. The server changes each job through its own fenced transition.
function dryRunText(action, scope, would, selectedCount) {
  const count = would.capped ? COUNT_CAP_TEXT : would.count.toLocaleString("en-US");
  const done = action === "cancel" ? "cancelled" : "retried";
  const which = scope === "selected"
    ? `${count} of the ${selectedCount} selected ${selectedCount === 1 ? "job" : "jobs"}`
    : `${count} ${would.count === 1 && !would.capped ? "job" : "jobs"} matching the filter`;
  return `Dry run: ${which} can be ${done} now. A job that changes state meanwhile is left alone.`;
}

function bulkPanel(ctx, filter, selected, counted) {
  const panel = el("section", { class: "bulk", "aria-labelledby": "h-bulk" }, el("h2", { id: "h-bulk", class: "visually-hidden" }, "Change many jobs"));
  const status = el("div", { class: "bulk-status", "aria-live": "polite", dataset: { testid: "bulk-status" } });
  const buttons = el("div", { class: "bulk-buttons" });
  panel.append(buttons, status);
  let running = false;
  const selectionLabel = el("span", { class: "muted", dataset: { testid: "selected-count" } });

  const describe = (action, n, capped) => {
    const count = capped ? COUNT_CAP_TEXT : n.toLocaleString("en-US");
    return `${action === "cancel" ? "Cancel" : "Retry"} ${count} ${n === 1 && !capped ? "job" : "jobs"}`;
  };

  const start = async (action, scope) => {
    if (running) return;
    clear(status);
    const body = scope === "selected"
      ? { action, ids: Array.from(selected) }
      : { action, filter };
    let dry;
    try {
      dry = await api("POST", "/jobs/bulk", Object.assign({ dry_run: true }, body));
    } catch (error) {
      if (!error.handled) status.append(alertBox(error.message));
      return;
    }
    if (!ctx.alive) return;
    const would = dry.would_change;
    if (!would.count) {
      status.append(el("p", { dataset: { testid: "bulk-nothing" } },
        action === "cancel" ? "None of these jobs can be cancelled (finished or already cancelling)." : "None of these jobs can be retried (only failed and cancelled jobs can)."));
      return;
    }
    const confirmButton = el("button", { type: "button", class: action === "cancel" ? "danger" : "", dataset: { testid: "bulk-confirm" } }, describe(action, would.count, would.capped));
    const back = el("button", { type: "button", class: "secondary" }, "Back");
    status.append(el("div", { class: "bulk-confirm", role: "group", "aria-label": "Confirm" },
      el("p", { dataset: { testid: "bulk-dry-run" } }, dryRunText(action, scope, would, selected.size)),
      confirmButton, back));
    back.addEventListener("click", () => clear(status));
    confirmButton.addEventListener("click", () => run(action, body, would));
    confirmButton.focus();
  };

  const run = async (action, body, would) => {
    running = true;
    clear(status);
    const bar = el("progress", { max: String(Math.max(would.count, 1)), value: "0", "aria-label": "Progress" });
    const line = el("p", { dataset: { testid: "bulk-progress" } });
    const stop = el("button", { type: "button", class: "secondary", dataset: { testid: "bulk-stop" } }, "Stop");
    let stopped = false;
    stop.addEventListener("click", () => { stopped = true; stop.disabled = true; });
    status.append(bar, line, stop);
    let changed = 0;
    let skipped = 0;
    let cursor = null;
    const verb = action === "cancel" ? "Cancelled" : "Retried";
    const total = would.capped ? `${COUNT_CAP_TEXT}` : would.count.toLocaleString("en-US");
    try {
      for (;;) {
        const request = Object.assign({}, body);
        if (body.filter) {
          request.limit = BULK_PAGE;
          if (cursor) request.cursor = cursor;
        }
        const outcome = await api("POST", "/jobs/bulk", request);
        changed += outcome.changed.length;
        // The rows on screen take their new state at once.
        for (const job of outcome.changed) {
          const shown = document.querySelector(`tr[data-job="${CSS.escape(job.id)}"] .badge`);
          if (shown) shown.replaceWith(badge(job.state));
        }
        skipped += outcome.skipped.length;
        bar.max = String(Math.max(Number(bar.max), changed));
        bar.value = String(changed);
        line.textContent = `${verb} ${changed.toLocaleString("en-US")} of ${total}…`;
        cursor = outcome.next_cursor;
        if (!cursor || stopped || !ctx.alive) break;
      }
    } catch (error) {
      running = false;
      if (!error.handled && ctx.alive) status.append(alertBox(`${error.message} (${verb.toLowerCase()} ${changed} before it).`));
      return;
    }
    running = false;
    if (!ctx.alive) return;
    stop.remove();
    line.textContent = `${verb} ${changed.toLocaleString("en-US")} ${changed === 1 ? "job" : "jobs"}` +
      (skipped ? `; ${skipped} left alone (changed meanwhile or not found)` : "") +
      (stopped && cursor ? "; stopped before the end." : ".");
    const reload = el("button", { type: "button", class: "secondary", dataset: { testid: "bulk-reload" } }, "Show the jobs now");
    reload.addEventListener("click", () => navigate(location.pathname + location.search, true));
    status.append(reload);
  };

  const button = (label, testid, cls, onClick) => {
    const b = el("button", { type: "button", class: `small ${cls}`.trim(), dataset: { testid } }, label);
    b.addEventListener("click", onClick);
    return b;
  };
  const cancelSelected = button("Cancel selected", "cancel-selected", "danger", () => start("cancel", "selected"));
  const retrySelected = button("Retry selected", "retry-selected", "", () => start("retry", "selected"));
  const matching = counted.capped ? COUNT_CAP_TEXT : counted.count.toLocaleString("en-US");
  buttons.append(
    selectionLabel, cancelSelected, retrySelected,
    button(`Cancel all ${matching} matching`, "cancel-matching", "danger", () => start("cancel", "matching")),
    button(`Retry all ${matching} matching`, "retry-matching", "", () => start("retry", "matching")));

  const selectionChanged = () => {
    selectionLabel.textContent = selected.size ? `${selected.size} selected` : "None selected";
    cancelSelected.disabled = !selected.size;
    retrySelected.disabled = !selected.size;
  };
  selectionChanged();
  return { panel, selectionChanged };
}

// ---------- one job ----------

async function jobPage(ctx, root, id) {
  setTitle("Job " + shortId(id));
  let job;
  try {
    job = await api("GET", `/jobs/${encodeURIComponent(id)}`);
  } catch (error) {
    if (error.status === 404) {
      setTitle("Job not found");
      root.append(el("h1", {}, "Job"), alertBox("job not found"));
      return;
    }
    throw error;
  }
  if (!ctx.alive) return;

  const view = jobView(ctx, id);
  root.append(view.node);
  view.update(job);

  // Live state: one `job` event at once and after each change; `end` after a finished job.
  const events = openStream(ctx, `${API}/jobs/${encodeURIComponent(id)}/events`, {
    job: (data) => view.update(data),
  });
  ctx.cleanups.push(() => events.close());

  const attempts = attemptsPanel(ctx, id);
  const log = logPanel(ctx, id);
  const dag = dagPanel(ctx, id);
  view.node.append(attempts.node, dag.node, log.node);
  let seen = { attempt: job.attempt, state: job.state };
  view.onChange = (next) => {
    dag.refreshSoon();
    if (next.attempt !== seen.attempt || next.state !== seen.state) {
      seen = { attempt: next.attempt, state: next.state };
      attempts.refreshSoon();
    }
  };
  dag.refreshSoon();
  attempts.refreshSoon();
  // A scheduled job's "in 42 s" counts down.
  const ticker = setInterval(() => view.tick(), 1000);
  ctx.cleanups.push(() => clearInterval(ticker));
}

// ---------- attempt timeline ----------

function attemptsPanel(ctx, id) {
  const list = el("ol", { class: "attempts", dataset: { testid: "attempts" } });
  const node = el("section", { class: "panel", "aria-labelledby": "h-attempts", hidden: true },
    el("h2", { id: "h-attempts" }, "Attempts"), list);
  let lastJson = null;
  let gone = false; // an older coordinator without the route: the section stays hidden
  const fetchAttempts = async () => {
    if (gone) return;
    try {
      const answer = await api("GET", `/jobs/${encodeURIComponent(id)}/attempts`);
      if (!ctx.alive) return;
      const json = JSON.stringify(answer);
      node.hidden = false;
      if (json === lastJson) return;
      lastJson = json;
      clear(list);
      const items = (answer && answer.items) || [];
      if (!items.length) list.append(el("li", { class: "muted attempt-none" }, "not claimed yet"));
      for (const a of items) list.append(attemptItem(a));
    } catch (error) {
      if (error.status === 404) { gone = true; node.hidden = true; return; }
      if (!error.handled && ctx.alive) { node.hidden = false; showTransient(node, "Attempts could not be loaded: " + error.message); }
    }
  };
  return { node, refreshSoon: throttled(ctx, fetchAttempts) };
}

function attemptItem(a) {
  const outcome = ATTEMPT_OUTCOMES[a.outcome] ? a.outcome : "other";
  const badgeClass = { in_progress: "running", completed: "completed", failed: "failed", cancelled: "cancelled" }[outcome] || "other";
  const parts = [el("strong", {}, `Attempt ${a.attempt}`)];
  parts.push(["runner ", a.runner_id ? runnerLink(a.runner_id) : el("span", { class: "muted" }, "none")]);
  if (a.claimed_at) parts.push(["claimed ", hms(a.claimed_at)]);
  if (a.started_at) parts.push(["started ", hms(a.started_at)]);
  if (a.ended_at) {
    const from = new Date(a.started_at || a.claimed_at);
    const took = isNaN(from) ? "" : ` (${durationText(new Date(a.ended_at) - from)})`;
    parts.push(["ended ", hms(a.ended_at), took]);
  } else if (a.outcome === "in_progress") {
    parts.push(el("span", { class: "muted" }, "not ended yet"));
  }
  parts.push(el("span", { class: `badge state-${badgeClass}` }, ATTEMPT_OUTCOMES[a.outcome] || String(a.outcome)));
  if (a.error) {
    parts.push(el("span", { dataset: { testid: "attempt-reason" } }, FAILURE_REASONS[a.error.reason] || String(a.error.reason)));
    if (a.error.message) parts.push(el("span", { class: "attempt-message" }, a.error.message));
  }
  const line = [];
  parts.forEach((part, i) => { if (i) line.push(el("span", { class: "sep" }, " · ")); line.push(part); });
  return el("li", {
    class: "attempt", title: `lease epoch ${a.lease_epoch}`,
    dataset: { testid: "attempt", outcome: String(a.outcome), epoch: String(a.lease_epoch) },
  }, line);
}

// An EventSource that closes on `end` and, when the browser gives up on it (it does on an HTTP
// error answer), reopens it after a pause through `reopenUrl()`. A dropped connection is
// reconnected by EventSource itself, with Last-Event-ID.
function openStream(ctx, url, handlers, options) {
  const opts = options || {};
  let source = null;
  let retries = 0;
  let timer = null;
  let closed = false;
  const close = () => {
    closed = true;
    clearTimeout(timer);
    if (source) source.close();
  };
  const open = (target) => {
    source = new EventSource(target, { withCredentials: true });
    source.addEventListener("open", () => {
      retries = 0;
      if (opts.onStatus) opts.onStatus("open");
    });
    for (const [type, fn] of Object.entries(handlers)) {
      source.addEventListener(type, (event) => {
        if (!ctx.alive || closed) return;
        let data;
        try { data = JSON.parse(event.data); } catch (_) { return; }
        fn(data, event);
      });
    }
    source.addEventListener("end", (event) => {
      close();
      if (opts.onEnd) opts.onEnd(event);
    });
    source.addEventListener("error", (event) => {
      if (closed || !ctx.alive) return;
      if (event.data) {
        // An `error` event sent by the server: the stream ends after it.
        close();
        let message = "The stream failed.";
        try { message = JSON.parse(event.data).error.message; } catch (_) { /* keep the default */ }
        if (opts.onStatus) opts.onStatus("failed", message);
        return;
      }
      if (source.readyState === EventSource.CLOSED) {
        // The browser will not retry this one: check the session (a 401 goes to sign-in),
        // then reopen after a growing pause.
        retries += 1;
        if (opts.onStatus) opts.onStatus("reconnecting");
        api("GET", "/whoami").catch(() => {});
        timer = setTimeout(() => {
          if (!closed && ctx.alive) open(opts.reopenUrl ? opts.reopenUrl() : url);
        }, Math.min(30000, 1000 * 2 ** Math.min(retries, 5)));
      } else if (opts.onStatus) {
        opts.onStatus("reconnecting");
      }
    });
  };
  open(url);
  return { close };
}

function jobView(ctx, id) {
  const state = el("span", { "aria-live": "polite" });
  const stateBadge = el("span", { class: "badge", dataset: { testid: "job-state" } });
  state.append(stateBadge);
  const progress = el("progress", { max: "100", value: "0", "aria-label": "Progress" });
  const progressText = el("span", { class: "muted" });
  const fields = {};
  const row = (label, key, content) => {
    fields[key] = el("dd", {}, content || null);
    return [el("dt", {}, label), fields[key]];
  };
  const dl = el("dl", { class: "job-facts" },
    row("State", "state", state),
    row("Kind", "kind"),
    row("Attempt", "attempt"),
    row("Runner", "runner"),
    row("Progress", "progress", [progress, " ", progressText]),
    row("Created", "created"),
    row("Started", "started"),
    row("Finished", "finished"),
    row("Organization", "org"));
  const extra = el("div", {});
  const actions = el("div", { class: "actions" });
  const actionError = el("div", {});
  const node = el("article", { class: "job" },
    el("h1", {}, "Job ", el("span", { class: "mono job-id" }, id)),
    el("div", { class: "job-top" }, dl, el("div", {}, actions, actionError)),
    extra);
  let busy = false;
  let current = null;
  const view = { node, onChange: null };

  const renderActions = () => {
    if (busy) return; // keep the disabled button while a call is in flight
    clear(actions);
    if (!roleAtLeast("submitter") || !current) return;
    if (!FINISHED.has(current.state)) actions.append(actionButton("Cancel", "cancel", "danger"));
    if (current.state === "failed" || current.state === "cancelled") actions.append(actionButton("Retry", "retry", ""));
  };
  const actionButton = (label, verb, cls) => {
    const button = el("button", { type: "button", class: cls, dataset: { testid: verb } }, label);
    button.addEventListener("click", async () => {
      clear(actionError);
      busy = true;
      button.disabled = true;
      try {
        const job = await api("POST", `/jobs/${encodeURIComponent(id)}/${verb}`);
        busy = false;
        if (ctx.alive) view.update(job);
      } catch (error) {
        busy = false;
        button.disabled = false;
        if (!error.handled && ctx.alive) actionError.append(alertBox(error.message));
      }
      renderActions();
    });
    return button;
  };

  view.tick = () => {
    const note = extra.querySelector('[data-testid="pending-reason"]');
    if (!note || !current || current.pending_reason !== "scheduled") return;
    clear(note);
    append(note, ["Pending: ", pendingSentence(current)]);
  };

  view.update = (job) => {
    if (!ctx.alive) return;
    current = job;
    setTitle(`Job ${shortId(job.id)} (${job.state})`);
    if (stateBadge.textContent !== job.state) {
      stateBadge.textContent = job.state;
      stateBadge.className = `badge state-${STATES.includes(job.state) ? job.state : "other"}`;
    }
    fields.kind.textContent = job.kind;
    fields.attempt.textContent = `${job.attempt} of ${job.max_attempts}`;
    clear(fields.runner);
    fields.runner.append(runnerLink(job.runner_id));
    const percent = Math.max(0, Math.min(100, Number(job.progress && job.progress.percent) || 0));
    progress.value = percent;
    progressText.textContent = `${Math.round(percent)} %` + (job.progress && job.progress.message ? ` · ${job.progress.message}` : "");
    for (const [key, field] of [["created", "created_at"], ["started", "started_at"], ["finished", "finished_at"]]) {
      clear(fields[key]);
      fields[key].append(timeEl(job[field]));
    }
    fields.org.textContent = job.organization_id || "default";
    renderExtra(extra, job);
    renderActions();
    if (view.onChange) view.onChange(job);
  };
  return view;
}

function renderExtra(container, job) {
  // Keep open <details> open across live updates.
  const open = new Set([...container.querySelectorAll("details[open]")].map((d) => d.dataset.key));
  clear(container);
  if (job.pending_reason) {
    container.append(el("p", { class: "note", dataset: { testid: "pending-reason" } }, "Pending: ", pendingSentence(job)));
  }
  if (job.error) {
    container.append(el("div", { class: "job-error" },
      el("h2", {}, "Error"),
      el("p", {}, el("strong", {}, FAILURE_REASONS[job.error.reason] || job.error.reason), ": ", job.error.message)));
  }
  const json = (title, key, value) => el("details", { dataset: { key }, open: open.has(key) },
    el("summary", {}, title),
    el("pre", { class: "json", tabindex: "0" }, JSON.stringify(value, null, 2)));
  container.append(json("Payload", "payload", job.payload));
  if (job.result !== null && job.result !== undefined) container.append(json("Result", "result", job.result));
  // Artifacts: what it read and what it recorded, each a download.
  const artifact = (id, label) => el("a", { href: `${API}/artifacts/${encodeURIComponent(id)}`, download: label || id, class: "mono", title: id, dataset: { testid: "artifact-link" } }, label || shortId(id));
  const outputs = Object.entries(job.outputs || {});
  const inputs = job.inputs || [];
  if (outputs.length || inputs.length) {
    container.append(el("section", { class: "artifacts", "aria-labelledby": "h-artifacts" },
      el("h2", { id: "h-artifacts" }, "Artifacts"),
      el("dl", { class: "facts" },
        outputs.map(([name, id]) => [el("dt", {}, name), el("dd", {}, artifact(id, name), " ", el("span", { class: "muted mono small-text" }, shortId(id)))]),
        inputs.map((id) => [el("dt", {}, "input"), el("dd", {}, artifact(id))]))));
  }
  const sig = job.result_signature;
  if (sig) {
    container.append(el("section", { class: "signature", "aria-labelledby": "h-sig" },
      el("h2", { id: "h-sig" }, "Result signature"),
      el("dl", { class: "facts" },
        el("dt", {}, "Key fingerprint"), el("dd", { class: "mono" }, sig.key_fingerprint),
        el("dt", {}, "SHA-256"), el("dd", { class: "mono" }, sig.sha256),
        el("dt", {}, "Signed at"), el("dd", {}, sig.signed_at),
        el("dt", {}, "Signer"), el("dd", { class: "mono" }, sig.signer_runner_id))));
  }
}

// ---------- log panel ----------

// ANSI SGR colours become spans with classes; every other escape sequence and control
// character is dropped, so no raw escape ever reaches the page.
const ESCAPE_RE = /\x1b(?:\[([0-?]*)([ -/]*)([@-~])|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])?/g;
const CONTROL_RE = /[\x00-\x08\x0b-\x1f\x7f]/g;

// `text` with ANSI colours as spans; occurrences of `needle` (ASCII letters without case, as
// the server's search compares) are wrapped in <mark>.
function ansiSpans(text, needle) {
  const out = [];
  let fg = null;
  let bold = false;
  let last = 0;
  const marked = (chunk) => {
    if (!needle) return [chunk];
    const parts = [];
    const hay = asciiLower(chunk);
    let from = 0;
    for (let at = hay.indexOf(needle); at >= 0; at = hay.indexOf(needle, at + needle.length)) {
      if (at > from) parts.push(chunk.slice(from, at));
      parts.push(el("mark", {}, chunk.slice(at, at + needle.length)));
      from = at + needle.length;
    }
    if (from < chunk.length) parts.push(chunk.slice(from));
    return parts;
  };
  const push = (chunk) => {
    chunk = chunk.replace(CONTROL_RE, "");
    if (!chunk) return;
    if (!fg && !bold) { out.push(...marked(chunk)); return; }
    const classes = [];
    if (fg) classes.push(`ansi-${fg}`);
    if (bold) classes.push("ansi-bold");
    out.push(el("span", { class: classes.join(" ") }, marked(chunk)));
  };
  for (const match of text.matchAll(ESCAPE_RE)) {
    push(text.slice(last, match.index));
    last = match.index + match[0].length;
    if (match[3] !== "m" || match[2] || !/^[0-9;]*$/.test(match[1] || "")) continue;
    const codes = (match[1] || "0").split(";").map((c) => (c === "" ? 0 : Number(c)));
    for (const code of codes) {
      if (code === 0) { fg = null; bold = false; }
      else if (code === 1) bold = true;
      else if (code === 22) bold = false;
      else if (code === 39) fg = null;
      else if ((code >= 30 && code <= 37) || (code >= 90 && code <= 97)) fg = code;
    }
  }
  push(text.slice(last));
  return out;
}

function asciiLower(text) {
  return text.replace(/[A-Z]+/g, (letters) => letters.toLowerCase());
}

// The log viewer, virtualized: rows are log entries by `seq`, of one fixed height; only the
// rows in view (and a margin) are in the DOM, and only the pages of entries near them are in
// memory (LOG_PAGES_KEPT pages of LOG_PAGE entries), fetched as the view reaches them. So a
// million-line log opens as fast as a short one and scrolls without holding it. New entries
// arrive over SSE (resuming after the last one seen); search runs on the server.
function logPanel(ctx, id) {
  const base = `${API}/jobs/${encodeURIComponent(id)}/logs`;
  const status = el("span", { class: "muted", "aria-live": "polite", dataset: { testid: "log-status" } }, "Connecting…");
  const size = el("span", { class: "muted", dataset: { testid: "log-size" } });
  const follow = el("input", { type: "checkbox", id: "log-follow", checked: true, "aria-keyshortcuts": "f", dataset: { shortcut: "f" } });
  const searchInput = el("input", { id: "log-q", type: "search", autocomplete: "off", placeholder: "text", "aria-keyshortcuts": "/", dataset: { shortcut: "/" } });
  const searchNote = el("span", { class: "muted", "aria-live": "polite", dataset: { testid: "log-search-status" } });
  const nextButton = el("button", { type: "button", class: "small secondary", dataset: { testid: "log-next" }, disabled: true }, "Next");
  const errorButton = el("button", { type: "button", class: "small secondary", "aria-keyshortcuts": "e", dataset: { testid: "log-first-error", shortcut: "e" } }, "First error");
  const searchForm = el("form", { class: "log-search", role: "search", "aria-label": "Log search" },
    el("label", { for: "log-q", class: "visually-hidden" }, "Search the log"), searchInput,
    el("button", { type: "submit", class: "small" }, "Find"), nextButton, errorButton, searchNote);
  const empty = el("p", { class: "log-empty muted", dataset: { testid: "log-empty" } }, "no log lines yet");
  const spacer = el("div", { class: "log-spacer" });
  const layer = el("div", { class: "log-rows" });
  const view = el("div", { class: "log", role: "region", "aria-label": "Log", tabindex: "0", dataset: { testid: "log" } }, empty, spacer, layer);
  const node = el("section", { class: "panel", "aria-labelledby": "h-log" },
    el("div", { class: "panel-head" },
      el("h2", { id: "h-log" }, "Log"),
      el("label", { class: "check" }, follow, " Follow"),
      el("a", { href: `${base}/raw`, download: `job-${id}.log`, dataset: { testid: "log-download" } }, "Download"),
      size, status),
    searchForm,
    view);

  let total = 0; // rows: the log's next seq
  let lastSeen = -1; // the last seq the live stream delivered
  let liveFrom = Infinity; // the first seq the live stream delivers (the log's end when opened)
  let target = null; // the seq a search or a line link points at
  let needle = "";
  let searchFrom = -1; // the seq after which "Next" searches
  let searchMode = null; // {q} or {level} of the last search
  let revealLinked = false; // a line link: bring the log into the page's view once its line is drawn
  const pages = new Map(); // page index -> Map(seq -> entry), in least-recently-used order
  const loading = new Set();
  let renderQueued = false;
  let programmatic = false;

  const scaled = () => total * LOG_ROW_PX > LOG_MAX_SCROLL_PX;
  const rowsInView = () => Math.max(1, Math.ceil(view.clientHeight / LOG_ROW_PX));
  const firstInView = () => {
    const top = view.scrollTop;
    if (!scaled()) return Math.floor(top / LOG_ROW_PX);
    const room = Math.max(1, spacer.offsetHeight - view.clientHeight);
    return Math.round((top / room) * Math.max(0, total - rowsInView()));
  };
  // A scroll the viewer makes itself is told apart from the user's, which ends follow mode.
  const scrollTo = (top) => {
    const wanted = Math.max(0, Math.min(Math.round(top), view.scrollHeight - view.clientHeight));
    if (Math.abs(view.scrollTop - wanted) < 1) return;
    programmatic = true;
    view.scrollTop = wanted;
  };
  const scrollToRow = (seq, where) => {
    const offset = where === "center" ? Math.floor(rowsInView() / 2) : 0;
    const row = Math.max(0, seq - offset);
    if (!scaled()) scrollTo(row * LOG_ROW_PX);
    else {
      const room = Math.max(1, spacer.offsetHeight - view.clientHeight);
      scrollTo((row / Math.max(1, total - rowsInView())) * room);
    }
  };
  const scrollToEnd = () => scrollTo(view.scrollHeight);

  const entryAt = (seq) => {
    const page = pages.get(Math.floor(seq / LOG_PAGE));
    return page ? page.get(seq) : undefined;
  };
  const touch = (index) => {
    const page = pages.get(index);
    if (page) { pages.delete(index); pages.set(index, page); }
    return page;
  };
  // A page knows the rows from its start up to `readTo` (read from the server: present or a
  // gap); rows from `liveFrom` on come over the live stream.
  const keep = (index, entries) => {
    let page = pages.get(index);
    if (!page) { page = new Map(); page.readTo = index * LOG_PAGE; pages.set(index, page); }
    for (const entry of entries) page.set(entry.seq, entry);
    return page;
  };
  const needsRead = (index) => {
    const page = pages.get(index);
    if (!page) return true;
    const known = Math.min((index + 1) * LOG_PAGE, liveFrom, total);
    return page.readTo < known;
  };
  const evict = (needed) => {
    for (const index of pages.keys()) {
      if (pages.size <= LOG_PAGES_KEPT) break;
      if (!needed.has(index)) pages.delete(index);
    }
  };
  const load = async (index) => {
    if (loading.has(index)) return;
    loading.add(index);
    try {
      const first = index * LOG_PAGE;
      const q = new URLSearchParams({ limit: String(LOG_PAGE) });
      if (first > 0) q.set("after_seq", String(first - 1));
      const answer = await api("GET", `/jobs/${encodeURIComponent(id)}/logs?${q}`);
      if (!ctx.alive) return;
      const page = keep(index, (answer.items || []).filter((e) => e.seq >= first && e.seq < first + LOG_PAGE));
      const readTo = Math.min(first + LOG_PAGE, Number(answer.next_seq) || first);
      page.readTo = Math.max(page.readTo, (answer.items || []).length >= LOG_PAGE ? first + LOG_PAGE : readTo);
      total = Math.max(total, Number(answer.next_seq) || 0);
    } catch (error) {
      if (!error.handled && ctx.alive) status.textContent = "Could not read the log: " + error.message;
    } finally {
      loading.delete(index);
      queueRender();
    }
  };

  const row = (seq) => {
    const entry = entryAt(seq);
    const number = el("a", { class: "log-no", href: `#L${seq + 1}`, "aria-label": `Line ${seq + 1}` }, String(seq + 1));
    number.addEventListener("click", (event) => {
      event.preventDefault();
      history.replaceState(history.state, "", `${location.pathname}${location.search}#L${seq + 1}`);
      target = seq;
      follow.checked = false;
      queueRender();
    });
    if (!entry) {
      return el("div", { class: "log-line log-loading" + (seq === target ? " log-target" : ""), dataset: { seq: String(seq) } }, number, el("span", { class: "log-msg muted" }, "…"));
    }
    const level = LOG_LEVELS.includes(entry.level) ? entry.level : "info";
    return el("div", { class: `log-line level-${level}` + (seq === target ? " log-target" : ""), id: `L${seq + 1}`, dataset: { testid: "log-line", seq: String(seq) } },
      number,
      el("span", { class: "log-ts", title: entry.ts }, clockTime(entry.ts)),
      el("span", { class: "log-level" }, level),
      el("span", { class: "log-msg" }, ansiSpans(String(entry.message), needle)));
  };

  const render = () => {
    renderQueued = false;
    if (!ctx.alive) return;
    if (total > 0 && empty.isConnected) empty.remove();
    const height = Math.min(total * LOG_ROW_PX, LOG_MAX_SCROLL_PX);
    spacer.style.height = `${height}px`;
    view.classList.toggle("log-short", total * LOG_ROW_PX < LOG_VIEW_MAX_PX);
    if (follow.checked && total > 0) scrollToEnd();
    const first = Math.max(0, firstInView() - LOG_OVERSCAN);
    const last = Math.min(total, firstInView() + rowsInView() + LOG_OVERSCAN);
    const needed = new Set();
    for (let seq = first; seq < last; seq += 1) needed.add(Math.floor(seq / LOG_PAGE));
    for (const index of needed) {
      touch(index);
      if (needsRead(index)) load(index);
    }
    evict(needed);
    const rows = [];
    for (let seq = first; seq < last; seq += 1) rows.push(row(seq));
    layer.replaceChildren(...rows);
    if (revealLinked && target !== null && entryAt(target)) {
      revealLinked = false;
      view.scrollIntoView({ block: "center" });
    }
    // Scaled (a log too long for one element's height), the rows are placed where the view is.
    const top = scaled() ? view.scrollTop - (firstInView() - first) * LOG_ROW_PX : first * LOG_ROW_PX;
    layer.style.top = `${Math.max(0, top)}px`;
    size.textContent = `${total.toLocaleString("en-US")} ${total === 1 ? "line" : "lines"}`;
  };
  function queueRender() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(render);
  }

  view.addEventListener("scroll", () => {
    if (programmatic) { programmatic = false; queueRender(); return; }
    const atBottom = view.scrollTop + view.clientHeight >= view.scrollHeight - 4;
    if (!atBottom) follow.checked = false;
    queueRender();
  });
  follow.addEventListener("change", () => { if (follow.checked) { target = null; queueRender(); } });

  // Search on the server, a window at a time, until a match or the end of the log.
  const find = async (after, mode) => {
    searchMode = mode;
    needle = mode.q ? asciiLower(mode.q) : "";
    nextButton.disabled = true;
    let cursor = after;
    for (;;) {
      const q = new URLSearchParams({ limit: "1" });
      if (mode.q) q.set("q", mode.q);
      if (mode.level) q.set("level", mode.level);
      if (cursor >= 0) q.set("after_seq", String(cursor));
      let answer;
      try {
        answer = await api("GET", `/jobs/${encodeURIComponent(id)}/logs/search?${q}`);
      } catch (error) {
        if (!error.handled && ctx.alive) searchNote.textContent = error.message;
        return;
      }
      if (!ctx.alive || searchMode !== mode) return;
      const hit = (answer.items || [])[0];
      if (hit) {
        keep(Math.floor(hit.seq / LOG_PAGE), [hit]);
        searchFrom = hit.seq;
        target = hit.seq;
        follow.checked = false;
        total = Math.max(total, hit.seq + 1);
        searchNote.textContent = `Line ${(hit.seq + 1).toLocaleString("en-US")}`;
        nextButton.disabled = false;
        scrollToRow(hit.seq, "center");
        queueRender();
        return;
      }
      const next = Number(answer.next_seq) || 0;
      const end = Number(answer.log_next_seq) || 0;
      if (next >= end) {
        searchNote.textContent = after >= 0 ? "No more matches." : "No match.";
        if (after >= 0) nextButton.disabled = false;
        queueRender();
        return;
      }
      searchNote.textContent = `Searching… ${next.toLocaleString("en-US")} of ${end.toLocaleString("en-US")} lines`;
      cursor = next - 1;
    }
  };
  searchForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const q = searchInput.value;
    if (!q.trim()) { needle = ""; searchNote.textContent = ""; nextButton.disabled = true; queueRender(); return; }
    find(-1, { q });
  });
  nextButton.addEventListener("click", () => { if (searchMode) find(searchFrom, searchMode); });
  errorButton.addEventListener("click", () => find(-1, { level: "error" }));

  const add = (entry) => {
    // Never show an entry twice: a resumed stream may repeat the last one.
    if (typeof entry.seq !== "number" || entry.seq <= lastSeen) return;
    lastSeen = entry.seq;
    keep(Math.floor(entry.seq / LOG_PAGE), [entry]);
    total = Math.max(total, entry.seq + 1);
    queueRender();
  };

  let stream = null;
  const start = async () => {
    // Where the log ends now (a cursor far past the end answers it), then follow from there;
    // a line link (#L123) opens at that line instead of the end.
    let end = 0;
    try {
      end = Number((await api("GET", `/jobs/${encodeURIComponent(id)}/logs?after_seq=9007199254740991&limit=1`)).next_seq) || 0;
    } catch (error) {
      if (!error.handled && ctx.alive) status.textContent = "Could not read the log: " + error.message;
    }
    if (!ctx.alive) return;
    total = end;
    lastSeen = end - 1;
    liveFrom = end;
    const linked = /^#L(\d+)$/.exec(location.hash);
    if (linked && Number(linked[1]) >= 1) {
      target = Number(linked[1]) - 1;
      follow.checked = false;
      revealLinked = true;
      render();
      scrollToRow(target, "center");
    }
    queueRender();
    stream = openStream(ctx, lastSeen >= 0 ? `${base}?after_seq=${lastSeen}` : base, { log: add }, {
      reopenUrl: () => (lastSeen >= 0 ? `${base}?after_seq=${lastSeen}` : base),
      onStatus: (what, message) => {
        status.textContent = what === "open" ? "Live" : what === "failed" ? "Log stream failed: " + message : "Reconnecting…";
      },
      onEnd: () => {
        status.textContent = total ? "End of log" : "End of log (empty)";
        queueRender();
      },
    });
  };
  start();
  ctx.cleanups.push(() => { if (stream) stream.close(); });
  return { node };
}

// ---------- DAG panel ----------

function dagPanel(ctx, id) {
  const body = el("div", { class: "dag-body" });
  const node = el("section", { class: "panel", "aria-labelledby": "h-dag", dataset: { testid: "dag" } },
    el("h2", { id: "h-dag" }, "Steps"), body);
  let lastJson = null;
  const fetchDag = async () => {
    try {
      const dag = await api("GET", `/jobs/${encodeURIComponent(id)}/dag`);
      if (!ctx.alive) return;
      const json = JSON.stringify(dag);
      if (json === lastJson) return;
      lastJson = json;
      clear(body);
      body.append(...drawDag(dag));
    } catch (error) {
      if (!error.handled && ctx.alive) showTransient(body, "Steps could not be loaded: " + error.message);
    }
  };
  // At most one fetch a second however fast job events come.
  return { node, refreshSoon: throttled(ctx, fetchDag) };
}

function nodeStatus(n) {
  return typeof n.status === "string" ? n.status : "unknown";
}

function drawDag(dag) {
  const nodes = (dag.nodes || []).filter((n) => n && n.id !== undefined);
  if (!nodes.length) return [el("p", { class: "muted" }, "no steps reported")];
  const label = (n) => String(n.label !== undefined && n.label !== null ? n.label : n.id);
  const list = el("ul", { class: "dag-list" }, nodes.map((n) => el("li", {}, `${label(n)}: ${nodeStatus(n)}`)));
  if (nodes.length > MAX_DAG_DRAWN) {
    return [el("p", { class: "muted" }, `${nodes.length} steps: too many to draw, listed below.`), list];
  }
  // Layered layout: a node's layer is the longest path from a root (Kahn's order); nodes left
  // on a cycle go after the last layer.
  const index = new Map(nodes.map((n, i) => [String(n.id), i]));
  const edges = (dag.edges || [])
    .map((e) => [index.get(String(e && e.from)), index.get(String(e && e.to))])
    .filter(([a, b]) => a !== undefined && b !== undefined && a !== b);
  const out = nodes.map(() => []);
  const indegree = nodes.map(() => 0);
  for (const [a, b] of edges) { out[a].push(b); indegree[b] += 1; }
  const layer = nodes.map(() => 0);
  const queue = nodes.map((_, i) => i).filter((i) => indegree[i] === 0);
  const seen = new Set();
  while (queue.length) {
    const i = queue.shift();
    seen.add(i);
    for (const j of out[i]) {
      layer[j] = Math.max(layer[j], layer[i] + 1);
      if (--indegree[j] === 0) queue.push(j);
    }
  }
  const maxLayer = Math.max(0, ...layer);
  nodes.forEach((_, i) => { if (!seen.has(i)) layer[i] = maxLayer + 1; });
  const columns = [];
  nodes.forEach((_, i) => { (columns[layer[i]] = columns[layer[i]] || []).push(i); });

  const W = 150, H = 38, GX = 60, GY = 18, PAD = 10;
  const pos = [];
  columns.forEach((col, c) => col.forEach((i, r) => {
    pos[i] = { x: PAD + c * (W + GX), y: PAD + r * (H + GY) };
  }));
  const width = PAD * 2 + columns.length * W + (columns.length - 1) * GX;
  const height = PAD * 2 + Math.max(...columns.map((c) => (c ? c.length : 0))) * (H + GY) - GY;
  const picture = svg("svg", {
    class: "dag-svg", width, height, viewBox: `0 0 ${width} ${height}`,
    role: "img", "aria-label": `Step graph of ${nodes.length} steps; listed below`,
  });
  picture.append(svg("defs", {}, svg("marker", {
    id: "dag-arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto",
  }, svg("path", { d: "M0,0 L10,5 L0,10 z", class: "dag-arrowhead" }))));
  for (const [a, b] of edges) {
    const x1 = pos[a].x + W, y1 = pos[a].y + H / 2, x2 = pos[b].x, y2 = pos[b].y + H / 2;
    const mid = (x1 + x2) / 2;
    picture.append(svg("path", {
      class: "dag-edge", d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`, "marker-end": "url(#dag-arrow)",
    }));
  }
  nodes.forEach((n, i) => {
    const status = nodeStatus(n);
    const cls = DAG_STATUSES.has(status) ? status : "other";
    const text = label(n);
    const shown = text.length > 18 ? text.slice(0, 17) + "…" : text;
    picture.append(svg("g", {
      class: `dag-node status-${cls}`, transform: `translate(${pos[i].x},${pos[i].y})`,
      dataset: { testid: "dag-node", status, id: String(n.id) },
    },
    svg("title", {}, `${text}: ${status}`),
    svg("rect", { width: W, height: H, rx: "6" }),
    svg("text", { x: W / 2, y: H / 2 - 3, "text-anchor": "middle" }, shown),
    svg("text", { x: W / 2, y: H / 2 + 11, "text-anchor": "middle", class: "dag-status" }, status)));
  });
  return [el("div", { class: "dag-scroll", role: "region", "aria-label": "Step graph", tabindex: "0" }, picture), list];
}

// ---------- runners ----------

async function runnersPage(ctx, root) {
  setTitle("Runners");
  root.append(el("h1", {}, "Runners"));
  const message = el("div", {});
  const holder = el("div", {});
  root.append(message, holder);
  const load = async () => {
    const list = await api("GET", "/runners?limit=1000");
    if (!ctx.alive) return;
    clear(holder);
    holder.append(runnersTable(list.items, load, message));
  };
  await load();
}

// A runner's tags and resources in one line: "tags: fp16, int8 · vram_gb 24".
function capabilityText(r) {
  const parts = [];
  if ((r.tags || []).length) parts.push("tags: " + r.tags.join(", "));
  const resources = Object.entries(r.resources || {}).map(([k, v]) => `${k} ${v}`);
  if (resources.length) parts.push(resources.join(", "));
  return parts.join(" · ");
}

function runnersTable(runners, reload, message) {
  const operator = roleAtLeast("operator");
  const act = async (button, method, path) => {
    clear(message);
    button.disabled = true;
    try {
      await api(method, path);
      await reload();
    } catch (error) {
      button.disabled = false;
      if (!error.handled) message.append(alertBox(error.message));
    }
  };
  const rows = runners.map((r) => {
    const buttons = [];
    if (operator) {
      const path = `/runners/${encodeURIComponent(r.id)}`;
      if (r.enrollment === "pending") {
        const approve = el("button", { type: "button", class: "small", "aria-label": `Approve ${r.name}` }, "Approve");
        approve.addEventListener("click", () => act(approve, "POST", path + "/approve"));
        const reject = el("button", { type: "button", class: "small secondary", "aria-label": `Reject ${r.name}` }, "Reject");
        reject.addEventListener("click", () => act(reject, "POST", path + "/reject"));
        buttons.push(approve, reject);
      }
      const remove = el("button", { type: "button", class: "small danger", "aria-label": `Delete ${r.name}` }, "Delete");
      remove.addEventListener("click", () => {
        if (confirm(`Delete runner ${r.name}? Its token stops working and its jobs are released.`)) act(remove, "DELETE", path);
      });
      buttons.push(remove);
    }
    const labels = Object.entries(r.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ");
    return el("tr", { id: `runner-${r.id}` },
      el("td", {}, el("span", { title: r.id }, r.name), r.hostname ? el("div", { class: "muted small-text" }, r.hostname) : null,
        el("div", { class: "small-text" }, el("a", { href: `/workloads?runner_id=${encodeURIComponent(r.id)}` }, "workloads"))),
      el("td", {}, el("span", { class: `badge runner-${["online", "offline", "draining"].includes(r.status) ? r.status : "other"}` }, r.status)),
      el("td", {}, r.enrollment || "enrolled"),
      el("td", {}, (r.kinds || []).join(", ") || "—"),
      el("td", {}, labels || "—", capabilityText(r) ? el("div", { class: "muted small-text" }, capabilityText(r)) : null),
      el("td", {}, r.version || "—"),
      el("td", { class: "num" }, String(r.running_jobs)),
      el("td", {}, timeEl(r.last_heartbeat_at)),
      operator ? el("td", { class: "actions" }, buttons) : null);
  });
  const columns = ["Name", "Status", "Enrollment", "Kinds", "Labels, tags, resources", "Version", "Running jobs", "Last heartbeat"];
  if (operator) columns.push("Actions");
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: String(columns.length), class: "muted" }, "No runners.")));
  return tableWrap("Runners", table(columns, rows, "Runners"));
}

// ---------- runner keys ----------

// ---------- workloads ----------

function workloadBadge(w) {
  const colour = WORKLOAD_COLOURS[w.status] || "other";
  const badgeEl = el("span", { class: `badge state-${colour}`, dataset: { testid: "workload-status" } }, w.status);
  if (!w.stale) return badgeEl;
  return el("span", {}, badgeEl, " ", el("span", { class: "warn-text small-text", title: "its runner is offline or gone: this is the last status it reported", dataset: { testid: "workload-stale" } }, "stale"));
}

function workloadLink(id) {
  return el("a", { href: `/workloads/${encodeURIComponent(id)}`, class: "mono" }, id);
}

function containersTable(containers) {
  const rows = (containers || []).map((c) => el("tr", { dataset: { testid: "container-row" } },
    el("td", { class: "mono" }, c.container_id),
    el("td", {}, c.name || el("span", { class: "muted" }, "—")),
    el("td", {}, c.role),
    el("td", { class: "mono wrap" }, c.image || el("span", { class: "muted" }, "—")),
    el("td", {}, c.status)));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "5", class: "muted" }, "No containers reported.")));
  return tableWrap("Containers", table(["Container", "Name", "Role", "Image", "Status"], rows, "Containers"));
}

async function workloadsPage(ctx, root) {
  setTitle("Workloads");
  root.append(el("h1", {}, "Workloads"));
  const query = new URLSearchParams(location.search);
  const thread = el("input", { id: "w-thread", name: "thread_id", type: "search", value: query.get("thread_id") || "", autocomplete: "off", "aria-keyshortcuts": "/", dataset: { shortcut: "/" } });
  const runner = el("input", { id: "w-runner", name: "runner_id", type: "text", class: "mono", value: query.get("runner_id") || "", autocomplete: "off", placeholder: "runner id" });
  const status = el("select", { id: "w-status", name: "status" },
    el("option", { value: "" }, "any"),
    WORKLOAD_STATUSES.map((name) => el("option", { value: name, selected: query.get("status") === name }, name)));
  const form = el("form", { class: "inline-form", "aria-label": "Filter workloads", dataset: { testid: "workload-filter" } },
    field("w-thread", "Thread", thread),
    field("w-status", "Status", status),
    field("w-runner", "Runner", runner),
    el("button", { type: "submit" }, "Filter"));
  const message = el("div", {});
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    clear(message);
    const q = new URLSearchParams();
    if (thread.value.trim()) q.set("thread_id", thread.value.trim());
    if (status.value) q.set("status", status.value);
    const runnerId = runner.value.trim();
    if (runnerId) {
      if (!UUID_RE.test(runnerId)) { message.append(alertBox("Runner: not a runner id (a UUID).")); return; }
      q.set("runner_id", runnerId);
    }
    navigate("/workloads" + (q.toString() ? "?" + q : ""));
  });
  root.append(el("div", { class: "toolbar" }, form), message);
  const params = {};
  for (const name of ["thread_id", "status", "runner_id"]) if (query.get(name)) params[name] = query.get(name);
  const list = pagedTable(ctx, {
    path: "/workloads", api: "/workloads", params, label: "Workloads",
    empty: Object.keys(params).length ? "No workloads match." : "No workloads recorded.",
    columns: ["Workload", "Status", "Runner", "Thread", "Agent", "Containers", "Updated"],
    row: (w) => el("tr", { dataset: { testid: "workload-row", id: w.id } },
      el("td", {}, workloadLink(w.id)),
      el("td", {}, workloadBadge(w)),
      el("td", {}, runnerLink(w.runner_id)),
      el("td", { class: "mono" }, w.thread_id ? el("a", { href: `/workloads?thread_id=${encodeURIComponent(w.thread_id)}` }, w.thread_id) : el("span", { class: "muted" }, "—")),
      el("td", { class: "mono" }, w.agent_id || el("span", { class: "muted" }, "—")),
      el("td", { class: "num" }, String((w.containers || []).length)),
      el("td", {}, timeEl(w.updated_at))),
  });
  root.append(list.holder);
  try {
    await list.load();
  } catch (error) {
    if (!error.handled && ctx.alive) message.append(alertBox(error.message));
  }
}

async function workloadPage(ctx, root, id) {
  setTitle(`Workload ${id}`);
  root.append(el("p", {}, el("a", { href: "/workloads" }, "← Workloads")));
  let workload;
  let history;
  try {
    [workload, history] = await Promise.all([
      api("GET", `/workloads/${encodeURIComponent(id)}`),
      api("GET", `/workloads/${encodeURIComponent(id)}/history`),
    ]);
  } catch (error) {
    if (!error.handled && ctx.alive) root.append(el("h1", {}, "Workload"), alertBox(error.message));
    return;
  }
  if (!ctx.alive) return;
  const w = workload;
  const facts = [
    ["Status", workloadBadge(w)],
    ["Reason", w.status_reason || el("span", { class: "muted" }, "—")],
    ["Runner", runnerLink(w.runner_id)],
    ["Thread", w.thread_id ? el("a", { href: `/workloads?thread_id=${encodeURIComponent(w.thread_id)}`, class: "mono" }, w.thread_id) : el("span", { class: "muted" }, "—")],
    ["Agent", w.agent_id ? el("span", { class: "mono" }, w.agent_id) : el("span", { class: "muted" }, "—")],
    ["Organization", w.organization_id],
    ["Ziti identity", w.ziti_identity_id ? el("span", { class: "mono" }, w.ziti_identity_id) : el("span", { class: "muted" }, "—")],
    ["Created", timeEl(w.created_at)],
    ["Updated", timeEl(w.updated_at)],
  ];
  const changes = (history.items || []).map((change) => el("li", { dataset: { testid: "workload-change" } },
    timeEl(change.at), " ", el("span", { class: `badge state-${WORKLOAD_COLOURS[change.status] || "other"}` }, change.status),
    change.reason ? [" ", el("span", { class: "muted" }, change.reason)] : null));
  root.append(
    el("h1", {}, "Workload ", el("span", { class: "mono job-id" }, w.id)),
    w.stale ? el("p", { class: "warn-text", dataset: { testid: "workload-stale-note" } }, "Its runner is offline or gone: the status is the last one it reported.") : null,
    el("dl", { class: "job-facts", dataset: { testid: "workload-facts" } }, facts.map(([name, value]) => [el("dt", {}, name), el("dd", {}, value)])),
    el("section", { class: "panel", "aria-labelledby": "h-containers" }, el("h2", { id: "h-containers" }, "Containers"), containersTable(w.containers)),
    el("section", { class: "panel", "aria-labelledby": "h-history" }, el("h2", { id: "h-history" }, "Status history"), el("ol", { class: "attempts", dataset: { testid: "workload-history" } }, changes)));
}

async function keysPage(ctx, root) {
  setTitle("Runner keys");
  root.append(el("h1", {}, "Runner keys"),
    el("p", { class: "muted" }, "Runners whose Ed25519 key is on this allowlist may register by themselves."));
  const operator = roleAtLeast("operator");
  const message = el("div", {});
  const list = pagedTable(ctx, {
    path: "/keys", api: "/admin/runner-keys", label: "Runner keys", empty: "No runner keys.",
    columns: ["Fingerprint", "Public key", "Note", "Organization", "Added"].concat(operator ? ["Actions"] : []),
    row: (k, reload) => el("tr", { dataset: { testid: "key-row", fingerprint: k.fingerprint } },
      el("td", { class: "mono", title: k.fingerprint }, shortId(k.fingerprint)),
      el("td", { class: "mono" }, k.public_key),
      el("td", { class: "wrap" }, k.note || el("span", { class: "muted" }, "—")),
      el("td", {}, k.organization_id || "all organizations"),
      el("td", {}, timeEl(k.created_at || k.added_at)),
      operator ? el("td", { class: "actions" }, rowAction({
        label: "Remove", testid: "key-remove", cls: "danger", aria: `Remove key ${k.fingerprint}`,
        confirmText: `Remove key ${k.fingerprint}${k.note ? ` (${k.note})` : ""}? The runner registered with it loses its token at once.`,
        method: "DELETE", path: `/admin/runner-keys/${encodeURIComponent(k.fingerprint)}`, message, reload,
      })) : null),
  });
  if (operator) {
    const key = el("input", { id: "k-key", name: "public_key", type: "text", class: "mono wide-input", required: true, autocomplete: "off", spellcheck: "false", "aria-describedby": "k-key-hint" });
    const note = el("input", { id: "k-note", name: "note", type: "text", autocomplete: "off" });
    const formMessage = el("div", {});
    const form = el("form", { class: "fields-form", "aria-labelledby": "h-add-key", novalidate: true, dataset: { testid: "key-form" } },
      field("k-key", "Public key", key, "standard base64 of the 32 raw Ed25519 bytes"),
      field("k-note", "Note", note),
      el("button", { type: "submit" }, "Add key"));
    onSubmit(form, formMessage, async () => {
      const publicKey = key.value.trim();
      if (!publicKey) { formError(formMessage, "Enter the runner's public key."); key.focus(); return; }
      const body = { public_key: publicKey };
      if (note.value.trim()) body.note = note.value.trim();
      await api("POST", "/admin/runner-keys", body);
      key.value = "";
      note.value = "";
      await list.load();
    });
    root.append(el("section", { class: "card form-card", "aria-labelledby": "h-add-key" },
      el("h2", { id: "h-add-key" }, "Add key"), form, formMessage));
  }
  root.append(message, list.holder);
  try {
    await list.load();
  } catch (error) {
    if (error.status !== 403) throw error;
    list.holder.append(alertBox(`Your role (${me.role}) cannot read runner keys: ${error.message}`));
  }
}

// ---------- kinds ----------

async function kindsPage(ctx, root) {
  setTitle("Kinds");
  root.append(el("h1", {}, "Kinds"),
    el("p", { class: "muted" }, "Result rules per job kind: a JSON Schema every result must meet, and whether results must be signed."));
  const operator = roleAtLeast("operator");
  const message = el("div", {});
  let edit = null; // fills the form from a row, when there is one
  const list = pagedTable(ctx, {
    path: "/kinds", api: "/kinds", label: "Kinds", empty: "No kind has rules.",
    columns: ["Kind", "Result schema", "Signed results", "Updated"].concat(operator ? ["Actions"] : []),
    row: (k, reload) => el("tr", { dataset: { testid: "kind-row", kind: k.kind } },
      el("td", {}, el("code", {}, k.kind)),
      el("td", {}, k.result_schema === null || k.result_schema === undefined
        ? el("span", { class: "muted" }, "none")
        : el("details", {}, el("summary", {}, "schema"),
          el("pre", { class: "json", tabindex: "0" }, JSON.stringify(k.result_schema, null, 2)))),
      el("td", {}, k.require_signed_results ? "required" : "not required"),
      el("td", {}, timeEl(k.updated_at)),
      operator ? el("td", { class: "actions" },
        el("button", { type: "button", class: "small secondary", "aria-label": `Edit ${k.kind}`, on: { click: () => edit(k) } }, "Edit"),
        rowAction({
          label: "Delete", testid: "kind-delete", cls: "danger", aria: `Delete rules of ${k.kind}`,
          confirmText: `Delete the result rules of kind ${k.kind}? Its results are then accepted unchecked and unsigned.`,
          method: "DELETE", path: `/kinds/${encodeURIComponent(k.kind)}`, message, reload,
        })) : null),
  });
  if (operator) {
    const kind = el("input", { id: "kd-kind", name: "kind", type: "text", required: true, autocomplete: "off", spellcheck: "false" });
    const schema = el("textarea", { id: "kd-schema", name: "result_schema", rows: "6", class: "mono", spellcheck: "false", "aria-describedby": "kd-schema-hint" });
    const signed = el("input", { id: "kd-signed", name: "require_signed_results", type: "checkbox" });
    const formMessage = el("div", {});
    const form = el("form", { class: "stack-form", "aria-labelledby": "h-set-kind", novalidate: true, dataset: { testid: "kind-form" } },
      field("kd-kind", "Kind", kind),
      field("kd-schema", "Result schema (JSON)", schema, "a JSON Schema (draft 2020-12); empty for none"),
      el("div", {}, el("label", { class: "check", for: "kd-signed" }, signed, " Require signed results")),
      el("div", {}, el("button", { type: "submit" }, "Save rules")));
    edit = (k) => {
      kind.value = k.kind;
      schema.value = k.result_schema === null || k.result_schema === undefined ? "" : JSON.stringify(k.result_schema, null, 2);
      signed.checked = !!k.require_signed_results;
      kind.focus();
    };
    onSubmit(form, formMessage, async () => {
      const name = kind.value.trim();
      if (!name) { formError(formMessage, "Enter a kind."); kind.focus(); return; }
      let resultSchema = null;
      if (schema.value.trim()) {
        try {
          resultSchema = JSON.parse(schema.value);
        } catch (error) {
          formError(formMessage, `The result schema is not valid JSON: ${error.message}`);
          schema.focus();
          return;
        }
      }
      await api("PUT", `/kinds/${encodeURIComponent(name)}`, { result_schema: resultSchema, require_signed_results: signed.checked });
      kind.value = "";
      schema.value = "";
      signed.checked = false;
      await list.load();
    });
    root.append(el("section", { class: "card form-card", "aria-labelledby": "h-set-kind" },
      el("h2", { id: "h-set-kind" }, "Set a kind's rules"), form, formMessage));
  }
  root.append(message, list.holder);
  await list.load();
}

// ---------- user tokens ----------

async function tokensPage(ctx, root) {
  setTitle("Tokens");
  root.append(el("h1", {}, "User tokens"));
  if (!roleAtLeast("admin")) { refused(root, "manage user tokens"); return; }
  const message = el("div", {});
  const list = pagedTable(ctx, {
    path: "/tokens", api: "/admin/tokens", label: "User tokens", empty: "No user tokens.",
    columns: ["Name", "Role", "Organization", "Created", "Expires", "Last used", "Actions"],
    row: (t, reload) => el("tr", { dataset: { testid: "token-row", id: t.id, name: t.name } },
      el("td", { title: t.id }, t.name),
      el("td", {}, t.role),
      el("td", {}, t.organization_id || "all organizations"),
      el("td", {}, timeEl(t.created_at)),
      el("td", {}, t.expires_at ? timeEl(t.expires_at) : el("span", { class: "muted" }, "never")),
      el("td", {}, t.last_used_at ? timeEl(t.last_used_at) : el("span", { class: "muted" }, "never")),
      el("td", { class: "actions" }, rowAction({
        label: "Revoke", testid: "token-revoke", cls: "danger", aria: `Revoke token ${t.name}`,
        confirmText: `Revoke token ${t.name} (${t.role})? It stops working at once, and dashboard sessions opened with it end.`,
        method: "DELETE", path: `/admin/tokens/${encodeURIComponent(t.id)}`, message, reload,
      }))),
  });

  const name = el("input", { id: "t-name", name: "name", type: "text", required: true, autocomplete: "off" });
  const role = el("select", { id: "t-role", name: "role" }, ROLES.map((r) => el("option", { value: r }, r)));
  const org = el("input", { id: "t-org", name: "organization_id", type: "text", autocomplete: "off", spellcheck: "false", "aria-describedby": "t-org-hint" });
  const days = el("input", { id: "t-days", name: "expires_in_days", type: "number", min: "1", step: "1", inputmode: "numeric", class: "narrow-input", "aria-describedby": "t-days-hint" });
  const formMessage = el("div", {});
  const minted = el("div", { "aria-live": "polite" });
  const form = el("form", { class: "fields-form", "aria-labelledby": "h-mint", novalidate: true, dataset: { testid: "token-form" } },
    field("t-name", "Name", name),
    field("t-role", "Role", role),
    field("t-org", "Organization id", org, me.organization_id ? `empty: ${me.organization_id}` : "empty: all organizations"),
    field("t-days", "Expires in days", days, "empty: never"),
    el("button", { type: "submit" }, "Mint token"));
  onSubmit(form, formMessage, async () => {
    clear(minted);
    const body = { name: name.value.trim(), role: role.value };
    if (!body.name) { formError(formMessage, "Enter a name for the token."); name.focus(); return; }
    if (org.value.trim()) body.organization_id = org.value.trim();
    if (days.value.trim()) {
      const n = Number(days.value);
      if (!Number.isFinite(n) || n <= 0) { formError(formMessage, "Expires in days must be a positive number."); days.focus(); return; }
      body.expires_at = new Date(Date.now() + n * 86400000).toISOString();
    }
    const answer = await api("POST", "/admin/tokens", body);
    if (!ctx.alive) return;
    name.value = "";
    org.value = "";
    days.value = "";
    minted.append(tokenBox(answer));
    await list.load();
  });
  root.append(el("section", { class: "card form-card", "aria-labelledby": "h-mint" },
    el("h2", { id: "h-mint" }, "Mint a token"), form, formMessage, minted));
  root.append(message, list.holder);
  await list.load();
}

// The new token, shown this once: it is only in this box (never stored by the page), and the
// box goes with the page.
function tokenBox(answer) {
  const info = answer.token_info || {};
  const value = el("code", { class: "token-value", dataset: { testid: "new-token-value" } }, answer.token);
  const copied = el("span", { class: "small-text", "aria-live": "polite" });
  const copy = el("button", { type: "button", class: "small secondary", dataset: { testid: "copy-token" } }, "Copy");
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(answer.token);
      copied.textContent = "copied";
    } catch (_) {
      copied.textContent = "copy it by hand";
    }
  });
  return el("div", { class: "token-box", role: "status", dataset: { testid: "new-token" } },
    el("p", {}, el("strong", {}, `Token ${info.name || ""} (${info.role || ""})`), ": shown this once. Copy it now; only its hash is kept."),
    el("div", { class: "token-line" }, value, copy, copied));
}

// ---------- organizations ----------

async function organizationsPage(ctx, root) {
  setTitle("Organizations");
  root.append(el("h1", {}, "Organizations"));
  if (!isBootstrapAdmin()) { refused(root, "manage organizations: only the bootstrap admin token can"); return; }
  const message = el("div", {});
  const list = pagedTable(ctx, {
    path: "/organizations", api: "/admin/organizations", label: "Organizations", empty: "No organizations.",
    columns: ["Id", "Name", "Shared runners", "Created", "Actions"],
    row: (o, reload) => el("tr", { dataset: { testid: "org-row", id: o.id } },
      el("td", {}, el("code", {}, o.id)),
      el("td", {}, o.name),
      el("td", {}, o.allow_shared_runners ? "allowed" : "not allowed"),
      el("td", {}, timeEl(o.created_at)),
      el("td", { class: "actions" }, o.id === "default" ? el("span", { class: "muted" }, "—") : rowAction({
        label: "Delete", testid: "org-delete", cls: "danger", aria: `Delete organization ${o.name}`,
        confirmText: `Delete organization ${o.name} (${o.id})?`,
        method: "DELETE", path: `/admin/organizations/${encodeURIComponent(o.id)}`, message, reload,
        describe: (error) => error.code === "organization_not_empty"
          ? `Organization ${o.name} is not empty, so it was not deleted: ${error.message}`
          : error.message,
      }))),
  });
  const name = el("input", { id: "o-name", name: "name", type: "text", required: true, autocomplete: "off", "aria-describedby": "o-name-hint" });
  const shared = el("input", { id: "o-shared", name: "allow_shared_runners", type: "checkbox", checked: true });
  const formMessage = el("div", {});
  const form = el("form", { class: "fields-form", "aria-labelledby": "h-new-org", novalidate: true, dataset: { testid: "org-form" } },
    field("o-name", "Name", name, "its id is made from it: Acme Corp is acme-corp"),
    el("div", { class: "check-field" }, el("label", { class: "check", for: "o-shared" }, shared, " Allow shared runners")),
    el("button", { type: "submit" }, "Create"));
  onSubmit(form, formMessage, async () => {
    const body = { name: name.value.trim(), allow_shared_runners: shared.checked };
    if (!body.name) { formError(formMessage, "Enter a name."); name.focus(); return; }
    await api("POST", "/admin/organizations", body);
    name.value = "";
    shared.checked = true;
    await list.load();
  });
  root.append(el("section", { class: "card form-card", "aria-labelledby": "h-new-org" },
    el("h2", { id: "h-new-org" }, "New organization"), form, formMessage));
  root.append(message, list.holder);
  await list.load();
}

// ---------- audit log ----------

async function auditPage(ctx, root) {
  setTitle("Audit");
  root.append(el("h1", {}, "Audit log"));
  if (!roleAtLeast("admin")) { refused(root, "read the audit log"); return; }
  const query = new URLSearchParams(location.search);
  const action = query.get("action") || "";
  const input = el("input", { id: "a-action", name: "action", type: "text", value: action, autocomplete: "off", spellcheck: "false", placeholder: "any action" });
  const filter = el("form", { class: "inline-form", "aria-label": "Filter the audit log", dataset: { testid: "audit-filter" } },
    field("a-action", "Action", input),
    el("button", { type: "submit" }, "Filter"));
  filter.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = input.value.trim();
    navigate("/audit" + (value ? "?" + new URLSearchParams({ action: value }) : ""));
  });
  root.append(el("div", { class: "toolbar" }, filter));
  const list = pagedTable(ctx, {
    path: "/audit", api: "/admin/audit", params: action ? { action } : {}, label: "Audit log",
    empty: action ? `No ${action} entries.` : "No entries.",
    columns: ["At", "Actor", "Action", "Subject", "Organization", "Detail"],
    row: (a) => el("tr", { dataset: { testid: "audit-row", action: a.action } },
      el("td", {}, timeEl(a.at)),
      el("td", { class: "mono" }, a.actor),
      el("td", {}, el("code", {}, a.action)),
      el("td", { class: "mono wrap" }, a.subject),
      el("td", {}, a.organization_id || el("span", { class: "muted" }, "cluster")),
      el("td", { class: "wrap" }, el("code", { class: "detail" }, JSON.stringify(a.detail)))),
  });
  root.append(list.holder);
  await list.load();
}

// ---------- not found ----------

async function notFoundPage(ctx, root) {
  setTitle("Not found");
  root.append(el("h1", {}, "Not found"), el("p", {}, "There is no such page. ", el("a", { href: "/" }, "Go to the overview.")));
}

// ---------- start ----------

// Same-site links are handled here so the page is not reloaded; a modified click (new tab) and
// API links (Raw log) stay ordinary.
document.addEventListener("click", (event) => {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const link = event.target.closest("a[href]");
  if (!link || link.target || link.hasAttribute("download")) return;
  const href = link.getAttribute("href");
  if (!href.startsWith("/") || href.startsWith("//") || href.startsWith("/api/")) return;
  event.preventDefault();
  const url = new URL(href, location.href);
  if (url.pathname === location.pathname && url.search === location.search && url.hash) {
    const target = document.getElementById(url.hash.slice(1));
    if (target) target.scrollIntoView();
    return;
  }
  navigate(href);
});

// ---------- keyboard ----------

// Shortcuts, listed by "?". A key typed into a field belongs to the field (Escape leaves it);
// none of them changes a job, so a stray key press can do no harm.
const GO_TO = { o: "/", j: "/jobs", r: "/runners", w: "/workloads", k: "/keys", n: "/kinds", t: "/tokens", g: "/organizations", a: "/audit" };
const SHORTCUTS = [
  ["?", "Show these shortcuts"],
  ["/", "Search: the job id on the jobs page, the log on a job's page, the thread on the workloads page"],
  ["j / k", "Next / previous row of a table"],
  ["g then o, j, r, w, k, n", "Go to the overview, jobs, runners, workloads, keys, kinds"],
  ["g then t, g, a", "Go to tokens, organizations, the audit log (admins)"],
  ["f", "Follow the log on or off (job page)"],
  ["e", "Jump to the log's first error (job page)"],
  ["Escape", "Leave a field, close this list"],
];
let goStartedAt = 0;

function shortcutsDialog() {
  let dialog = document.getElementById("shortcuts");
  if (dialog) return dialog;
  const close = el("button", { type: "button", class: "secondary" }, "Close");
  dialog = el("dialog", { id: "shortcuts", "aria-labelledby": "h-shortcuts", dataset: { testid: "shortcuts" } },
    el("h2", { id: "h-shortcuts" }, "Keyboard shortcuts"),
    el("dl", { class: "facts shortcuts" }, SHORTCUTS.map(([keys, what]) => [el("dt", {}, el("kbd", {}, keys)), el("dd", {}, what)])),
    close);
  close.addEventListener("click", () => dialog.close());
  document.body.append(dialog);
  return dialog;
}

// Move the focus to the first link or control of the next (step 1) or previous (-1) row of the
// page's first table with links, starting at the top when no row has it.
function moveRowFocus(step) {
  const rows = [...main().querySelectorAll("tbody tr")].filter((row) => row.querySelector("a[href], button, input"));
  if (!rows.length) return;
  const current = rows.findIndex((row) => row.contains(document.activeElement));
  const next = current < 0 ? (step > 0 ? 0 : rows.length - 1) : Math.min(rows.length - 1, Math.max(0, current + step));
  const target = rows[next].querySelector("a[href]") || rows[next].querySelector("button, input");
  target.focus();
  target.scrollIntoView({ block: "nearest" });
}

document.addEventListener("keydown", (event) => {
  if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey || event.isComposing) return;
  const target = event.target;
  if (target instanceof Element && target.closest("input:not([type=checkbox]):not([type=radio]), textarea, select, [contenteditable]")) {
    if (event.key === "Escape") target.blur();
    return;
  }
  if (!me || document.querySelector("dialog[open]")) return;
  const key = event.key;
  const going = goStartedAt && Date.now() - goStartedAt < 1500;
  goStartedAt = 0;
  if (going) {
    const link = GO_TO[key] && document.querySelector(`#nav a[href="${GO_TO[key]}"]`);
    if (link && !link.closest("[hidden]")) {
      event.preventDefault();
      navigate(GO_TO[key]);
    }
    return;
  }
  if (key === "g") { goStartedAt = Date.now(); return; }
  if (key === "?") { event.preventDefault(); shortcutsDialog().showModal(); return; }
  if (key === "j" || key === "k") { event.preventDefault(); moveRowFocus(key === "j" ? 1 : -1); return; }
  const control = main().querySelector(`[data-shortcut="${CSS.escape(key)}"]`);
  if (!control || control.disabled) return;
  event.preventDefault();
  if (key === "/") { control.focus(); control.select(); } else control.click();
});

window.addEventListener("popstate", () => render(true));
document.getElementById("sign-out").addEventListener("click", signOut);
document.getElementById("show-shortcuts").addEventListener("click", () => shortcutsDialog().showModal());
render(false);
