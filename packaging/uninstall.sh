#!/usr/bin/env bash
# The reverse of packaging/install.sh: stop and disable the role's units, remove its
# config (and with --purge its keys and state), then remove (or purge) the package.
#   packaging/uninstall.sh router|hypervisor|vm [--purge]
set -euo pipefail
role=${1:-}
case $role in router | hypervisor | vm) shift ;; *) echo "usage: $0 router|hypervisor|vm [--purge]" >&2; exit 2 ;; esac
[[ $(id -u) -eq 0 ]] || { echo "$0: run as root" >&2; exit 1; }
purge=
[[ ${1:-} == --purge ]] && purge=--purge
if command -v xmig >/dev/null; then xmig setup --remove "$role" $purge; fi
if [[ $purge ]]; then apt-get purge -y xmig; else apt-get remove -y xmig; fi
