#!/usr/bin/env bash
# Installs what the test suite runs for real, when it is missing:
# Prosody (the XMPP server of the end-to-end tests), Chromium (the browser
# tests), tmux (the nats CLI guide test), the nats CLI and staticcheck. Safe to run again: it skips what is there.
set -euo pipefail

need_apt=()
command -v prosody >/dev/null 2>&1 || need_apt+=(prosody)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v tmux >/dev/null 2>&1 || need_apt+=(tmux)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]} from Debian's packages"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # The package starts a system-wide Prosody on :5222; the tests run their
  # own instances, so stop it if a service manager started one.
  if command -v service >/dev/null 2>&1; then $SUDO service prosody stop >/dev/null 2>&1 || true; fi
fi

gobin="$(go env GOPATH)/bin"
if ! command -v nats >/dev/null 2>&1 && [ ! -x "$gobin/nats" ]; then
  echo "installing the nats CLI (go install, about a minute)"
  go install github.com/nats-io/natscli/nats@v0.5.1
fi
if ! command -v staticcheck >/dev/null 2>&1 && [ ! -x "$gobin/staticcheck" ]; then
  echo "installing staticcheck"
  go install honnef.co/go/tools/cmd/staticcheck@v0.8.2 || echo "staticcheck not installed; 'make lint' will need it"
fi
