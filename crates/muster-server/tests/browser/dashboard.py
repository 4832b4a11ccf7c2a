"""Browser test of the muster dashboard (Playwright, sync API).

Run by the Rust test harness as `python dashboard.py` against a running coordinator with an
`exec` runner (concurrency 2) attached. It reads:

  MUSTER_URL               the coordinator, e.g. http://127.0.0.1:PORT
  MUSTER_ADMIN_TOKEN       the bootstrap admin token
  MUSTER_VIEWER_TOKEN      a viewer user token (every organization)
  MUSTER_OPERATOR_TOKEN    an operator user token (every organization)
  MUSTER_DAG_RUNNER_TOKEN  a runner token; this script plays that runner for kind `graph`
  MUSTER_CHROMIUM          the chromium binary
  MUSTER_AXE_JS            axe-core's axe.min.js
  MUSTER_SCREENSHOT_DIR    where the PNGs go

It prints "ok: ..." per step; at the first failure it prints "FAIL: ..." with what was
expected and what was seen, and exits 1 (the exception propagates).
"""

import json
import os
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from playwright.sync_api import expect, sync_playwright

BASE = os.environ["MUSTER_URL"].rstrip("/")
ADMIN = os.environ["MUSTER_ADMIN_TOKEN"]
VIEWER = os.environ["MUSTER_VIEWER_TOKEN"]
OPERATOR = os.environ["MUSTER_OPERATOR_TOKEN"]
DAG_RUNNER = os.environ["MUSTER_DAG_RUNNER_TOKEN"]
CHROMIUM = os.environ["MUSTER_CHROMIUM"]
AXE_JS = os.environ["MUSTER_AXE_JS"]
SHOTS = os.environ["MUSTER_SCREENSHOT_DIR"]

TIMEOUT_MS = 20_000  # the longest any single expectation waits
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
# Short leases make the exec runner heartbeat often, so a cancel reaches it quickly.
SHORT_LEASE_S = 6

expect.set_options(timeout=TIMEOUT_MS)


class Failure(AssertionError):
    pass


def check(condition, expected, seen):
    if not condition:
        raise Failure(f"expected {expected}; saw {seen}")


# ---------- the API, with the stdlib ----------

