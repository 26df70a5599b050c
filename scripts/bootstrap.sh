#!/usr/bin/env bash
# Brings a fresh Debian machine to the state the node and its tests need. Idempotent:
# every step checks first and does nothing when the thing is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[bootstrap] %s\n' "$*"; }
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

# --- Debian packages: DICOM peers and validators, and the servers the tests talk to ---------
need=()
command -v storescu >/dev/null || need+=(dcmtk)
command -v dciodvfy >/dev/null || need+=(dicom3tools)
command -v Orthanc >/dev/null || need+=(orthanc)
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need+=(orthanc-dicomweb)
command -v redis-server >/dev/null || need+=(redis-server)
command -v pg_ctlcluster >/dev/null || need+=(postgresql)
# The browser for the viewer and review-console tests (Playwright drives it; no browser download)
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  log "installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q "${need[@]}" >/dev/null 2>&1 || {
    $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q "${need[@]}" >/dev/null; }
fi

# --- Services: start them only when they do not answer ------------------------------------------
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "starting Redis on 127.0.0.1:6379"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  log "starting PostgreSQL"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi

# --- Python environment ---------------------------------------------------------------------
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $PY"
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  log "installing torch (CPU build where one is available)"
  .venv/bin/pip install -q "torch==2.13.0" 2>/dev/null || .venv/bin/pip install -q "torch<=2.14.1"
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -e "$stamp" ]; then
  log "installing lumbar-node and its dependencies into .venv"
  .venv/bin/pip install -q -e '.[dev]'
  touch "$stamp"
fi
# --- OHIF viewer: the pinned build from npm, unpacked at install time (never at run time) ---
# The node serves it under /viewer/ when LUMBAR_NODE_VIEWER_DIR points here; the viewer tests
# and deploy/'s proxy use the same folder.
OHIF_VERSION=3.13.2
ohif_dir=.cache/ohif/$OHIF_VERSION
if [ ! -e "$ohif_dir/index.html" ]; then
  if ! command -v npm >/dev/null; then
    log "installing Debian package: npm"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -q npm >/dev/null 2>&1 || {
      $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q npm >/dev/null; }
  fi
  log "fetching OHIF $OHIF_VERSION (@ohif/app from npm) into $ohif_dir"
  ohif_tmp=$(mktemp -d)
  (cd "$ohif_tmp" && npm pack --silent "@ohif/app@$OHIF_VERSION" >/dev/null)
  rm -rf "$ohif_dir.partial" && mkdir -p "$ohif_dir.partial"
  tar xzf "$ohif_tmp/ohif-app-$OHIF_VERSION.tgz" -C "$ohif_dir.partial" --strip-components=2 \
    package/dist
  rm -rf "$ohif_tmp" "$ohif_dir" && mv "$ohif_dir.partial" "$ohif_dir"
fi
log "ready"
