#!/usr/bin/env bash
# Sourced by the project's scripts that need root (network namespaces, apt-get, tap devices), so
# that each command in README works the same in a root shell (a fresh Debian 12 has no sudo) and
# for a user with sudo:
#   need_root "$0" "$@"   as root: nothing; else re-runs the calling script with sudo (keeping the
#                         environment and PATH), or exits 2 with a clear error when there is no sudo.
#                         For scripts that do not run cargo.
#   as_root CMD...        runs CMD as root: directly, or through sudo (same environment and PATH).
#   root_runner           as root: nothing; else prints "sudo -E env PATH=…" for cargo's runner
#                         (CARGO_TARGET_<triple>_RUNNER): cargo builds as the user, the test binaries
#                         run as root. Nothing of the user's ~/.cargo becomes root's.
_root_sudo_or_die() { # SCRIPT
	command -v sudo >/dev/null 2>&1 && return 0
	echo "$1: needs root (network namespaces, packages, tap devices) and there is no sudo here:" \
		"run it from a root shell (su -)" >&2
	exit 2
}
need_root() { # SCRIPT ARGS...
	[ "$(id -u)" -eq 0 ] && return 0
	_root_sudo_or_die "$1"
	echo "$1: not root; re-running with sudo" >&2
	exec sudo -E env "PATH=$PATH" "$@"
}
as_root() { # CMD...
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	else
		_root_sudo_or_die "$1"
		sudo -E env "PATH=$PATH" "$@"
	fi
}
root_runner() {
	[ "$(id -u)" -eq 0 ] && return 0
	_root_sudo_or_die "$0"
	echo "sudo -E env PATH=$PATH"
}
