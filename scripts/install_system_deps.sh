#!/usr/bin/env bash
# Install the Debian packages edgekit's tests and emulated devices use, when any is missing.
# adb: the real adb server/client; openssh-*: the emulated boards' sshd and the stock clients;
# bubblewrap: per-device filesystem views; busybox: a stand-in for Android's toybox sh;
# chromium: renders the HTML report in tests; cmake + g++: the native runner.
set -euo pipefail
need=()
command -v adb >/dev/null || need+=(adb)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v busybox >/dev/null || need+=(busybox)
command -v cmake >/dev/null || need+=(cmake)
command -v g++ >/dev/null || need+=(g++)
command -v chromium >/dev/null || need+=(chromium)
[ -x /usr/bin/time ] || need+=(time)  # GNU time (-v), not the shell keyword
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${need[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
