#!/usr/bin/env bash
# The runtime image's whole filesystem, from a built binary: the binary, the C libraries it
# links (ldd), CA certificates, a non-root user (tollgate, 10001) and its data directory.
# Nothing else: no shell, no package manager. Used by the Containerfile's build stage, and by
# CI to build the runtime stage from the binary it has just built.
#
#   scripts/image-rootfs.sh BINARY OUTDIR
set -euo pipefail
binary=$1
out=$2
rm -rf "$out"
mkdir -p "$out/usr/local/bin" "$out/etc/ssl/certs" "$out/data" "$out/tmp"
cp "$binary" "$out/usr/local/bin/tollgate"
# Every library the binary loads, at the path the loader looks for it.
for library in $(ldd "$binary" | grep -o '/[^ ]*'); do
  cp --parents -L "$library" "$out"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\ntollgate:x:10001:10001:tollgate:/data:/sbin/nologin\n' \
  > "$out/etc/passwd"
printf 'root:x:0:\ntollgate:x:10001:\n' > "$out/etc/group"
chown 10001:10001 "$out/data"
chmod 1777 "$out/tmp"