def api(method, path, body=None, token=ADMIN, headers=None):
    """Call the API; answer (status, parsed JSON or None). Never raises on an HTTP status."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(BASE + "/api/v1" + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    return status, (json.loads(raw) if raw else None)


def api_ok(method, path, body=None, token=ADMIN, headers=None, want=(200, 201, 204)):
    status, answer = api(method, path, body, token, headers)
    check(status in want, f"{method} {path} to answer {want}", f"{status} {answer}")
    return answer


def submit_exec(script, **extra):
    body = {"kind": "exec", "payload": {"command": ["sh", "-c", script]}}
    body.update(extra)
    return api_ok("POST", "/jobs", body)["id"]


def job_state(job_id):
    return api_ok("GET", f"/jobs/{job_id}")["state"]


def cancel_quietly(job_id):
    # Frees the exec runner; a job already finished answers 409, which is fine here.
    api("POST", f"/jobs/{job_id}/cancel")


# ---------- a TCP proxy whose connections can be cut ----------

class CuttingProxy:
    """Forwards 127.0.0.1:<port> to the coordinator; cut() closes every open connection."""

    def __init__(self, target_host, target_port):
        self.target = (target_host, target_port)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.pairs = []
        self.lock = threading.Lock()
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pump(source, sink):
        try:
            while True:
                chunk = source.recv(65536)
                if not chunk:
                    break
                sink.sendall(chunk)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for pair in pairs:
            for sock in pair:
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the pump blocked in recv
                except OSError:
                    pass
                sock.close()
        self.cuts += len(pairs)
        return len(pairs)

    def close(self):
        self.listener.close()
        self.cut()


# ---------- browser helpers ----------

def shot(page, name, full_page=True):
    page.screenshot(path=os.path.join(SHOTS, name), full_page=full_page)


def new_context(browser, base_url=BASE, **options):
    options.setdefault("viewport", DESKTOP)
    return browser.new_context(base_url=base_url, **options)


def sign_in(context, token):
    page = context.new_page()
    page.goto("/sign-in")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("whoami")).to_be_visible()
    return page


def open_page(page, path):
    """Go to a dashboard page and wait until its data is drawn (main[data-ready])."""
    page.goto(path)
    page.wait_for_selector("main[data-ready]", timeout=TIMEOUT_MS)


def log_line(page, message):
    return page.locator('[data-testid="log-line"] .log-msg').get_by_text(message, exact=True)


def log_messages(page):
    return page.locator('[data-testid="log-line"] .log-msg').all_text_contents()


def log_seqs(page):
    return [int(s) for s in page.locator('[data-testid="log-line"]').evaluate_all(
        "lines => lines.map(l => l.dataset.seq)")]


def wait_log_end(page):
    expect(page.get_by_test_id("log-status")).to_have_text(re.compile(r"^End of log"))


def expect_exact_lines(page, prefix, count):
    """The log shows `prefix 1` .. `prefix count` in order, each once, and nothing is doubled."""
    wanted = [f"{prefix} {i}" for i in range(1, count + 1)]
    # The runner may add lines of its own; only the command's output is compared.
    seen = [m for m in log_messages(page) if re.fullmatch(rf"{re.escape(prefix)} \d+", m)]
    check(seen == wanted, f"log lines {wanted[0]}..{wanted[-1]} in order, once each", seen)
    seqs = log_seqs(page)
    check(seqs == sorted(set(seqs)), "strictly increasing data-seq", seqs)


def state_el(page):
    return page.get_by_test_id("job-state")


# ---------- steps ----------

def step_sign_in(browser):
    context = new_context(browser)
    page = context.new_page()
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/sign-in"))
    expect(page).to_have_title(re.compile("Sign in"))
    page.get_by_label("Token").fill("muster_user_not_a_real_token_000000000000000")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_be_visible()
    expect(page.get_by_role("alert")).not_to_have_text("")
    shot(page, "sign-in.png")
    page.get_by_label("Token").fill(ADMIN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("whoami")).to_contain_text("admin")
    expect(page.get_by_test_id("whoami")).to_contain_text("all organizations")
    expect(page).to_have_url(BASE + "/")
    page.wait_for_selector("main[data-ready]")
    expect(page.locator('nav a[aria-current="page"]')).to_have_text("Overview")
    shot(page, "overview.png")
    open_page(page, "/jobs")
    shot(page, "jobs.png")
    print("ok: sign-in (wrong token refused, admin signed in, role shown)")
    return context, page


def step_live_job(page):
    # 0.3 s between lines leaves time to see line 5 while the job still runs.
    job_id = submit_exec('for i in $(seq 1 30); do echo "line $i"; sleep 0.3; done')
    open_page(page, f"/jobs/{job_id}")
    page.evaluate("window.__noReload = 1")
    expect(state_el(page)).to_have_text("running")
    expect(log_line(page, "line 5")).to_be_visible()
    check(state_el(page).text_content() == "running", "state still running when line 5 shows",
          state_el(page).text_content())
    shot(page, "job-running.png")
    expect(state_el(page)).to_have_text("completed")
    wait_log_end(page)
    check(page.evaluate("window.__noReload") == 1, "no page reload (window.__noReload still 1)",
          page.evaluate("window.__noReload"))
    expect_exact_lines(page, "line", 30)
    shot(page, "job-completed.png")
    print(f"ok: live job {job_id}: running -> completed without reload, 30 log lines live")
    return job_id


def step_connection_kill(browser):
    target = urllib.parse.urlsplit(BASE)
    proxy = CuttingProxy(target.hostname, target.port)
    context = new_context(browser, base_url=f"http://127.0.0.1:{proxy.port}")
    try:
        page = sign_in(context, ADMIN)
        job_id = submit_exec('for i in $(seq 1 40); do echo "tick $i"; sleep 0.15; done')
        open_page(page, f"/jobs/{job_id}")
        expect(log_line(page, "tick 5")).to_be_visible()
        cut = proxy.cut()
        time.sleep(1)
        cut += proxy.cut()
        check(cut > 0, "open proxied connections to cut", cut)
        expect(state_el(page)).to_have_text("completed")
        wait_log_end(page)
        expect_exact_lines(page, "tick", 40)
        print(f"ok: connection kill: {cut} connections cut, log tick 1..40 with no gap or double")
    finally:
        context.close()
        proxy.close()


def step_cancel(operator_page):
    job_id = submit_exec("sleep 60", lease_ttl_s=SHORT_LEASE_S)
    try:
        open_page(operator_page, f"/jobs/{job_id}")
        expect(state_el(operator_page)).to_have_text("running")
        operator_page.get_by_test_id("cancel").click()
        expect(state_el(operator_page)).to_have_text("cancelled")
        state = job_state(job_id)
        check(state == "cancelled", "the API to say cancelled", state)
        deadline = time.monotonic() + 10
        while True:
            runners = api_ok("GET", "/runners?limit=1000")["items"]
            busy = {r["name"]: r["running_jobs"] for r in runners if r["running_jobs"]}
            if not busy:
                break
            check(time.monotonic() < deadline, "no runner with running jobs within 10 s", busy)
            time.sleep(0.5)
        print(f"ok: cancel {job_id} from the page; the runner let it go")
    finally:
        cancel_quietly(job_id)


def step_roles(viewer_page, operator_page):
    job_id = submit_exec("sleep 30", lease_ttl_s=SHORT_LEASE_S)
    try:
        open_page(viewer_page, f"/jobs/{job_id}")
        expect(state_el(viewer_page)).to_have_text("running")
        expect(viewer_page.get_by_test_id("cancel")).to_have_count(0)
        expect(viewer_page.get_by_test_id("retry")).to_have_count(0)
        open_page(operator_page, f"/jobs/{job_id}")
        expect(operator_page.get_by_test_id("cancel")).to_be_visible()

        call = """async ([id, withCsrf]) => {
            const headers = {};
            if (withCsrf) {
                const c = document.cookie.split(';').map(s => s.trim())
                    .find(s => s.startsWith('muster_csrf='));
                headers['X-CSRF-Token'] = c ? decodeURIComponent(c.slice('muster_csrf='.length)) : '';
            }
            const r = await fetch(`/api/v1/jobs/${id}/cancel`,
                {method: 'POST', headers, credentials: 'same-origin'});
            let code = null;
            try { code = (await r.json()).error.code; } catch (e) {}
            return {status: r.status, code};
        }"""
        bare = viewer_page.evaluate(call, [job_id, False])
        check(bare == {"status": 403, "code": "csrf_check_failed"},
              "403 csrf_check_failed without the CSRF header", bare)
        with_csrf = viewer_page.evaluate(call, [job_id, True])
        check(with_csrf == {"status": 403, "code": "forbidden"},
              "403 forbidden for a viewer with the CSRF header", with_csrf)
        state = job_state(job_id)
        check(state == "running", "the job still running after the viewer's attempts", state)
        print("ok: roles: viewer has no Cancel and is refused (csrf, forbidden); operator has Cancel")
    finally:
        cancel_quietly(job_id)


def dag_body(statuses):
    labels = {"a": "fetch", "b": "build", "c": "lint", "d": "publish"}
    return {
        "nodes": [{"id": k, "label": labels[k], "status": s} for k, s in statuses.items()],
        "edges": [{"from": "a", "to": "b"}, {"from": "a", "to": "c"},
                  {"from": "b", "to": "d"}, {"from": "c", "to": "d"}],
    }


def step_dag(page):
    job_id = api_ok("POST", "/jobs", {"kind": "graph", "payload": {}})["id"]
    # Play the graph runner: long-poll claims until this job is handed out.
    deadline = time.monotonic() + 30
    claimed = None
    while claimed is None:
        check(time.monotonic() < deadline, f"to claim graph job {job_id} within 30 s", "no claim")
        status, answer = api("POST", "/runner/claim",
                             {"kinds": ["graph"], "max_jobs": 1, "wait_ms": 5000}, token=DAG_RUNNER)
        check(status in (200, 204), "claim to answer 200 or 204", f"{status} {answer}")
        for job in (answer or {}).get("jobs", []):
            if job["id"] == job_id:
                claimed = job
    lease = {"Muster-Lease-Epoch": str(claimed["lease"]["epoch"])}

    def sync(statuses):
        api_ok("PUT", f"/runner/jobs/{job_id}/dag", dag_body(statuses), token=DAG_RUNNER, headers=lease)

    sync({"a": "completed", "b": "running", "c": "pending", "d": "pending"})
    open_page(page, f"/jobs/{job_id}")
    page.evaluate("window.__noReload = 1")
    nodes = page.get_by_test_id("dag-node")
    expect(nodes).to_have_count(4)
    expect(page.locator('[data-testid="dag-node"][data-id="b"]')).to_have_attribute("data-status", "running")
    expect(page.get_by_test_id("dag").get_by_role("listitem").first).to_have_text("fetch: completed")

    sync({"a": "completed", "b": "completed", "c": "pending", "d": "running"})
    expect(page.locator('[data-testid="dag-node"][data-id="b"]')).to_have_attribute("data-status", "completed")
    expect(page.locator('[data-testid="dag-node"][data-id="d"]')).to_have_attribute("data-status", "running")
    check(page.evaluate("window.__noReload") == 1, "the DAG to update without reload",
          page.evaluate("window.__noReload"))
    shot(page, "job-dag.png")

    api_ok("POST", f"/runner/jobs/{job_id}/complete", {"result": {"steps": 4}},
           token=DAG_RUNNER, headers=lease)
    expect(state_el(page)).to_have_text("completed")
    print(f"ok: DAG of job {job_id}: 4 nodes drawn, updated live")
    return job_id


def step_runners(page):
    runners = api_ok("GET", "/runners?limit=1000")["items"]
    check(len(runners) >= 2, "at least the exec runner and the graph runner", [r["name"] for r in runners])
    open_page(page, "/runners")
    rows = page.locator("main tbody tr")
    expect(rows).to_have_count(len(runners))
    for runner in runners:
        expect(page.locator("main tbody").get_by_text(runner["name"], exact=True)).to_be_visible()
    shot(page, "runners.png")
    print(f"ok: runners page lists {len(runners)} runners")


def step_axe(browser, job_ids):
    # axe is injected as a script, which the dashboard's CSP would refuse: bypass it here only.
    context = new_context(browser, bypass_csp=True)
    try:
        page = context.new_page()
        page.goto("/sign-in")
        page.wait_for_selector("main[data-ready]")
        audit(page, "/sign-in")
        page.get_by_label("Token").fill(ADMIN)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_test_id("whoami")).to_be_visible()
        paths = ["/", "/jobs", "/runners"] + [f"/jobs/{j}" for j in job_ids]
        for path in paths:
            open_page(page, path)
            if path.startswith("/jobs/"):
                wait_log_end(page)
            audit(page, path)
        print(f"ok: axe-core: no serious or critical violation on {len(paths) + 1} pages")
    finally:
        context.close()


def audit(page, path):
    page.add_script_tag(path=AXE_JS)
    result = page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
    bad = [v for v in result["violations"] if v.get("impact") in ("serious", "critical")]
    details = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:5]}"
        for v in bad
    ]
    check(not bad, f"no serious or critical axe violation on {path}", "; ".join(details))


def step_keyboard(browser, job_id):
    """The shortcuts: "?" lists them, "g j" goes to the jobs, "/" finds the search field, "j"
    moves along the rows and Enter opens one, "f" turns following the log off; a viewer's "g t"
    goes nowhere, since tokens are not theirs to see."""
    context = new_context(browser)
    page = sign_in(context, ADMIN)
    open_page(page, "/")
    page.keyboard.press("?")
    dialog = page.get_by_test_id("shortcuts")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("heading", name="Keyboard shortcuts")).to_be_visible()
    shot(page, "shortcuts.png", full_page=False)
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    page.keyboard.press("g")
    page.keyboard.press("j")
    expect(page).to_have_url(re.compile(r"/jobs$"))
    page.wait_for_selector("main[data-ready]", timeout=TIMEOUT_MS)
    page.keyboard.press("/")
    expect(page.locator("#f-id")).to_be_focused()
    page.keyboard.type("j")
    check(page.url.endswith("/jobs"), "a key typed into a field stays in the field", page.url)
    page.keyboard.press("Escape")
    page.keyboard.press("j")
    first_row_link = page.locator("main tbody tr").first.locator("a[href]").first
    expect(first_row_link).to_be_focused()
    page.keyboard.press("j")
    second_row_link = page.locator("main tbody tr").nth(1).locator("a[href]").first
    expect(second_row_link).to_be_focused()
    page.keyboard.press("k")
    expect(first_row_link).to_be_focused()
    href = first_row_link.get_attribute("href")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(re.escape(href) + "$"))
    page.wait_for_selector("main[data-ready]", timeout=TIMEOUT_MS)
    follow = page.locator("#log-follow")
    expect(follow).to_be_checked()
    page.keyboard.press("f")
    expect(follow).not_to_be_checked()
    page.keyboard.press("/")
    expect(page.locator("#log-q")).to_be_focused()
    context.close()

    viewer = new_context(browser)
    viewer_page = sign_in(viewer, VIEWER)
    open_page(viewer_page, "/jobs")
    viewer_page.keyboard.press("g")
    viewer_page.keyboard.press("t")
    viewer_page.wait_for_timeout(300)
    check(viewer_page.url.endswith("/jobs"), "a viewer's g t stays put (no tokens page for them)", viewer_page.url)
    viewer.close()
    print("ok: keyboard shortcuts: ?, g j, /, j/k, Enter, f; a viewer's g t goes nowhere")


def step_phone_and_dark(browser, job_id):
    phone = new_context(browser, viewport=PHONE, is_mobile=True, has_touch=True)
    try:
        page = sign_in(phone, ADMIN)
        open_page(page, "/jobs")
        width = page.evaluate("document.documentElement.scrollWidth")
        check(width <= PHONE["width"] + 1, "no horizontal page scroll on a phone (tables scroll inside)", width)
        shot(page, "jobs-phone.png")
    finally:
        phone.close()
    dark = new_context(browser, color_scheme="dark")
    try:
        page = sign_in(dark, ADMIN)
        open_page(page, f"/jobs/{job_id}")
        wait_log_end(page)
        shot(page, "job-dark.png")
    finally:
        dark.close()
    print("ok: phone-sized jobs page and dark theme screenshots")


# ---------- the admin pages and the attempt timeline ----------

NEW_PAGES = ["keys", "kinds", "tokens", "organizations", "audit"]


def watch_csp(page):
    """Collects the console's CSP refusals (an inline style or script the page tried)."""
    refusals = []
    page.on("console", lambda m: refusals.append(m.text) if "Content Security Policy" in m.text else None)
    return refusals


