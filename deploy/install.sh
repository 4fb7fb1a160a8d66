#!/usr/bin/env bash
# Install edge-mpc as a systemd service on an x86_64 or aarch64 (Jetson) edge box.
#
#   sudo deploy/install.sh [--gpu] [--config SITE.yaml] [--no-start]
#
#   --gpu            also install cupy-cuda12x and the GPU drop-in (device access for CUDA / Jetson iGPU)
#   --config FILE    the site config to run (default: the shipped example, config/sites/office-20.yaml);
#                    its directory tree is copied so relative model/data paths keep working
#   --no-start       install and enable, but do not (re)start now
#   --root DIR       stage everything under DIR instead of / (packaging, tests); implies --no-start and
#                    skips systemctl
#   --no-venv        do not create the virtual environment (with --root, for tests)
#
# Layout: venv /opt/edge-mpc/venv, config /etc/edge-mpc (site.yaml lists the site file), state
# /var/lib/edge-mpc (systemd StateDirectory), kernel cache /var/cache/edge-mpc (CacheDirectory).
set -euo pipefail

src="$(cd "$(dirname "$0")/.." && pwd)"
gpu=0 start=1 root="" venv=1 config=""
while [ $# -gt 0 ]; do
  case "$1" in
    --gpu) gpu=1 ;;
    --no-start) start=0 ;;
    --no-venv) venv=0 ;;
    --config) config="${2:?--config needs a file}"; shift ;;
    --root) root="${2:?--root needs a directory}"; start=0; shift ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (sudo), or use --root DIR to stage" >&2; exit 1
fi

arch="$(uname -m)"
case "$arch" in
  x86_64|aarch64) ;;
  *) echo "install.sh: unsupported architecture $arch (x86_64 or aarch64)" >&2; exit 1 ;;
esac
jetson=0
[ -f /etc/nv_tegra_release ] && jetson=1

prefix="$root/opt/edge-mpc"
etc="$root/etc/edge-mpc"
unitdir="$root/etc/systemd/system"

# -- Python environment ---------------------------------------------------------------------------------
if [ "$venv" -eq 1 ]; then
  py="${PYTHON:-}"
  if [ -z "$py" ]; then
    for cand in python3.13 python3.12 python3.11 python3; do
      if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        py="$cand"; break
      fi
    done
  fi
  if [ -z "$py" ]; then
    echo "install.sh: needs Python >= 3.11 (JetPack 6 ships 3.10: see deploy/JETSON.md)" >&2; exit 1
  fi
  echo "==> venv in $prefix/venv ($("$py" --version), $arch$([ $jetson -eq 1 ] && echo ', Jetson'))"
  "$py" -m venv "$prefix/venv"
  "$prefix/venv/bin/python" -m pip install --quiet --upgrade pip
  "$prefix/venv/bin/python" -m pip install --quiet "$src"
  if [ "$gpu" -eq 1 ]; then
    echo "==> cupy-cuda12x (GPU backend)"
    "$prefix/venv/bin/python" -m pip install --quiet "cupy-cuda12x>=13"
  fi
fi
install -d -m 0755 "$prefix/share"
install -m 0644 "$src/README.md" "$prefix/share/README.md" 2>/dev/null || true

# -- configuration (never overwrite what the operator edited) -------------------------------------------
install -d -m 0755 "$etc"
if [ -n "$config" ]; then
  cfg_src="$(cd "$(dirname "$config")" && pwd)/$(basename "$config")"
else
  cfg_src="$src/config/sites/office-20.yaml"
fi
# Copy the tree above the site file's directory (sites/, buildings/, data/) so relative paths hold.
tree="$(dirname "$(dirname "$cfg_src")")"
rel="${cfg_src#"$tree"/}"
for d in "$tree"/*/; do
  name="$(basename "$d")"
  if [ ! -e "$etc/$name" ]; then
    cp -R "$d" "$etc/$name"
  fi
done
if [ ! -e "$etc/site.yaml" ]; then
  printf '# The site(s) this box controls; paths are relative to this file.\nsites: [%s]\n' "$rel" > "$etc/site.yaml"
fi
if [ ! -e "$etc/environment" ]; then
  printf '# Overrides for the service, e.g.\n# EDGE_MPC__MQTT__HOST=broker.local\n' > "$etc/environment"
fi
# Readable by the service's dynamic user, writable only by root: the config decides what the plant does.
chmod -R u=rwX,go=rX "$etc"

# -- systemd --------------------------------------------------------------------------------------------
install -d -m 0755 "$unitdir"
install -m 0644 "$src/systemd/edge-mpc.service" "$unitdir/edge-mpc.service"
if [ "$gpu" -eq 1 ]; then
  install -d -m 0755 "$unitdir/edge-mpc.service.d"
  install -m 0644 "$src/systemd/edge-mpc-gpu.conf" "$unitdir/edge-mpc.service.d/gpu.conf"
fi

if [ -z "$root" ]; then
  if [ "$venv" -eq 1 ]; then
    echo "==> checking the configuration"
    "$prefix/venv/bin/python" -c 'import sys; from controller.daemon.settings import load_config; load_config(sys.argv[1])' \
      "$etc/site.yaml"
  fi
  systemctl daemon-reload
  systemctl enable edge-mpc.service
  if [ "$start" -eq 1 ]; then
    systemctl restart edge-mpc.service
    echo "==> started: journalctl -u edge-mpc -f ; curl -s 127.0.0.1:9108/healthz"
  fi
fi
echo "==> installed edge-mpc (config $etc/site.yaml, unit $unitdir/edge-mpc.service$([ $gpu -eq 1 ] && echo ' + gpu drop-in'))"
