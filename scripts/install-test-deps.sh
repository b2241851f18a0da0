#!/usr/bin/env bash
# Installs what the tests need when it is missing: the reference moq-lite peers (built once with
# `cargo install` and cached under ~/.cache/moq-ref) and the Debian packages the tests run.
# Idempotent and quiet when everything is present.
set -euo pipefail

REF_DIR="${MOQ_REF_DIR:-$HOME/.cache/moq-ref}"
RELAY_VERSION=0.17.10
CLOCK_VERSION=0.10.21

install_ref() {
  local crate=$1 version=$2; shift 2
  local root="$REF_DIR/$crate-$version"
  # A build records its `cargo install` arguments; one made with other arguments (say, fewer
  # features) is rebuilt. Builds from before the record are kept unless `want_args` says otherwise.
  if [ -x "$root/bin/$crate" ] && { [ ! -f "$root/.args" ] || [ "$(cat "$root/.args")" = "$*" ]; }; then
    return
  fi
  echo "install-test-deps: building reference $crate $version (cached in $root)" >&2
  # Without --locked: the registry index may lack some locked versions (see the protocol notes).
  # One shared target directory: the reference crates have most dependencies in common, so each
  # build after the first reuses what the others compiled (kept between runs under the cache).
  cargo install --force "$crate" --version "$version" --root "$root" --target-dir "$REF_DIR/target" "$@" >&2
  echo "$*" > "$root/.args"
}

# The reference relay with its WebSocket (qmux) listener, for the WebSocket columns of the access
# matrix (rs/moq-interop/tests/auth.rs). A cached build from before it had WebSocket is rebuilt.
RELAY_ARGS="--no-default-features --features noq,websocket"
relay_root="$REF_DIR/moq-relay-$RELAY_VERSION"
if [ -x "$relay_root/bin/moq-relay" ] && [ "$(cat "$relay_root/.args" 2>/dev/null)" != "$RELAY_ARGS" ]; then
  rm -f "$relay_root/bin/moq-relay"
fi
# shellcheck disable=SC2086 # RELAY_ARGS is a word list
install_ref moq-relay "$RELAY_VERSION" $RELAY_ARGS
install_ref moq-clock "$CLOCK_VERSION"
# >>> interop matrix (rs/moq-interop/tests/interop_matrix.rs): reference moq-cli + ffmpeg
# moq-cli's binary is `moq` (same name as our CLI: always use the cached path). The `moq-cli` link
# next to it is what install_ref's cache check and moq_interop::reference("moq-cli", ..) look for.
# Features: noq (QUIC/WebTransport) + websocket (the ws:// case); the defaults' iroh, cluster-lan
# and nvidia are not needed. Takes ~25 min on 2 cores the first time.
if [ ! -x "$REF_DIR/moq-cli-0.14.10/bin/moq-cli" ]; then
  install_ref moq-cli 0.14.10 --no-default-features --features noq,websocket
  ln -sf moq "$REF_DIR/moq-cli-0.14.10/bin/moq-cli"
fi
# <<< interop matrix

need_apt=()
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager)
command -v amtool >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager)
python3 -c 'import yaml' >/dev/null 2>&1 || need_apt+=(python3-yaml)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# >>> interop matrix: ffmpeg/ffprobe make the test clip and hash every packet
{ command -v ffmpeg && command -v ffprobe; } >/dev/null 2>&1 || need_apt+=(ffmpeg)
# <<< interop matrix
# `just bench` counts instructions with callgrind.
if [ -n "${WITH_BENCH:-}" ]; then
  command -v callgrind_control >/dev/null 2>&1 || need_apt+=(valgrind)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "install-test-deps: apt-get install ${need_apt[*]}" >&2
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >&2
fi

# --- browser tests (rs/moq-interop/browser) -------------------------------------------------
# Chromium from apt when missing, and the page packages (`npm ci`) installed once per lockfile
# into ~/.cache/moq-browser/<sha256 of package-lock.json>/node_modules, where run.mjs looks them
# up (MOQ_BROWSER_CACHE overrides the cache root). Quiet when both are present.
install_browser_deps() {
  local dir lock sum root cache tmp
  dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/rs/moq-interop/browser"
  lock="$dir/package-lock.json"
  [ -f "$lock" ] || return 0
  local apt=()
  command -v chromium >/dev/null 2>&1 || apt+=(chromium)
  command -v npm >/dev/null 2>&1 || apt+=(nodejs npm)
  if [ ${#apt[@]} -gt 0 ]; then
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "install-test-deps: apt-get install ${apt[*]}" >&2
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${apt[@]}" >&2
  fi
  sum=$(sha256sum "$lock" | cut -d' ' -f1)
  root="${MOQ_BROWSER_CACHE:-$HOME/.cache/moq-browser}"
  cache="$root/$sum"
  [ -f "$cache/node_modules/.moq-installed" ] && return 0
  echo "install-test-deps: npm ci for the browser tests (cached in $cache)" >&2
  mkdir -p "$root"
  tmp=$(mktemp -d "$root/.install.XXXXXX")
  cp "$dir/package.json" "$lock" "$tmp/"
  (cd "$tmp" && CI=true npm ci --no-audit --no-fund --loglevel=error >&2)
  touch "$tmp/node_modules/.moq-installed"
  rm -rf "$cache"
  mv "$tmp" "$cache"
}
install_browser_deps
# --- end of browser tests ------------------------------------------------------------------
