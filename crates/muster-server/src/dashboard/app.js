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
const PENDING_REASONS = {
  no_runner_for_kind: "no runner takes this kind of job",
  requirements_unmet: "no runner meets the job's requirements",
  scheduled: "scheduled for later (run_after or retry backoff)",
};
const MAX_LOG_LINES = 5000;
const MAX_DAG_DRAWN = 200;
const OVERVIEW_REFRESH_MS = 5000;
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

function jobsTable(jobs, label) {
  const rows = jobs.map((job) => el("tr", {},
    el("td", {}, jobLink(job.id)),
    el("td", {}, job.kind),
    el("td", {}, badge(job.state)),
    el("td", { class: "num" }, `${job.attempt}/${job.max_attempts}`),
    el("td", {}, runnerLink(job.runner_id)),
    el("td", {}, timeEl(job.created_at)),
    el("td", {}, timeEl(job.finished_at))));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "7", class: "muted" }, "No jobs.")));
  return tableWrap(label, table(["Job", "Kind", "State", "Attempt", "Runner", "Created", "Finished"], rows, label));
}

// ---------- overview ----------

async function overviewPage(ctx, root) {
  setTitle("Overview");
  root.append(el("h1", {}, "Overview"));
  const body = el("div", { class: "overview" });
  root.append(body);
  let timer = null;
  const load = async () => {
    const [jobs, runners, pending] = await Promise.all([
      api("GET", "/jobs?limit=10"),
      api("GET", "/runners?limit=1000"),
      api("GET", "/jobs?state=pending&limit=200"),
    ]);
    if (!ctx.alive) return;
    clear(body);
    body.append(
      el("section", { "aria-labelledby": "h-runners", class: "card" },
        el("h2", { id: "h-runners" }, "Runners"), runnerSummary(runners)),
      el("section", { "aria-labelledby": "h-pending", class: "card" },
        el("h2", { id: "h-pending" }, "Oldest pending job"), oldestPending(pending)),
      el("section", { "aria-labelledby": "h-newest", class: "wide" },
        el("h2", { id: "h-newest" }, "Newest jobs"),
        jobsTable(jobs.items, "Newest jobs"),
        el("p", {}, el("a", { href: "/jobs" }, "All jobs"))));
  };
  await load();
  // Refresh while the tab is visible; a hidden tab costs the coordinator nothing.
  const tick = async () => {
    timer = null;
    if (!ctx.alive) return;
    if (!document.hidden) {
      try { await load(); } catch (error) { if (!error.handled && ctx.alive) showTransient(body, error.message); }
    }
    if (ctx.alive) timer = setTimeout(tick, OVERVIEW_REFRESH_MS);
  };
  timer = setTimeout(tick, OVERVIEW_REFRESH_MS);
  ctx.cleanups.push(() => clearTimeout(timer));
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
  const reason = job.pending_reason ? PENDING_REASONS[job.pending_reason] || job.pending_reason : "waiting for a runner to claim it";
  return el("div", {},
    el("p", {}, jobLink(job.id), ` (${job.kind}), created `, timeEl(job.created_at)),
    el("p", {}, "Why: ", reason),
    list.next_cursor ? el("p", { class: "muted" }, "More than 200 jobs are pending; this is the oldest of the newest 200.") : null);
}

// ---------- jobs list ----------