def step_admin_pages(page):
    for name in NEW_PAGES:
        open_page(page, f"/{name}")
        expect(page.locator(f'nav a[data-nav="{name}"]')).to_have_attribute("aria-current", "page")
        expect(page.locator("main h1")).to_be_visible()
        expect(page.locator("main [role=alert]")).to_have_count(0)
        shot(page, f"{name}.png")
    print(f"ok: admin pages {', '.join(NEW_PAGES)} drawn without error")


def step_kinds(page):
    open_page(page, "/kinds")
    form = page.get_by_test_id("kind-form")
    form.get_by_label("Kind", exact=True).fill("dash-kind")
    form.get_by_label("Result schema (JSON)").fill("{not json")
    form.get_by_role("button", name="Save rules").click()
    expect(page.get_by_role("alert")).to_contain_text("not valid JSON")
    form.get_by_label("Result schema (JSON)").fill('{"type":"object"}')
    form.get_by_role("button", name="Save rules").click()
    row = page.locator('[data-testid="kind-row"][data-kind="dash-kind"]')
    expect(row).to_be_visible()
    settings = api_ok("GET", "/kinds/dash-kind")
    check(settings["result_schema"] == {"type": "object"}, "the schema saved as sent", settings)
    row.get_by_test_id("kind-delete").click()  # the confirm() is accepted by the page's dialog handler
    expect(row).to_have_count(0)
    print("ok: kinds: rules for dash-kind set through the form (bad JSON refused in the page), then deleted")


