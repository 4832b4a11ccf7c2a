#!/usr/bin/env bash
# What PostgreSQL's CPU per job would be under other table designs, measured with plain SQL (no
# coordinator): each design loads N no-op jobs, then claims and completes them 500 at a time in
# one psql session, and the CPU time of the server's processes (from /proc) is divided by N.
#
#   bench/postgres-designs/run.sh 'host=/tmp/pgx port=55432 user=postgres' [jobs]
#
# The server must run on this machine (its CPU is read from /proc) and the role must be able to
# create databases. Designs:
#   current      muster's schema (crates/muster-store/src/postgres/schema.rs): jobs + job_queue +
#                job_leases; claim = lock queue rows, read jobs, update jobs, delete queue rows,
#                insert lease rows; completion = lock jobs rows, update jobs, delete lease rows
#   no-leases    the same without the job_leases writes (not a correct design: nothing to reap
#                by; it measures what the lease rows cost)
#   queue-lease  muster's schema where a job's queue row stays while it is leased (the claim sets
#                its runner and deadline instead of deleting it and inserting a lease row; the
#                completion deletes it), so the reaper reads job_queue
#   active       one table of active jobs (updated at claim, deleted at completion) and a history
#                table the completion inserts into
#   graphile     the active table alone, deleted at completion (graphile-worker's pattern)
set -euo pipefail
conninfo=${1:?usage: run.sh CONNINFO [jobs]}
jobs=${2:-200000}
batch=500
rounds=$((jobs / batch))
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
psql_to() { psql "$conninfo dbname=$1" -X -q -v ON_ERROR_STOP=1 "${@:2}"; }

server_ticks() {
    local total=0 line fields
    for stat in /proc/[0-9]*/stat; do
        { read -r line < "$stat"; } 2>/dev/null || continue
        case "$line" in
            *"(postgres)"*)
                read -r -a fields <<< "${line#*) }"
                total=$((total + fields[11] + fields[12] + fields[13] + fields[14]))
                ;;
        esac
    done
    echo "$total"
}

# muster's schema, taken from the first store migration.
python3 - "$here/../../crates/muster-store/src/postgres/schema.rs" > "$work/current.sql" <<'EOF'
import re, sys
source = open(sys.argv[1]).read()
print(re.search(r'STORE_MIGRATIONS: &\[&str\] = &\[r#"(.*?)"#', source, re.S).group(1))
EOF
cp "$work/current.sql" "$work/no-leases.sql"
{ cat "$work/current.sql"; cat <<'EOF'
ALTER TABLE job_queue ADD COLUMN runner_id bytea, ADD COLUMN reap_at bigint;
DROP INDEX job_queue_open;
DROP INDEX job_queue_constrained;
CREATE INDEX job_queue_open ON job_queue (kind, priority, seq, run_after) WHERE requirements IS NULL AND runner_id IS NULL;
CREATE INDEX job_queue_constrained ON job_queue (kind, priority, seq, run_after) WHERE requirements IS NOT NULL AND runner_id IS NULL;
CREATE INDEX job_queue_reap ON job_queue (reap_at) WHERE runner_id IS NOT NULL;
DROP TABLE job_leases;
EOF
} > "$work/queue-lease.sql"
cat > "$work/active.sql" <<'EOF'
CREATE TABLE active (
  seq bigint generated always as identity primary key, id bytea not null unique,
  kind text not null, state smallint not null, priority int not null, payload text not null,
  requirements text, idempotency_key text, max_attempts bigint not null, timeout_s bigint not null,
  lease_ttl_s bigint not null, backoff_base_s bigint not null, attempt bigint not null default 0,
  lease_epoch bigint not null default 0, runner_id bytea, run_after bigint not null,
  lease_expires_at bigint, attempt_deadline_at bigint, cancel_deadline_at bigint,
  created_at bigint not null, claimed_at bigint, started_at bigint,
  progress_percent float8 not null default 0, progress_message text, inputs text, outputs text,
  log_next_seq bigint not null default 0, log_bytes bigint not null default 0,
  log_truncated bool not null default false, reap_at bigint
) WITH (fillfactor = 50);
CREATE INDEX active_claimable ON active (kind, priority, seq) WHERE state = 0 AND requirements IS NULL;
CREATE INDEX active_reap ON active (reap_at) WHERE state <> 0;
CREATE TABLE history (
  seq bigint primary key, id bytea not null unique, kind text not null, state smallint not null,
  priority int not null, payload text not null, requirements text, idempotency_key text,
  max_attempts bigint not null, timeout_s bigint not null, lease_ttl_s bigint not null,
  backoff_base_s bigint not null, attempt bigint not null, lease_epoch bigint not null,
  runner_id bytea, run_after bigint not null, created_at bigint not null, claimed_at bigint,
  started_at bigint, finished_at bigint, result text, error_reason text, error_message text,
  progress_percent float8 not null, progress_message text, inputs text, outputs text,
  log_next_seq bigint not null, log_bytes bigint not null, log_truncated bool not null
);
CREATE INDEX history_kind ON history (kind, seq);
EOF
cp "$work/active.sql" "$work/graphile.sql"

load_jobs="INSERT INTO jobs (id, kind, state, priority, payload, max_attempts, timeout_s, lease_ttl_s, backoff_base_s, run_after, created_at) SELECT decode(lpad(to_hex(g), 32, '0'), 'hex'), 'noop', 0, 0, '{}', 3, 3600, 60, 5, 0, 0 FROM generate_series(1, $jobs) g; INSERT INTO job_queue (seq, kind, priority, run_after) SELECT seq, kind, priority, run_after FROM jobs;"
load_active="INSERT INTO active (id, kind, state, priority, payload, max_attempts, timeout_s, lease_ttl_s, backoff_base_s, run_after, created_at) SELECT decode(lpad(to_hex(g), 32, '0'), 'hex'), 'noop', 0, 0, '{}', 3, 3600, 60, 5, 0, 0 FROM generate_series(1, $jobs) g;"

