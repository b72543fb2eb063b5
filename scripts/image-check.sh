#!/usr/bin/env bash
# Proves the runtime image without running a container (the sandbox refuses `podman run`):
# builds the runtime stage from a built binary, checks its configuration (non-root user,
# health check, volume, port), exports its filesystem and runs the binary inside it under
# chroot, as the image's user: --version, config check, and serving /health, asked by the
# image's own `tollgate health`.
#
#   scripts/image-check.sh [BINARY]     (default target/debug/tollgate)
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-target/debug/tollgate}
work=$(mktemp -d)
image=localhost/tollgate:check-$$
container=""
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  [ -n "$container" ] && podman rm -f "$container" >/dev/null 2>&1 || true
  podman rmi -f "$image" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

scripts/image-rootfs.sh "$binary" "$work/rootfs"
podman build --quiet --format docker --target runtime \
  --build-context rootfs="$work/rootfs" -t "$image" -f Containerfile . >/dev/null

check() { # what, expected, actual
  if [ "$2" != "$3" ]; then echo "image: $1 is '$3', expected '$2'" >&2; exit 1; fi
  echo "image: $1 = $3"
}
inspect() { podman image inspect --format "$1" "$image"; }
check "user" "10001:10001" "$(inspect '{{.Config.User}}')"
check "entrypoint" "[/usr/local/bin/tollgate]" "$(inspect '{{.Config.Entrypoint}}')"
check "health check" "[CMD /usr/local/bin/tollgate health]" "$(inspect '{{.Config.Healthcheck.Test}}')"
check "volume" "map[/data:{}]" "$(inspect '{{.Config.Volumes}}')"
check "exposed port" "map[8080/tcp:{}]" "$(inspect '{{.Config.ExposedPorts}}')"
files=$(podman image inspect --format '{{.Size}}' "$image")
echo "image: size $((files / 1024 / 1024)) MiB"

container=$(podman create "$image")
mkdir "$work/fs"
podman export "$container" | tar -x -C "$work/fs"
test ! -e "$work/fs/bin/sh" || { echo "image: a shell is present" >&2; exit 1; }

in_image() { # runs the image's binary as its user, with only the given environment
  env -i "$@"
}
as_user=("$(command -v chroot)" --userspec=10001:10001 "$work/fs" /usr/local/bin/tollgate)
in_image "${as_user[@]}" --version
in_image OPENAI_API_KEY=sk-image-check DATABASE_URL=sqlite:///data/tollgate.db \
  "${as_user[@]}" config check >/dev/null
echo "image: config check passed"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# Started directly (not through a function), so that $! is the server itself.
env -i OPENAI_API_KEY=sk-image-check DATABASE_URL=sqlite:///data/tollgate.db \
  TOLLGATE_HOST=127.0.0.1 PORT="$port" TOLLGATE_DATA_DIR=/data \
  "${as_user[@]}" serve >"$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do
  if in_image PORT="$port" "${as_user[@]}" health --url "http://127.0.0.1:$port/health" \
      >/dev/null 2>&1; then
    break
  fi
  sleep 0.1
done
in_image PORT="$port" "${as_user[@]}" health --url "http://127.0.0.1:$port/health"
in_image PORT="$port" "${as_user[@]}" health
test -s "$work/fs/data/tollgate.db" || { echo "image: no database in /data" >&2; exit 1; }
echo "image: served /health and /health/ready from inside the image, database in /data"