def step_tokens(browser, page):
    open_page(page, "/tokens")
    form = page.get_by_test_id("token-form")
    form.get_by_label("Name", exact=True).fill("dash viewer")
    form.get_by_label("Role", exact=True).select_option("viewer")
    form.get_by_role("button", name="Mint token").click()
    value = page.get_by_test_id("new-token-value")
    expect(value).to_have_text(re.compile(r"^muster_user_\S+$"))
    expect(page.get_by_test_id("new-token")).to_contain_text("shown this once")
    token = value.text_content()
    row = page.locator('[data-testid="token-row"][data-name="dash viewer"]')
    expect(row).to_have_count(1)
    other = new_context(browser)
    try:
        other_page = sign_in(other, token)
        expect(other_page.get_by_test_id("whoami")).to_contain_text("· viewer ·")
        row.get_by_test_id("token-revoke").click()
        expect(row).to_have_count(0)
        other_page.reload()
        expect(other_page).to_have_url(re.compile(r"/sign-in"))
        expect(other_page.get_by_label("Token")).to_be_visible()
    finally:
        other.close()
    print("ok: tokens: a viewer token minted in the page, shown once, signed in with, revoked; its session ended")


def step_audit(page):
    open_page(page, "/audit")
    expect(page.locator('[data-testid="audit-row"][data-action="session.opened"]').first).to_be_visible()
    page.get_by_test_id("audit-filter").get_by_label("Action").fill("user_token.created")
    page.get_by_test_id("audit-filter").get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"/audit\?action=user_token\.created$"))
    page.wait_for_selector("main[data-ready]")
    rows = page.get_by_test_id("audit-row")
    expect(rows.first).to_be_visible()
    actions = rows.evaluate_all("rows => rows.map(r => r.dataset.action)")
    check(actions and all(a == "user_token.created" for a in actions),
          "only user_token.created entries after the filter", actions)
    print(f"ok: audit: session.opened listed; the filter leaves {len(actions)} user_token.created entries only")


