#!/usr/bin/env bash
# One command per role: install xmig on this Debian 12 host and make it one of the roles.
#   packaging/install.sh router|hypervisor|vm [xmig setup options...]
#   e.g. packaging/install.sh router --topology fig1b.json --node R1 --address R1=10.0.0.1 ...
# Builds the package from this checkout (packaging/build-deb.sh) unless XMIG_DEB names
# one, installs it with apt (which brings its dependencies), then runs `xmig setup ROLE`:
# config files, keys, and the role's units enabled and started. The reverse is
# packaging/uninstall.sh ROLE [--purge].
set -euo pipefail
role=${1:-}
case $role in router | hypervisor | vm) shift ;; *) echo "usage: $0 router|hypervisor|vm [xmig setup options]" >&2; exit 2 ;; esac
[[ $(id -u) -eq 0 ]] || { echo "$0: run as root" >&2; exit 1; }
deb=${XMIG_DEB:-$("$(dirname "$0")/build-deb.sh")}
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$(realpath "$deb")"
xmig setup "$role" "$@"
