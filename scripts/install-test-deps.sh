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
  if [ -x "$root/bin/$crate" ]; then
    return
  fi
  echo "install-test-deps: building reference $crate $version (cached in $root)" >&2
  # Without --locked: the registry index may lack some locked versions (see the protocol notes).
  cargo install "$crate" --version "$version" --root "$root" "$@" >&2
}

install_ref moq-relay "$RELAY_VERSION" --no-default-features --features noq
install_ref moq-clock "$CLOCK_VERSION"

need_apt=()
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager)
command -v amtool >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager)
python3 -c 'import yaml' >/dev/null 2>&1 || need_apt+=(python3-yaml)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
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