def step_workloads(browser):
    """Workloads recorded through the API are listed, filtered by thread and status, and one
    opens with its containers and status history; a deleted runner's workload shows failed."""
    runner = api_ok("POST", "/runners", {"name": "workload-host"})["runner"]["id"]
    containers = [
        {"container_id": "c-agent", "name": "agent", "role": "main", "image": "registry.example/agent:7", "status": "running"},
        {"container_id": "c-proxy", "name": "proxy", "role": "sidecar", "image": "registry.example/proxy:2", "status": "running"},
    ]
    for n in range(3):
        api_ok("POST", "/workloads", {
            "id": f"wl-browser-{n}", "runner_id": runner, "thread_id": "thread-browser" if n < 2 else "thread-other",
            "agent_id": f"agent-{n}", "status": "starting", "containers": containers[:1],
        })
    api_ok("POST", "/workloads/wl-browser-0/status", {"status": "running", "containers": containers})
    api_ok("POST", "/workloads/wl-browser-0/status", {"status": "stopping", "status_reason": "thread closed"})
    context = new_context(browser)
    try:
        page = sign_in(context, ADMIN)
        open_page(page, "/workloads")
        rows = page.get_by_test_id("workload-row")
        expect(rows).to_have_count(3)
        check(rows.first.get_attribute("data-id") == "wl-browser-2", "newest first", rows.first.get_attribute("data-id"))
        expect(rows.first.get_by_test_id("workload-stale")).to_be_visible()
        shot(page, "workloads.png")
        filter_form = page.get_by_test_id("workload-filter")
        filter_form.get_by_label("Thread").fill("thread-browser")
        filter_form.get_by_label("Status").select_option("stopping")
        filter_form.get_by_role("button", name="Filter").click()
        expect(page).to_have_url(re.compile(r"/workloads\?thread_id=thread-browser&status=stopping$"))
        page.wait_for_selector("main[data-ready]", timeout=TIMEOUT_MS)
        expect(rows).to_have_count(1)
        rows.first.get_by_role("link", name="wl-browser-0").click()
        expect(page).to_have_url(re.compile(r"/workloads/wl-browser-0$"))
        page.wait_for_selector("main[data-ready]", timeout=TIMEOUT_MS)
        expect(page.get_by_test_id("container-row")).to_have_count(2)
        expect(page.get_by_test_id("workload-facts")).to_contain_text("thread closed")
        history = page.get_by_test_id("workload-change").locator(".badge").all_text_contents()
        check(history == ["starting", "running", "stopping"], "the history: starting, running, stopping", history)
        expect(page.get_by_test_id("workload-change").last).to_contain_text("thread closed")
        expect(page.get_by_test_id("workload-stale-note")).to_be_visible()
        shot(page, "workload.png")
        api_ok("DELETE", f"/runners/{runner}")
        page.reload()
        page.wait_for_selector("main[data-ready]", timeout=TIMEOUT_MS)
        expect(page.get_by_test_id("workload-facts")).to_contain_text("runner_deleted")
        expect(page.get_by_test_id("workload-status")).to_have_text("failed")
        open_page(page, "/workloads/no-such-workload")
        expect(page.get_by_role("alert")).to_contain_text("not found")
    finally:
        context.close()
    axe_context = new_context(browser, bypass_csp=True)
    try:
        page = sign_in(axe_context, ADMIN)
        for path in ("/workloads", "/workloads/wl-browser-0"):
            open_page(page, path)
            audit(page, path)
    finally:
        axe_context.close()
    print("ok: workloads: listed newest first, filtered by thread and status, containers and history shown; a deleted runner's workload failed; axe clean")


