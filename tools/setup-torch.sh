#!/usr/bin/env bash
# A PyTorch CPU install for the peer of examples/bench_step.rs (tools/torch_step.py) and for
# writing the model fixtures (tools/make_fixtures.py): Debian's python3-torch (1.13) with
# OpenBLAS as the system BLAS (the reference BLAS Debian falls back to is ~8x slower), and a venv
# (system site packages) with transformers 4.40.2 and PEFT 0.10.0 (the LoRA fixtures and
# tools/check_adapter.py), in ${TRAMWAY_CACHE:-~/.cache/tramway}/torch-venv.
# Prints the venv's python.
set -euo pipefail
CACHE="${TRAMWAY_CACHE:-$HOME/.cache/tramway}"
venv="$CACHE/torch-venv"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
need=""
/usr/bin/python3 -c "import torch" 2>/dev/null || need="$need python3-torch"
dpkg -s libopenblas0-pthread >/dev/null 2>&1 || need="$need libopenblas0-pthread"
/usr/bin/python3 -c "import venv, ensurepip" 2>/dev/null || need="$need python3-venv"
if [ -n "$need" ]; then
  echo "installing$need" >&2
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need >/dev/null
fi
if ! "$venv/bin/python" -c "import torch, transformers" 2>/dev/null; then
  /usr/bin/python3 -m venv --system-site-packages "$venv"
  "$venv/bin/pip" install -q transformers==4.40.2 safetensors >&2
fi
if ! "$venv/bin/python" -c "import peft" 2>/dev/null; then
  # --no-deps: PEFT's own requirements would replace Debian's torch with a wheel.
  "$venv/bin/pip" install -q --no-deps peft==0.10.0 accelerate==0.29.3 >&2
fi
echo "$venv/bin/python"
