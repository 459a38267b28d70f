#!/usr/bin/env bash
# Every GPU check of the training engine, in one go; prints a short table.
#   bash benchmarks/gpu_check.sh            # on any CUDA machine (1..N GPUs); on a CPU-only machine every row says "no CUDA"
# Checks: bf16 autocast, fp16 + GradScaler, fused AdamW, flash attention (SDPA), FlexAttention document masks
# through the model (vs the dense mask), torch.compile, gradient checkpointing, a Muon step, peak memory with and
# without the chunked loss (gpt2-124m), the trainer end to end (tiny, bf16), tokens/s + MFU of gpt2-124m at context
# 1024 with packed documents (bf16 + compile + FlexAttention), lmforge vs HF LlamaForCausalLM (sdpa) of the same
# shape in the same process, and FSDP2 with AdamW and Muon on all GPUs (torchrun).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
python benchmarks/gpu_check.py --table "$OUT/table.txt" "$@"
rc=$?
NGPU=$(python -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
if [ "$NGPU" -gt 0 ]; then
    timeout 400 python -m torch.distributed.run --standalone --nproc_per_node="$NGPU" benchmarks/gpu_fsdp.py \
        >> "$OUT/table.txt" 2> "$OUT/fsdp.err" || { echo "fsdp2 ($NGPU GPU)          FAIL    see $OUT/fsdp.err" \
        >> "$OUT/table.txt"; tail -5 "$OUT/fsdp.err"; rc=1; }
else
    printf '%-26s %-7s %s\n' "fsdp2 adamw + muon" "no CUDA" "torch.cuda.is_available() is False: not measured" \
        >> "$OUT/table.txt"
fi
echo
echo "check                      result  detail"
cat "$OUT/table.txt"
exit $rc