def step_viewer_pages(browser):
    viewer = new_context(browser)
    try:
        page = sign_in(viewer, VIEWER)
        open_page(page, "/keys")
        expect(page.get_by_test_id("key-form")).to_have_count(0)
        expect(page.get_by_test_id("key-remove")).to_have_count(0)
        expect(page.locator('nav a[data-nav="keys"]')).to_be_visible()
        expect(page.locator('nav a[data-nav="kinds"]')).to_be_visible()
        for hidden in ("tokens", "audit", "organizations"):
            expect(page.locator(f'nav a[data-nav="{hidden}"]')).to_be_hidden()
        open_page(page, "/kinds")
        expect(page.get_by_test_id("kind-form")).to_have_count(0)
        expect(page.get_by_test_id("kind-delete")).to_have_count(0)
    finally:
        viewer.close()
    print("ok: viewer: no key or kind forms or buttons; Tokens, Audit, Organizations not in its nav")


def step_attempts(page, completed_job):
    job_id = submit_exec("exit 3", max_attempts=2, backoff_base_s=1)
    open_page(page, f"/jobs/{job_id}")
    expect(state_el(page)).to_have_text("failed")
    attempts = page.get_by_test_id("attempts").get_by_test_id("attempt")
    expect(attempts).to_have_count(2)
    for i in range(2):
        expect(attempts.nth(i)).to_have_attribute("data-outcome", "failed")
        expect(attempts.nth(i)).to_contain_text("the runner reported an error")
    expect(attempts.first).to_contain_text("Attempt 1")
    expect(attempts.nth(1)).to_contain_text("Attempt 2")
    shot(page, "job-attempts.png")
    open_page(page, f"/jobs/{completed_job}")
    wait_log_end(page)
    done = page.get_by_test_id("attempts").get_by_test_id("attempt")
    expect(done).to_have_count(1)
    expect(done.first).to_have_attribute("data-outcome", "completed")
    print(f"ok: attempts: failed job {job_id} shows 2 failed attempts (runner error); completed job shows 1")
    return job_id


def step_new_pages(browser, completed_job):
    context = new_context(browser)
    try:
        page = sign_in(context, ADMIN)
        refusals = watch_csp(page)
        page.on("dialog", lambda dialog: dialog.accept())
        step_admin_pages(page)
        step_kinds(page)
        step_tokens(browser, page)
        step_audit(page)
        step_viewer_pages(browser)
        failed_job = step_attempts(page, completed_job)
        check(not refusals, "no Content-Security-Policy refusal in the console", refusals)
    finally:
        context.close()
    axe_context = new_context(browser, bypass_csp=True)
    try:
        page = sign_in(axe_context, ADMIN)
        paths = [f"/{name}" for name in NEW_PAGES] + [f"/jobs/{failed_job}"]
        for path in paths:
            open_page(page, path)
            if path.startswith("/jobs/"):
                wait_log_end(page)
            audit(page, path)
    finally:
        axe_context.close()
    print(f"ok: axe-core: no serious or critical violation on {len(paths)} more pages")


BIG_LOG_LINES = 20_000


def claim_as_graph_runner(job_id):
    """Long-poll claims with the graph runner's token until `job_id` is handed out."""
    deadline = time.monotonic() + 30
    while True:
        check(time.monotonic() < deadline, f"to claim job {job_id} within 30 s", "no claim")
        status, answer = api("POST", "/runner/claim",
                             {"kinds": ["graph"], "max_jobs": 1, "wait_ms": 5000}, token=DAG_RUNNER)
        check(status in (200, 204), "claim to answer 200 or 204", f"{status} {answer}")
        for job in (answer or {}).get("jobs", []):
            if job["id"] == job_id:
                return {"Muster-Lease-Epoch": str(job["lease"]["epoch"])}


def big_log_line(n):
    if n == 7_777:
        return {"level": "error", "message": f"row {n} \u001b[31mboom\u001b[0m"}
    if n == 15_000:
        return {"level": "info", "message": f"row {n} holds the needle-XYZ"}
    return {"level": "info", "message": f"row {n}"}