claim_current=$(cat <<'EOF'
BEGIN;
SELECT array_agg(seq)::text AS seqs FROM (SELECT seq FROM job_queue WHERE kind = 'noop' AND requirements IS NULL AND run_after <= 5 ORDER BY priority, seq LIMIT 500 FOR UPDATE SKIP LOCKED) s \gset
SELECT * FROM jobs WHERE seq = ANY(:'seqs'::bigint[]) AND state = 0 \g /dev/null
UPDATE jobs SET state = 1, attempt = attempt + 1, lease_epoch = lease_epoch + 1, runner_id = '\x01', lease_expires_at = 1000, attempt_deadline_at = 2000, claimed_at = 1 WHERE seq = ANY(:'seqs'::bigint[]);
DELETE FROM job_queue WHERE seq = ANY(:'seqs'::bigint[]);
INSERT INTO job_leases SELECT s, '\x01', 1000 FROM unnest(:'seqs'::bigint[]) s;
COMMIT;
BEGIN;
SELECT seq, state, attempt FROM jobs WHERE seq = ANY(:'seqs'::bigint[]) ORDER BY seq FOR UPDATE \g /dev/null
UPDATE jobs SET state = 3, finished_at = 6, started_at = 5, lease_expires_at = NULL, result = '{"ok":true}' WHERE seq = ANY(:'seqs'::bigint[]);
DELETE FROM job_leases WHERE seq = ANY(:'seqs'::bigint[]);
COMMIT;
EOF
)
claim_active=$(cat <<'EOF'
BEGIN;
SELECT array_agg(seq)::text AS seqs FROM (SELECT seq FROM active WHERE kind = 'noop' AND state = 0 AND requirements IS NULL ORDER BY priority, seq LIMIT 500 FOR UPDATE SKIP LOCKED) s \gset
SELECT * FROM active WHERE seq = ANY(:'seqs'::bigint[]) \g /dev/null
UPDATE active SET state = 1, attempt = attempt + 1, lease_epoch = lease_epoch + 1, runner_id = '\x01', lease_expires_at = 1000, attempt_deadline_at = 2000, claimed_at = 1, reap_at = 1000 WHERE seq = ANY(:'seqs'::bigint[]);
COMMIT;
BEGIN;
SELECT seq, state, attempt FROM active WHERE seq = ANY(:'seqs'::bigint[]) ORDER BY seq FOR UPDATE \g /dev/null
EOF
)
complete_history="WITH done AS (DELETE FROM active WHERE seq = ANY(:'seqs'::bigint[]) AND state = 1 RETURNING *) INSERT INTO history SELECT seq, id, kind, 3, priority, payload, requirements, idempotency_key, max_attempts, timeout_s, lease_ttl_s, backoff_base_s, attempt, lease_epoch, runner_id, run_after, created_at, claimed_at, 5, 6, '{\"ok\":true}', NULL, NULL, progress_percent, progress_message, inputs, outputs, log_next_seq, log_bytes, log_truncated FROM done;"
complete_delete="DELETE FROM active WHERE seq = ANY(:'seqs'::bigint[]) AND state = 1;"

for round in $(seq 1 "$rounds"); do echo "$claim_current"; done > "$work/current.run"
grep -v job_leases "$work/current.run" > "$work/no-leases.run"
sed -e 's/AND requirements IS NULL AND run_after <= 5/AND requirements IS NULL AND runner_id IS NULL AND run_after <= 5/' \
    -e "s/^DELETE FROM job_queue WHERE seq = ANY/UPDATE job_queue SET runner_id = '\\\\x01', reap_at = 1000 WHERE seq = ANY/" \
    -e '/^INSERT INTO job_leases/d' \
    -e 's/^DELETE FROM job_leases WHERE/DELETE FROM job_queue WHERE/' \
    "$work/current.run" > "$work/queue-lease.run"
for round in $(seq 1 "$rounds"); do echo "$claim_active"; echo "$complete_history"; echo "COMMIT;"; done > "$work/active.run"
for round in $(seq 1 "$rounds"); do echo "$claim_active"; echo "$complete_delete"; echo "COMMIT;"; done > "$work/graphile.run"

for design in ${DESIGNS:-current no-leases queue-lease active graphile}; do
    database="muster_design_${design//-/_}"
    psql_to postgres -c "DROP DATABASE IF EXISTS $database" -c "CREATE DATABASE $database"
    psql_to "$database" -f "$work/$design.sql" > /dev/null
    case "$design" in
        current | no-leases | queue-lease) psql_to "$database" -c "$load_jobs" ;;
        *) psql_to "$database" -c "$load_active" ;;
    esac
    psql_to "$database" -c "VACUUM ANALYZE" -c "CHECKPOINT"
    before=$(server_ticks)
    started=$(date +%s.%N)
    psql_to "$database" -f "$work/$design.run" > /dev/null
    after=$(server_ticks)
    finished=$(date +%s.%N)
    psql_to postgres -c "DROP DATABASE $database"
    # /proc times are in 1/100 s.
    awk -v design="$design" -v ticks=$((after - before)) -v jobs="$jobs" -v started="$started" -v finished="$finished" \
        'BEGIN { printf "%-10s PostgreSQL CPU %5.1f µs per job claimed and completed (%.1f s)\n", design, ticks * 10000 / jobs, finished - started }'
done
