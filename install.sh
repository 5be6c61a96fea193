#!/usr/bin/env bash
# Install sft-wizard into a virtual environment (./.venv, or the one that is active).
#   ./install.sh          the tool
#   ./install.sh --test   the tool and its test dependencies
# PyTorch: an existing torch (e.g. your CUDA build) is kept. Otherwise a box with an NVIDIA
# driver gets torch 2.13.0 from the PyTorch wheel index its driver and GPUs can run (chosen by
# core/torch_build.py from nvidia-smi, printed: CUDA 13.0 needs driver >= 580, CUDA 12.6 runs on
# >= 525 and is the one with Maxwell-Volta kernels), and a CPU-only box gets torch==2.13.0, the
# CPU wheel where pip can find one locally; elsewhere set TORCH_INDEX_URL to PyTorch's CPU index.
# TORCH_INDEX_URL always overrides the choice.
set -euo pipefail
cd "$(dirname "$0")"

extras=""
[ "${1:-}" = "--test" ] && extras="[test]"

if [ -n "${VIRTUAL_ENV:-}" ]; then
  py="$VIRTUAL_ENV/bin/python"
else
  [ -x .venv/bin/python ] || python3 -m venv .venv
  py=.venv/bin/python
fi
pip=("$py" -m pip install --quiet --disable-pip-version-check)

if "$py" -c "import torch" >/dev/null 2>&1; then
  echo "install.sh: keeping torch $("$py" -c 'import torch; print(torch.__version__)')"
elif [ -n "${TORCH_INDEX_URL:-}" ]; then
  echo "install.sh: TORCH_INDEX_URL is set: torch 2.13.0 from $TORCH_INDEX_URL"
  "${pip[@]}" "torch==2.13.0" --index-url "$TORCH_INDEX_URL"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  choice="$("$py" core/torch_build.py)"
  index="${choice%%$'\n'*}"
  echo "install.sh: NVIDIA GPU found: ${choice#*$'\n'}"
  echo "install.sh: installing torch 2.13.0 from $index (set TORCH_INDEX_URL to choose another)"
  "${pip[@]}" "torch==2.13.0" --index-url "$index"
else
  echo "install.sh: no NVIDIA GPU: installing the CPU build of torch 2.13.0"
  "${pip[@]}" "torch==2.13.0"
fi
"${pip[@]}" -e ".${extras}"
echo "install.sh: done — $("$py" -c 'import torch; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu")')"