def step_big_log(browser):
    job_id = api_ok("POST", "/jobs", {"kind": "graph", "payload": {}})["id"]
    lease = claim_as_graph_runner(job_id)
    for start in range(0, BIG_LOG_LINES, 5_000):
        batch = [big_log_line(n) for n in range(start, start + 5_000)]
        api_ok("POST", f"/runner/jobs/{job_id}/log", {"entries": batch}, token=DAG_RUNNER, headers=lease)
    # An artifact the job recorded, to download from its page.
    report = b"the report of the long job\n"
    upload = urllib.request.Request(BASE + "/api/v1/runner/artifacts", data=report, method="POST")
    upload.add_header("Authorization", f"Bearer {DAG_RUNNER}")
    upload.add_header("Content-Type", "application/octet-stream")
    with urllib.request.urlopen(upload, timeout=30) as response:
        artifact_id = json.loads(response.read())["id"]
    api_ok("POST", f"/runner/jobs/{job_id}/outputs", {"name": "report.txt", "artifact_id": artifact_id},
           token=DAG_RUNNER, headers=lease)
    api_ok("POST", f"/runner/jobs/{job_id}/complete", {"result": {}}, token=DAG_RUNNER, headers=lease)
    context = new_context(browser, accept_downloads=True)
    try:
        page = sign_in(context, ADMIN)
        refusals = watch_csp(page)
        open_page(page, f"/jobs/{job_id}")
        expect(page.get_by_test_id("log-size")).to_have_text("20,000 lines")
        wait_log_end(page)
        # Following: the end is in view, and only a window of rows is in the DOM.
        expect(page.locator('[data-testid="log-line"][data-seq="19999"] .log-msg')).to_have_text("row 19999")
        rows = page.get_by_test_id("log-line").count()
        check(0 < rows <= 200, "at most 200 rows drawn of 20,000", rows)
        shot(page, "job-log-big.png")

        page.get_by_test_id("log-first-error").click()
        expect(page.get_by_test_id("log-search-status")).to_have_text("Line 7,778")
        target = page.locator('.log-line.log-target')
        expect(target).to_have_attribute("data-seq", "7777")
        expect(target.locator(".log-msg")).to_have_text("row 7777 boom")
        expect(target.locator(".log-msg .ansi-31")).to_have_text("boom")
        expect(page.locator("#log-follow")).not_to_be_checked()

        page.get_by_label("Search the log").fill("needle-xyz")
        page.get_by_role("button", name="Find").click()
        expect(page.get_by_test_id("log-search-status")).to_have_text("Line 15,001")
        expect(page.locator('.log-line.log-target')).to_have_attribute("data-seq", "15000")
        expect(page.locator('.log-line.log-target mark')).to_have_text("needle-XYZ")
        page.get_by_test_id("log-next").click()
        expect(page.get_by_test_id("log-search-status")).to_have_text("No more matches.")
        shot(page, "job-log-search.png")

        # Scrolled to the top, the first rows are read and drawn.
        page.get_by_test_id("log").evaluate("view => { view.scrollTop = 0; }")
        expect(page.locator('[data-testid="log-line"][data-seq="0"] .log-msg')).to_have_text("row 0")
        check(page.get_by_test_id("log-line").count() <= 200, "still a window of rows",
              page.get_by_test_id("log-line").count())

        # A line link opens the page at that line.
        open_page(page, f"/jobs/{job_id}#L12345")
        linked = page.locator('.log-line.log-target')
        expect(linked).to_have_attribute("data-seq", "12344")
        expect(linked.locator(".log-msg")).to_have_text("row 12344")
        expect(linked).to_be_in_viewport()

        with page.expect_download() as download_info:
            page.get_by_test_id("log-download").click()
        path = download_info.value.path()
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
        check(len(lines) == BIG_LOG_LINES, f"{BIG_LOG_LINES} lines downloaded", len(lines))
        check(lines[7_777].endswith("ERROR row 7777 \x1b[31mboom\x1b[0m"), "the raw error line", lines[7_777])
        with page.expect_download() as download_info:
            page.get_by_test_id("artifact-link").filter(has_text="report.txt").click()
        with open(download_info.value.path(), "rb") as handle:
            got = handle.read()
        check(got == report, "the artifact's bytes downloaded from the job page", got)
        check(not refusals, "no Content-Security-Policy refusal in the console", refusals)
    finally:
        context.close()
    print(f"ok: big log of {BIG_LOG_LINES} lines: tail shown with at most 200 rows drawn, first error, search, line link, download; the job's artifact downloads")


def count_state(kind, state):
    return api_ok("GET", f"/jobs/count?kind={kind}&state={state}")["count"]


