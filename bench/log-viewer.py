"""The dashboard's log viewer on a very long log, in headless Chromium.

Starts a coordinator (`muster server`, SQLite in a temporary directory, the log cap raised to
hold the whole log), writes LINES log lines to one job as a runner does (batches of 10,000 over
HTTP), then opens the job's page and measures:

  - first screen: from navigation until the log's last line is drawn (follow mode opens at the
    end), in milliseconds;
  - jumps: 50 jumps to random lines (as a scrollbar drag does), each timed until the line is
    drawn with its text, median and p95;
  - first error: the "First error" button, until the error line (at 90 % of the log) is shown;
  - memory: the page's JS heap (Chromium's Performance metrics) and DOM node count after all of
    the above, and Chromium's memory (PSS, so shared pages count once) over all its processes and
    over its renderers, beside the same page with a ten-line log opened first.

Usage:
  target/python-venv/bin/python bench/log-viewer.py ./target/release/muster 1000000

Needs the venv's playwright and Debian's chromium (MUSTER_CHROMIUM overrides /usr/bin/chromium).
It stops every process it starts.
"""

import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from playwright.sync_api import sync_playwright

BATCH = 10_000


def main():
    binary, lines = sys.argv[1], int(sys.argv[2])
    chromium = os.environ.get("MUSTER_CHROMIUM", "/usr/bin/chromium")
    token = "bench-admin-token-" + os.urandom(8).hex()
    data = tempfile.mkdtemp(prefix="muster-log-bench-")
    env = dict(os.environ, MUSTER_ADMIN_TOKEN=token, MUSTER_LOG="warn", MUSTER_DISK_RESERVE="0")
    server = subprocess.Popen(
        [binary, "server", "--listen", "127.0.0.1:0", "--data-dir", data,
         "--log-cap-bytes", str(200 * lines + 1_000_000)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        url = re.search(r"listening on (http://\S+)", server.stdout.readline().decode()).group(1)
        run(url, token, lines, chromium)
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


def call(url, method, path, body, token, headers=None):
    request = urllib.request.Request(
        url + "/api/v1" + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers=dict({"Authorization": "Bearer " + token, "Content-Type": "application/json"},
                     **(headers or {})))
    with urllib.request.urlopen(request, timeout=120) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def line(n, lines):
    if n == int(lines * 0.9):
        return {"level": "error", "message": f"line {n} \u001b[31mfailed\u001b[0m: disk full"}
    return {"level": "info", "message": f"line {n} step {n % 977} ok \u001b[32mdone\u001b[0m"}


def run(url, token, lines, chromium):
    runner = call(url, "POST", "/runners", {"name": "log-writer"}, token)
    job = call(url, "POST", "/jobs", {"kind": "long-log"}, token)
    claimed = call(url, "POST", "/runner/claim", {"kinds": ["long-log"], "max_jobs": 1},
                   runner["token"])["jobs"][0]
    lease = {"Muster-Lease-Epoch": str(claimed["lease"]["epoch"])}
    started = time.monotonic()
    for first in range(0, lines, BATCH):
        batch = [line(n, lines) for n in range(first, min(lines, first + BATCH))]
        call(url, "POST", f"/runner/jobs/{job['id']}/log", {"entries": batch}, runner["token"], lease)
    wrote = time.monotonic() - started
    call(url, "POST", f"/runner/jobs/{job['id']}/complete", {"result": {}}, runner["token"], lease)
    print(f"wrote {lines:,} log lines in {wrote:.1f} s ({lines / wrote:,.0f} lines/s)")
    short = call(url, "POST", "/jobs", {"kind": "long-log"}, token)
    claimed = call(url, "POST", "/runner/claim", {"kinds": ["long-log"], "max_jobs": 1},
                   runner["token"])["jobs"][0]
    short_lease = {"Muster-Lease-Epoch": str(claimed["lease"]["epoch"])}
    call(url, "POST", f"/runner/jobs/{short['id']}/log",
         {"entries": [line(n, lines) for n in range(10)]}, runner["token"], short_lease)
    call(url, "POST", f"/runner/jobs/{short['id']}/complete", {"result": {}}, runner["token"], short_lease)
    short_job = short["id"]

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True,
                                             args=["--no-sandbox"])
        try:
            measure(browser, url, token, job["id"], short_job, lines)
        finally:
            browser.close()


def measure(browser, url, token, job_id, short_job, lines):
    context = browser.new_context(base_url=url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto("/sign-in")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_test_id("whoami").wait_for()

    # The same page with a ten-line log first: what the browser costs without a long log.
    page.goto(f"/jobs/{short_job}")
    page.locator('[data-testid="log-line"][data-seq="9"] .log-msg').wait_for(timeout=60_000)
    time.sleep(1)
    baseline = chromium_memory_mib()

    last = page.locator(f'[data-testid="log-line"][data-seq="{lines - 1}"] .log-msg')
    started = time.monotonic()
    page.goto(f"/jobs/{job_id}")
    last.wait_for(timeout=60_000)
    first_screen = (time.monotonic() - started) * 1000
    print(f"first screen (navigation until the last of {lines:,} lines is drawn): {first_screen:.0f} ms")

    view = page.get_by_test_id("log")
    random.seed(7)
    jumps = []
    for _ in range(50):
        seq = random.randrange(lines)
        started = time.monotonic()
        # Where a scrollbar drag to that line would put the view (rows of 20 px, unscaled).
        view.evaluate("(view, seq) => { view.scrollTop = seq * 20; }", seq)
        page.locator(f'[data-testid="log-line"][data-seq="{seq}"] .log-msg').wait_for(timeout=30_000)
        jumps.append((time.monotonic() - started) * 1000)
    jumps.sort()
    p95 = jumps[int(len(jumps) * 0.95) - 1]
    print(f"50 jumps to random lines, until drawn: median {statistics.median(jumps):.0f} ms, p95 {p95:.0f} ms")

    started = time.monotonic()
    page.get_by_test_id("log-first-error").click()
    page.locator('.log-line.log-target[data-seq="%d"]' % int(lines * 0.9)).wait_for(timeout=60_000)
    print(f"first error (line {int(lines * 0.9) + 1:,}, searched on the server): "
          f"{(time.monotonic() - started) * 1000:.0f} ms")

    session = context.new_cdp_session(page)
    session.send("HeapProfiler.collectGarbage")
    session.send("Performance.enable")
    metrics = {m["name"]: m["value"] for m in session.send("Performance.getMetrics")["metrics"]}
    rows = page.get_by_test_id("log-line").count()
    print(f"page memory: JS heap {metrics['JSHeapUsedSize'] / 2**20:.1f} MiB used "
          f"({metrics['JSHeapTotalSize'] / 2**20:.1f} MiB allocated), {int(metrics['Nodes']):,} DOM nodes, "
          f"{rows} log rows drawn")
    total, renderers = chromium_memory_mib()
    print(f"Chromium's memory (PSS) with the {lines:,}-line log open: all processes {total:.0f} MiB, "
          f"renderers {renderers:.0f} MiB (with the short log: {baseline[0]:.0f} MiB and {baseline[1]:.0f} MiB)")
    context.close()


def chromium_memory_mib():
    """(PSS of every Chromium process summed, PSS of the renderers) in MiB. PSS shares each page
    among the processes that map it, so the sum counts shared libraries once."""
    total = renderers = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as handle:
                if "chrom" not in handle.read():
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                renderer = b"--type=renderer" in handle.read()
            with open(f"/proc/{pid}/smaps_rollup") as handle:
                for field in handle:
                    if field.startswith("Pss:"):
                        kib = int(field.split()[1])
                        total += kib
                        if renderer:
                            renderers += kib
        except OSError:
            continue
    return total / 1024, renderers / 1024


if __name__ == "__main__":
    main()
