#!/usr/bin/env bash
# Build the image from the Containerfile with podman, start it, wait for /readyz, ask one question,
# and print the image's size, the build time and the time to ready.
#
#   bench/container.sh                 # base image made here from Debian's packages (mmdebstrap)
#   BASE=python:3.11-slim bench/container.sh   # where a registry is reachable
#
# Settings: BASE (the base image), IMAGE (the tag, localhost/qa-news:latest), TORCH_INDEX (passed to the
# build; empty by default here, where the CPU torch wheel comes from this machine's pip settings),
# KEEP=1 (leave the container and its volume running), NO_CACHE=1 (build every layer again).
#
# This machine has no image registry: the base is made with mmdebstrap from Debian's packages and
# imported, podman runs with runc and a containers.conf that suits this kernel, and the build's RUN
# steps reach the Python packages through this machine's pip settings, lent to them as read-only
# mounts (none of that is in the Containerfile). Needs root, podman, runc and mmdebstrap
# (apt-get install podman runc mmdebstrap). Takes several minutes the first time.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in podman runc; do
  command -v "$tool" >/dev/null || { echo "container.sh: $tool is not installed (apt-get install podman runc mmdebstrap)" >&2; exit 2; }
done

IMAGE=${IMAGE:-localhost/qa-news:latest}
TORCH_INDEX=${TORCH_INDEX-}
work=$(mktemp -d -t qa-container-XXXXXX)
name=qa-smoke-$$
volume=qa-smoke-$$

if [ -z "${CONTAINERS_CONF:-}" ]; then  # crun refuses this kernel's hybrid cgroups; no systemd here
  cat > "$work/containers.conf" <<'EOF'
[containers]
default_ulimits = []

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
EOF
  export CONTAINERS_CONF=$work/containers.conf
fi
PODMAN=$(command -v podman)
podman() { nice -n 10 "$PODMAN" --runtime runc "$@"; }

cleanup() {
  if [ "${KEEP:-0}" != 1 ]; then
    podman rm -f "$name" >/dev/null 2>&1 || true
    podman volume rm -f "$volume" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# --- the base image ----------------------------------------------------------------------------
if [ -z "${BASE:-}" ]; then
  BASE=localhost/debian-base:bookworm
  if ! podman image exists "$BASE"; then
    command -v mmdebstrap >/dev/null || { echo "container.sh: mmdebstrap is not installed" >&2; exit 2; }
    echo "== making $BASE with mmdebstrap (Debian bookworm, minbase, python3)"
    t0=$(date +%s)
    nice -n 10 mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
      bookworm "$work/base.tar"
    podman import -q "$work/base.tar" "$BASE" >/dev/null
    echo "base image made in $(( $(date +%s) - t0 )) s"
  fi
fi

# --- the build -----------------------------------------------------------------------------------
# This machine's pip settings, for the RUN steps only (whatever of them exists here).
mounts=()
for p in /etc/ssl/certs /etc/pip.conf /etc/xdg/pip /opt/wheels /opt/pypi /opt/pypi-more; do
  [ -e "$p" ] && mounts+=(-v "$p:$p:ro")
done
[ -e "$HOME/.config/pip" ] && mounts+=(-v "$HOME/.config/pip:/root/.config/pip:ro")
cache=()
[ "${NO_CACHE:-0}" = 1 ] && cache=(--no-cache)

echo "== podman build (BASE=$BASE)"
t0=$(date +%s)
if ! podman build --format docker --network host "${mounts[@]}" "${cache[@]}" --iidfile "$work/iid" \
     --build-arg BASE="$BASE" --build-arg TORCH_INDEX="$TORCH_INDEX" -t "$IMAGE" -f Containerfile . \
     > "$work/build.log" 2>&1; then
  tail -n 40 "$work/build.log" >&2
  echo "container.sh: the build failed" >&2
  exit 1
fi
build_s=$(( $(date +%s) - t0 ))
grep -E 'STEP [0-9]+/[0-9]+:|^COMMIT|^--> Using cache|Answer:|articles added' "$work/build.log" | cut -c1-160 || true
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")

# --- run it and ask ------------------------------------------------------------------------------
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "== podman run (port $port)"
t0=$(date +%s.%N)
podman run -d --name "$name" --network host -e QA_PORT="$port" -v "$volume:/data" "$IMAGE" >/dev/null
ready() { python3 - "$port" <<'EOF'
import json, sys, urllib.request
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=5) as r:
        print(json.dumps(json.load(r)))
except Exception:
    sys.exit(1)
EOF
}
until body=$(ready); do
  if [ "$(podman inspect --format '{{.State.Running}}' "$name")" != true ]; then
    podman logs "$name" >&2
    echo "container.sh: the container stopped" >&2
    exit 1
  fi
  if (( $(date +%s) - ${t0%.*} > 300 )); then echo "container.sh: not ready after 300 s" >&2; exit 1; fi
  sleep 0.5
done
ready_s=$(python3 -c "import time; print(f'{time.time() - $t0:.1f}')")
echo "/readyz: $body"
echo "== one question"
python3 - "$port" <<'EOF'
import json, sys, urllib.parse, urllib.request
q = "Who is the leader of HTS?"
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/api/search?k=1&q={urllib.parse.quote(q)}", timeout=60) as r:
    got = json.load(r)
a = got["answer"]
assert a is not None, got
print(f"Q: {q}\nA: {a['text']}\n   [{a['citation']['article_id']} chars {a['citation']['start']}-{a['citation']['end']}] "
      f"confidence {a['confidence']:.2f}, {got['took_ms']} ms")
EOF
podman healthcheck run "$name" && echo "HEALTHCHECK: healthy"
user=$(podman exec "$name" id -un)
echo "== the server's log"
podman logs "$name" 2>&1 | tail -n 5

# A second start on the same volume: the index is there, the model converted at build time.
podman stop -t 10 "$name" >/dev/null
t0=$(date +%s.%N)
podman start "$name" >/dev/null
until ready >/dev/null; do sleep 0.2; done
restart_s=$(python3 -c "import time; print(f'{time.time() - $t0:.1f}')")

echo "== summary"
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$IMAGE"
python3 - "$size" "$build_s" "$ready_s" "$restart_s" "$user" "$BASE" <<'EOF'
import sys
size, build, ready, restart, user, base = sys.argv[1:]
print(f"image {int(size) / 1e9:.2f} GB ({int(size) / 2**30:.2f} GiB) on {base}; build {build} s; "
      f"first start to ready {ready} s (seeds indexed); restart to ready {restart} s; runs as {user}")
EOF