def step_bulk(browser):
    # No runner hosts this kind: its jobs stay pending until the page cancels them.
    kind = "bulk-ui"
    ids = [api_ok("POST", "/jobs", {"kind": kind})["id"] for _ in range(7)]
    context = new_context(browser, bypass_csp=True)
    try:
        page = sign_in(context, OPERATOR)
        open_page(page, f"/jobs?kind={kind}")
        expect(page.get_by_test_id("job-count")).to_have_text("7 jobs match the filter.")
        # A creation range from the form: none of them was created before 2000.
        page.get_by_label("Created before").fill("2000-01-01T00:00:00")
        page.get_by_role("button", name="Filter").click()
        expect(page).to_have_url(re.compile(r"created_before=1999-12-3|created_before=2000-01-0"))
        expect(page.get_by_test_id("job-count")).to_have_text("0 jobs match the filter.")
        page.get_by_label("Created before").fill("")
        page.get_by_label("Created from").fill("2000-01-01T00:00:00")
        page.get_by_role("button", name="Filter").click()
        expect(page.get_by_test_id("job-count")).to_have_text("7 jobs match the filter.")
        # Two picked by hand: the dry run counts them, then they are cancelled.
        page.locator(f'[data-testid="select-job"][data-id="{ids[0]}"]').check()
        page.locator(f'[data-testid="select-job"][data-id="{ids[1]}"]').check()
        expect(page.get_by_test_id("selected-count")).to_have_text("2 selected")
        page.get_by_test_id("cancel-selected").click()
        expect(page.get_by_test_id("bulk-dry-run")).to_contain_text("2 of the 2 selected jobs can be cancelled now")
        audit(page, "/jobs with a bulk dry run open")
        shot(page, "jobs-bulk-dry-run.png")
        page.get_by_test_id("bulk-confirm").click()
        expect(page.get_by_test_id("bulk-progress")).to_have_text("Cancelled 2 jobs.")
        for job_id in ids[:2]:
            check(job_state(job_id) == "cancelled", f"{job_id} cancelled", job_state(job_id))
            expect(page.locator(f'tr[data-job="{job_id}"] .badge')).to_have_text("cancelled")
        check(count_state(kind, "pending") == 5, "5 still pending", count_state(kind, "pending"))
        # Every job matching the filter: the dry run counts the 5 still pending.
        page.get_by_test_id("cancel-matching").click()
        expect(page.get_by_test_id("bulk-dry-run")).to_contain_text("5 jobs matching the filter can be cancelled now")
        page.get_by_test_id("bulk-confirm").click()
        expect(page.get_by_test_id("bulk-progress")).to_have_text("Cancelled 5 jobs.")
        shot(page, "jobs-bulk-done.png")
        check(count_state(kind, "pending") == 0, "none pending", count_state(kind, "pending"))
        check(count_state(kind, "cancelled") == 7, "7 cancelled", count_state(kind, "cancelled"))
        # Nothing left to cancel: said so, nothing sent.
        page.get_by_test_id("cancel-matching").click()
        expect(page.get_by_test_id("bulk-nothing")).to_be_visible()
        # Retry them all, then the audit log names the operator's token for both.
        page.get_by_test_id("retry-matching").click()
        expect(page.get_by_test_id("bulk-dry-run")).to_contain_text("7 jobs matching the filter can be retried now")
        page.get_by_test_id("bulk-confirm").click()
        expect(page.get_by_test_id("bulk-progress")).to_have_text("Retried 7 jobs.")
        check(count_state(kind, "pending") == 7, "7 pending again", count_state(kind, "pending"))
        for action in ("jobs.bulk_cancelled", "jobs.bulk_retried"):
            entries = api_ok("GET", f"/admin/audit?action={action}")["items"]
            check(entries and all(e["actor"].startswith("user:") for e in entries),
                  f"{action} entries by the operator's token", entries)
    finally:
        context.close()
    viewer = new_context(browser)
    try:
        page = sign_in(viewer, VIEWER)
        open_page(page, f"/jobs?kind={kind}")
        expect(page.get_by_test_id("job-count")).to_have_text("7 jobs match the filter.")
        expect(page.get_by_test_id("select-job")).to_have_count(0)
        expect(page.get_by_test_id("cancel-matching")).to_have_count(0)
    finally:
        viewer.close()
    # The overview counts them by kind, and follows a new one without a reload.
    admin = new_context(browser)
    try:
        page = sign_in(admin, ADMIN)
        open_page(page, "/")
        row = page.locator(f'[data-testid="kind-row"][data-kind="{kind}"]')
        expect(row.locator("td").nth(1)).to_have_text("7")
        ids.append(api_ok("POST", "/jobs", {"kind": kind})["id"])
        expect(row.locator("td").nth(1)).to_have_text("8", timeout=TIMEOUT_MS)
        completed = int(page.get_by_test_id("hour-completed").inner_text().replace(",", ""))
        check(completed >= 2, "the last hour's completions counted (the exec and graph jobs)", completed)
        pending = int(page.get_by_test_id("count-pending").inner_text().replace(",", ""))
        check(pending >= 8, "at least 8 pending jobs counted", pending)
        shot(page, "overview-kinds.png")
    finally:
        admin.close()
    for job_id in ids:
        cancel_quietly(job_id)
    print("ok: bulk: 2 selected then 5 matching cancelled after dry runs, 7 retried, audited; a viewer has no bulk controls; the overview counts the kind live")


def main():
    os.makedirs(SHOTS, exist_ok=True)
    step = "start"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            step = "sign-in"
            admin, admin_page = step_sign_in(browser)
            step = "live job"
            exec_job = step_live_job(admin_page)
            step = "connection kill"
            step_connection_kill(browser)
            operator = new_context(browser)
            operator_page = sign_in(operator, OPERATOR)
            step = "cancel"
            step_cancel(operator_page)
            viewer = new_context(browser)
            viewer_page = sign_in(viewer, VIEWER)
            step = "roles"
            step_roles(viewer_page, operator_page)
            viewer.close()
            operator.close()
            step = "dag"
            dag_job = step_dag(admin_page)
            step = "runners"
            step_runners(admin_page)
            admin.close()
            step = "axe"
            step_axe(browser, [exec_job, dag_job])
            step = "phone and dark"
            step_phone_and_dark(browser, exec_job)
            step = "keyboard"
            step_keyboard(browser, exec_job)
            step = "admin pages and attempts"
            step_new_pages(browser, exec_job)
            step = "workloads"
            step_workloads(browser)
            step = "bulk"
            step_bulk(browser)
            step = "big log"
            step_big_log(browser)
        except BaseException as error:
            print(f"FAIL: {step}: {error}", flush=True)
            raise
        finally:
            browser.close()
    print("ok: all dashboard steps passed")


if __name__ == "__main__":
    main()
