#!/usr/bin/env bash
# Install the pinned Claude Code CLI from npm into the cache outside the repo. Prints its path.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/versions.env"
dir="${TENANTGW_CACHE:-$HOME/.cache/tenantgw}/claude-code-$CLAUDE_CODE_VERSION"
claude="$dir/node_modules/.bin/claude"
if [[ ! -x "$claude" ]]; then
  echo "[setup] installing @anthropic-ai/claude-code@$CLAUDE_CODE_VERSION" >&2
  mkdir -p "$dir"
  npm install --prefix "$dir" --no-audit --no-fund --loglevel=error \
    "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION" >&2
fi
echo "$claude"
