#!/usr/bin/env bash
# Builds the Debian package with dpkg-deb alone (no debhelper):
#   packaging/build-deb.sh [OUT_DIR]      -> OUT_DIR/xmig_<version>_<arch>.deb (default build/deb)
#
# What goes in: the npm package as `npm pack` makes it (dist/ compiled by prepack) with its
# production modules (npm ci --omit=dev, so unix-dgram is compiled here, for this Node.js),
# /usr/bin/xmig, the units, sysusers.d and tmpfiles.d files, xmig(1) generated from the
# command tree, the README, LICENSE as the copyright file, example configs per role
# (xmig config), the Wireshark dissector and the Grafana dashboard.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "${1:-$repo/build/deb}" && cd "${1:-$repo/build/deb}" && pwd)
version=$(node -p "require('$repo/package.json').version")
arch=$(dpkg --print-architecture)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage=$work/stage
app=$stage/usr/lib/xmig
doc=$stage/usr/share/doc/xmig

echo "build-deb: npm pack" >&2
(cd "$repo" && npm pack --silent --pack-destination "$work" >/dev/null)
mkdir -p "$app"
tar -xzf "$work/xmig-$version.tgz" -C "$app" --strip-components=1
cp "$repo/package-lock.json" "$app/"
echo "build-deb: production modules" >&2
(cd "$app" && npm ci --omit=dev --no-audit --no-fund --loglevel=error >/dev/null)
rm -f "$app/package-lock.json"
# The native addon's build tree: only the .node file is needed at run time.
for build in "$app"/node_modules/*/build; do
  [[ -d $build ]] || continue
  rm -rf "$build/Release/obj.target" "$build/Release/.deps" "$build"/*.mk "$build/Makefile" "$build/config.gypi"
done

install -d "$stage/usr/bin"
ln -s ../lib/xmig/bin/xmig.js "$stage/usr/bin/xmig"
install -d "$stage/lib/systemd/system"
install -m 0644 "$repo"/systemd/*.service "$stage/lib/systemd/system/"
install -D -m 0644 "$repo/packaging/xmig.sysusers" "$stage/usr/lib/sysusers.d/xmig.conf"
install -D -m 0644 "$repo/packaging/xmig.tmpfiles" "$stage/usr/lib/tmpfiles.d/xmig.conf"
install -D -m 0644 "$repo/tools/wireshark/xmig.lua" "$stage/usr/share/xmig/wireshark/xmig.lua"
install -D -m 0644 "$repo/tools/grafana/xmig-migration.json" "$stage/usr/share/xmig/grafana/xmig-migration.json"
install -D -m 0755 "$repo/tools/libvirt/qemu-hook" "$stage/usr/share/xmig/libvirt/qemu-hook"

xmig=("$(command -v node)" "$app/bin/xmig.js")
install -d "$stage/usr/share/man/man1"
"${xmig[@]}" man | gzip -9n > "$stage/usr/share/man/man1/xmig.1.gz"

install -d "$doc/examples"
install -m 0644 "$repo/README.md" "$doc/README.md"
for role in router hypervisor vm; do
  "${xmig[@]}" config --role "$role" --out "$work/examples-$role" >/dev/null
  for file in "$work/examples-$role"/*; do
    install -m 0644 "$file" "$doc/examples/$role-$(basename "$file")"
  done
done
{
  echo 'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/'
  echo 'Upstream-Name: xmig'
  echo
  echo 'Files: *'
  echo 'License: MIT'
  echo
  echo 'License: MIT'
  sed -e 's/^$/./' -e 's/^/ /' "$repo/LICENSE"
  echo
  echo 'Files: usr/lib/xmig/node_modules/*'
  echo 'License: various (see each module'"'"'s package.json and LICENSE file)'
} > "$doc/copyright"

install -d "$stage/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" "$repo/packaging/debian/control.in" > "$stage/DEBIAN/control"
for script in postinst prerm postrm; do
  install -m 0755 "$repo/packaging/debian/$script" "$stage/DEBIAN/$script"
done
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -print0 | sort -z | xargs -0 md5sum | sed 's| \./| |') > "$stage/DEBIAN/md5sums"
find "$stage" -type d -exec chmod 0755 {} +
chmod 0644 "$stage/DEBIAN/md5sums" "$stage/DEBIAN/control"

deb="$out/xmig_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
