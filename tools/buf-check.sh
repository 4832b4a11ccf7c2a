#!/usr/bin/env bash
# Checks muster's protobuf definitions (proto/, configured by buf.yaml):
#   1. buf build    - every file compiles;
#   2. buf lint     - the STANDARD rules, with the exceptions buf.yaml lists;
#   3. buf breaking - the FILE rules against an earlier revision.
#
# Usage: tools/buf-check.sh [REV]
#   REV is the git revision to compare against: the first argument, else
#   $MUSTER_BUF_AGAINST, else HEAD~1. When REV does not exist (a shallow clone,
#   a first commit) or has no proto/ directory yet, only the breaking check is
#   skipped, with the reason printed.
#
# buf itself is the version pinned in tools/buf/package-lock.json; it is
# installed with `npm ci` into tools/buf/node_modules when missing.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

buf_dir="tools/buf"
buf="$buf_dir/node_modules/.bin/buf"

say() { printf 'buf-check: %s\n' "$*"; }
die() { printf 'buf-check: error: %s\n' "$*" >&2; exit 1; }

# --- the pinned buf --------------------------------------------------------
if [[ ! -x "$buf" ]]; then
  command -v npm >/dev/null 2>&1 \
    || die "npm is not installed, and $buf is missing; install Node.js/npm, or run 'npm ci --prefix $buf_dir' where npm exists"
  say "installing the pinned buf: npm ci --prefix $buf_dir"
  npm ci --prefix "$buf_dir" --no-audit --no-fund
  [[ -x "$buf" ]] || die "npm ci finished but $buf is still missing"
fi
say "buf $("$buf" --version) ($buf)"

# --- build and lint --------------------------------------------------------
say "files in the module:"
"$buf" ls-files | sed 's/^/  /'

say "buf build: checking that every file compiles"
"$buf" build -o /dev/null || die "buf build: the files above do not compile"
say "buf build: ok"

say "buf lint: STANDARD rules (exceptions: see buf.yaml)"
"$buf" lint || die "buf lint: the problems above break the lint rules"
say "buf lint: ok"

# --- breaking changes ------------------------------------------------------
rev="${1:-${MUSTER_BUF_AGAINST:-HEAD~1}}"

skip_breaking() {
  say "buf breaking: SKIPPED against '$rev': $*"
  say "done (build and lint passed; breaking check skipped)"
  exit 0
}

command -v git >/dev/null 2>&1 || skip_breaking "git is not installed"
git rev-parse --git-dir >/dev/null 2>&1 || skip_breaking "$root is not in a git repository"

if ! sha="$(git rev-parse --verify --quiet "$rev^{commit}")"; then
  if [[ "$(git rev-parse --is-shallow-repository 2>/dev/null)" == "true" ]]; then
    skip_breaking "no such revision here; this is a shallow clone, so it may lie beyond the fetched history (fetch more, e.g. 'git fetch --deepen=1')"
  fi
  skip_breaking "no such revision in this repository"
fi
say "comparing against $rev = $sha ($(git log -1 --format=%s "$sha" | cut -c1-72))"

if ! git cat-file -e "$sha:proto" 2>/dev/null; then
  skip_breaking "that revision has no proto/ directory (the protobuf files are new), so there is nothing to break"
fi

# A file that was a draft in that revision (its first line starts with
# "// DRAFT") made no promise yet: it is left out of the comparison once, the
# commit that turns it into a release may still change its numbers.
draft_excludes=()
while IFS= read -r file; do
  if git show "$sha:$file" 2>/dev/null | head -n 1 | grep -q '^// DRAFT'; then
    say "buf breaking: $file was a draft in $rev; not compared"
    draft_excludes+=(--exclude-path "$file")
  fi
done < <(git ls-tree -r --name-only "$sha" proto | grep '\.proto$')

# buf reads the earlier revision itself through the '.git#ref=' input. That
# needs a .git directory at the root and a buf.yaml in that revision; when
# either is missing, or buf cannot read the repository (a worktree, where .git
# is a file), the revision's files are exported with git archive instead.
tmp=""
cleanup() { if [[ -n "$tmp" ]]; then rm -rf "$tmp"; fi; }
trap cleanup EXIT

against_archive() {
  tmp="$(mktemp -d "${TMPDIR:-/tmp}/muster-buf-against.XXXXXX")"
  if git cat-file -e "$sha:buf.yaml" 2>/dev/null; then
    git archive "$sha" proto buf.yaml | tar -x -C "$tmp"
  else
    git archive "$sha" proto | tar -x -C "$tmp"
    cp buf.yaml "$tmp/buf.yaml"
    say "that revision has no buf.yaml; using the current one to read its proto/"
  fi
  say "buf breaking: FILE rules against git archive of $sha (in $tmp)"
  "$buf" breaking --against "$tmp" "${draft_excludes[@]}"
}

rc=0
if [[ -e .git ]] && git cat-file -e "$sha:buf.yaml" 2>/dev/null; then
  if [[ -f .git ]]; then
    say ".git is a file (a worktree or submodule); trying .git#ref first anyway"
  fi
  say "buf breaking: FILE rules against .git#ref=$sha"
  "$buf" breaking --against ".git#ref=$sha" "${draft_excludes[@]}" || rc=$?
  if [[ $rc -ne 0 && $rc -ne 100 ]]; then
    # Exit status 100 means buf read both sides and found breaking changes;
    # anything else means it could not read the revision.
    say "buf could not read .git#ref=$sha (exit status $rc); trying git archive"
    rc=0
    against_archive || rc=$?
  fi
else
  if [[ ! -e .git ]]; then
    say "no .git at $root (the repository lies elsewhere); using git archive"
  fi
  against_archive || rc=$?
fi

if [[ $rc -ne 0 ]]; then
  if [[ $rc -eq 100 ]]; then
    die "buf breaking: breaking changes against $rev (listed above)"
  fi
  die "buf breaking failed (exit status $rc)"
fi
say "buf breaking: ok, no breaking changes against $rev"
say "done (build, lint and breaking check passed)"