async function jobsPage(ctx, root) {
  setTitle("Jobs");
  const query = new URLSearchParams(location.search);
  const state = query.get("state") || "";
  const kind = query.get("kind") || "";
  const cursor = query.get("cursor") || "";
  root.append(el("h1", {}, "Jobs"));

  const stateSelect = el("select", { id: "f-state", name: "state" },
    el("option", { value: "" }, "any"),
    STATES.map((s) => el("option", { value: s, selected: s === state }, s)));
  const kindInput = el("input", { id: "f-kind", name: "kind", type: "text", value: kind, autocomplete: "off" });
  const filter = el("form", { class: "inline-form", "aria-label": "Filter jobs" },
    el("div", {}, el("label", { for: "f-state" }, "State"), stateSelect),
    el("div", {}, el("label", { for: "f-kind" }, "Kind"), kindInput),
    el("button", { type: "submit" }, "Filter"));
  filter.addEventListener("submit", (event) => {
    event.preventDefault();
    const q = new URLSearchParams();
    if (stateSelect.value) q.set("state", stateSelect.value);
    if (kindInput.value.trim()) q.set("kind", kindInput.value.trim());
    navigate("/jobs" + (q.toString() ? "?" + q : ""));
  });

  const idInput = el("input", { id: "f-id", name: "id", type: "search", class: "mono", autocomplete: "off", placeholder: "0190…" });
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

  const q = new URLSearchParams({ limit: "50" });
  if (state) q.set("state", state);
  if (kind) q.set("kind", kind);
  if (cursor) q.set("cursor", cursor);
  const list = await api("GET", "/jobs?" + q);
  if (!ctx.alive) return;
  root.append(jobsTable(list.items, "Jobs"));

  // Keyset pagination: the cursor goes into the URL so Back returns to the previous page.
  const pager = el("div", { class: "pager" });
  if (cursor) {
    const first = new URLSearchParams(query);
    first.delete("cursor");
    pager.append(el("a", { href: "/jobs" + (first.toString() ? "?" + first : "") }, "First page"));
  }
  if (list.next_cursor) {
    const next = new URLSearchParams(query);
    next.set("cursor", list.next_cursor);
    pager.append(el("button", { type: "button", class: "secondary", on: { click: () => navigate("/jobs?" + next) } }, "Next page"));
  }
  root.append(pager);
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

  const log = logPanel(ctx, id);
  const dag = dagPanel(ctx, id);
  view.node.append(dag.node, log.node);
  view.onChange = () => dag.refreshSoon();
  dag.refreshSoon();
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
    container.append(el("p", { class: "note" }, "Pending: ", PENDING_REASONS[job.pending_reason] || job.pending_reason));
  }
  if (job.error) {
    container.append(el("div", { class: "job-error" },
      el("h2", {}, "Error"),
      el("p", {}, el("strong", {}, job.error.reason), ": ", job.error.message)));
  }
  const json = (title, key, value) => el("details", { dataset: { key }, open: open.has(key) },
    el("summary", {}, title),
    el("pre", { class: "json", tabindex: "0" }, JSON.stringify(value, null, 2)));
  container.append(json("Payload", "payload", job.payload));
  if (job.result !== null && job.result !== undefined) container.append(json("Result", "result", job.result));
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

