#!/usr/bin/env bash
# Every GPU check of the training engine, in one go; prints a short table.
#   bash benchmarks/gpu_check.sh            # on any CUDA machine (1..N GPUs)
# Checks: bf16 autocast, fp16 + GradScaler, fused AdamW, flash attention (SDPA), FlexAttention with a
# document mask, torch.compile, gradient checkpointing, the trainer end to end (tiny, bf16), FSDP2
# (torchrun, all GPUs), and tokens/s + MFU of gpt2-124m at context 1024 (bf16 + compile + flash).
set -uo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA device on this machine (torch.cuda.is_available() is False): nothing to check."
    echo "gpu_check: run this script on a machine with an NVIDIA GPU."
    exit 0
fi
OUT="${OUT:-$(mktemp -d)}"
python benchmarks/gpu_check.py --table "$OUT/table.txt" "$@"
rc=$?
NGPU=$(python -c "import torch; print(torch.cuda.device_count())")
timeout 300 python -m torch.distributed.run --standalone --nproc_per_node="$NGPU" benchmarks/gpu_fsdp.py \
    >> "$OUT/table.txt" 2> "$OUT/fsdp.err" || { echo "fsdp2 ($NGPU GPU)          FAIL  see $OUT/fsdp.err" >> "$OUT/table.txt"; tail -5 "$OUT/fsdp.err"; rc=1; }
echo
echo "check                      result  detail"
cat "$OUT/table.txt"
exit $rc