function ansiSpans(text) {
  const out = [];
  let fg = null;
  let bold = false;
  let last = 0;
  const push = (chunk) => {
    chunk = chunk.replace(CONTROL_RE, "");
    if (!chunk) return;
    if (!fg && !bold) { out.push(chunk); return; }
    const classes = [];
    if (fg) classes.push(`ansi-${fg}`);
    if (bold) classes.push("ansi-bold");
    out.push(el("span", { class: classes.join(" ") }, chunk));
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

function logPanel(ctx, id) {
  const status = el("span", { class: "muted", "aria-live": "polite", dataset: { testid: "log-status" } }, "Connecting…");
  const follow = el("input", { type: "checkbox", id: "log-follow", checked: true });
  const note = el("p", { class: "note", hidden: true }, "older lines hidden");
  const lines = el("div", { class: "log", role: "region", "aria-label": "Log", tabindex: "0", dataset: { testid: "log" } });
  const node = el("section", { class: "panel", "aria-labelledby": "h-log" },
    el("div", { class: "panel-head" },
      el("h2", { id: "h-log" }, "Log"),
      el("label", { class: "check" }, follow, " Follow"),
      el("a", { href: `${API}/jobs/${encodeURIComponent(id)}/logs?limit=1000` }, "Raw"),
      status),
    note,
    lines);
  let lastSeq = -1; // entries are numbered from 0
  let count = 0;
  let scrollQueued = false;
  let programmatic = false;

  lines.addEventListener("scroll", () => {
    if (programmatic) { programmatic = false; return; }
    const atBottom = lines.scrollTop + lines.clientHeight >= lines.scrollHeight - 4;
    if (!atBottom) follow.checked = false;
  });
  follow.addEventListener("change", () => { if (follow.checked) scrollToEnd(); });
  function scrollToEnd() {
    if (lines.scrollTop + lines.clientHeight < lines.scrollHeight) {
      programmatic = true;
      lines.scrollTop = lines.scrollHeight;
    }
  }

  const add = (entry) => {
    // Never show an entry twice: a resumed stream may repeat the last one.
    if (typeof entry.seq !== "number" || entry.seq <= lastSeq) return;
    lastSeq = entry.seq;
    const level = ["trace", "debug", "info", "warn", "error"].includes(entry.level) ? entry.level : "info";
    lines.append(el("div", { class: `log-line level-${level}`, dataset: { testid: "log-line", seq: String(entry.seq) } },
      el("span", { class: "log-ts", title: entry.ts }, clockTime(entry.ts)),
      el("span", { class: "log-level" }, level),
      el("span", { class: "log-msg" }, ansiSpans(String(entry.message)))));
    count += 1;
    // A bounded DOM for now; a virtualized viewer that can page back through the whole log
    // comes later.
    if (count > MAX_LOG_LINES) {
      lines.firstElementChild.remove();
      count -= 1;
      note.hidden = false;
    }
    if (follow.checked && !scrollQueued) {
      scrollQueued = true;
      requestAnimationFrame(() => { scrollQueued = false; if (follow.checked) scrollToEnd(); });
    }
  };

  const base = `${API}/jobs/${encodeURIComponent(id)}/logs`;
  const stream = openStream(ctx, base, { log: add }, {
    reopenUrl: () => (lastSeq >= 0 ? `${base}?after_seq=${lastSeq}` : base),
    onStatus: (what, message) => {
      status.textContent = what === "open" ? "Live" : what === "failed" ? "Log stream failed: " + message : "Reconnecting…";
    },
    onEnd: () => {
      status.textContent = count ? "End of log" : "End of log (empty)";
    },
  });
  ctx.cleanups.push(() => stream.close());
  return { node };
}

// ---------- DAG panel ----------

function dagPanel(ctx, id) {
  const body = el("div", { class: "dag-body" });
  const node = el("section", { class: "panel", "aria-labelledby": "h-dag", dataset: { testid: "dag" } },
    el("h2", { id: "h-dag" }, "Steps"), body);
  let timer = null;
  let again = false;
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
  const refreshSoon = () => {
    if (timer) { again = true; return; }
    fetchDag();
    timer = setTimeout(function done() {
      timer = null;
      if (again && ctx.alive) { again = false; refreshSoon(); }
    }, 1000);
  };
  ctx.cleanups.push(() => clearTimeout(timer));
  return { node, refreshSoon };
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
      el("td", {}, el("span", { title: r.id }, r.name), r.hostname ? el("div", { class: "muted small-text" }, r.hostname) : null),
      el("td", {}, el("span", { class: `badge runner-${["online", "offline", "draining"].includes(r.status) ? r.status : "other"}` }, r.status)),
      el("td", {}, r.enrollment || "enrolled"),
      el("td", {}, (r.kinds || []).join(", ") || "—"),
      el("td", {}, labels || "—"),
      el("td", { class: "num" }, String(r.running_jobs)),
      el("td", {}, timeEl(r.last_heartbeat_at)),
      operator ? el("td", { class: "actions" }, buttons) : null);
  });
  const columns = ["Name", "Status", "Enrollment", "Kinds", "Labels", "Running jobs", "Last heartbeat"];
  if (operator) columns.push("Actions");
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: String(columns.length), class: "muted" }, "No runners.")));
  return tableWrap("Runners", table(columns, rows, "Runners"));
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

window.addEventListener("popstate", () => render(true));
document.getElementById("sign-out").addEventListener("click", signOut);
render(false);
