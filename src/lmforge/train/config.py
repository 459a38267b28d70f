"""Configuration of the training engine (`train:` in a run config).

Loaded through `lmforge.config.load_config`; see that module for how keys are checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmforge.validate import check as _check
from lmforge.validate import finite as _finite


@dataclass(kw_only=True)
class TrainConfig:
    batch_size: int = 16
    """Sequences per micro-batch (per process)."""
    grad_accum: int = 1
    """Micro-batches per optimiser step."""
    lr: float = 1e-3
    """Peak learning rate (0 = the weights stay as they are: a check run)."""
    min_lr: float = 1e-4
    """Learning rate at the end of the decay."""
    schedule: str = "cosine"
    """After linear warmup: `cosine` or `linear` decay to min_lr, `constant`, `wsd`
    (warmup-stable-decay), `step` (x gamma at each milestone) or `exponential` (x gamma per step)."""
    warmup_steps: int = 100
    """Steps of linear warmup from lr/warmup_steps to lr."""
    decay_fraction: float = 0.2
    """`wsd`: fraction of the total steps spent in the final linear decay to min_lr."""
    milestones: list[int] = field(default_factory=list)
    """`step`: optimiser steps at which the rate is multiplied by `gamma`."""
    gamma: float = 0.1
    """`step`: factor at each milestone; `exponential`: factor per step (floored at min_lr)."""
    weight_decay: float = 0.1
    """Applied to matmul weights only (not norms, biases, embeddings)."""
    beta1: float = 0.9
    """AdamW beta1 (first-moment decay)."""
    beta2: float = 0.95
    """AdamW beta2 (second-moment decay)."""
    eps: float = 1e-8
    """AdamW epsilon."""
    # --- optimiser choice and the fused loss (lmforge.train.optim, lmforge.train.loss) ---
    optimizer: str = "adamw"
    """`adamw`, or `muon`: Muon (Newton-Schulz orthogonalised momentum) for the 2-D hidden matrices
    of the blocks, AdamW (train.lr, betas, eps, weight_decay) for embeddings, head, norms and biases."""
    muon_lr: float = 0.02
    """Muon's peak learning rate; it follows train.schedule (scaled by muon_lr / lr)."""
    muon_momentum: float = 0.95
    """Muon's (Nesterov) momentum."""
    muon_weight_decay: float = 0.0
    """Muon's decoupled weight decay (p *= 1 - lr * wd before the update)."""
    loss_chunk_rows: int = 4096
    """LM head + cross-entropy over chunks of this many token rows, gradients computed in the same
    pass: the full (tokens, vocab) fp32 logits are never held. 0 = full logits (the plain path)."""
    grad_clip: float = 1.0
    """Max global gradient norm; 0 disables clipping."""
    max_steps: int = 1000
    """Optimiser steps; 0 = no step budget."""
    max_epochs: float = 0.0
    """Passes over the training tokens; 0 = no epoch budget."""
    max_time: float = 0.0
    """Wall-clock seconds of training; 0 = no time budget."""
    max_tokens: int = 0
    """Training tokens (all processes together); 0 = no token budget."""
    label_smoothing: float = 0.0
    """Cross-entropy label smoothing (as `F.cross_entropy(label_smoothing=...)`)."""
    z_loss: float = 0.0
    """Weight of the z-loss, mean of logsumexp(logits)^2 over target tokens (PaLM uses 1e-4); 0 = off."""
    loss_norm: str = "token"
    """`token`: mean over the target tokens of the whole optimiser step; `sequence`: each sequence's
    mean, averaged over the sequences of the step."""
    nan_policy: str = "skip"
    """On a NaN/Inf loss or gradient: `skip` the update, `rollback` to the last checkpoint and skip
    the offending batches, or `abort` (stop with an error; the last checkpoint stays intact)."""
    max_bad_steps: int = 10
    """Abort after this many consecutive NaN/Inf steps, whatever the policy."""
    doc_masks: bool = True
    """Attend only within each document of a packed sequence."""
    shuffle: bool = True
    """Shuffle the training sequences (the order is a function of seed and epoch)."""
    peak_flops: float = 0.0
    """Peak FLOP/s of one device for MFU; 0 = a table of known GPUs (MFU is not logged on CPU)."""
    eval_every: int = 200
    """Validate every N steps (and at the end); 0 = only at the end."""
    eval_batches: int = 20
    """Validation micro-batches per evaluation (0 = the whole split)."""
    ckpt_every: int = 500
    """Checkpoint every N steps (and at the end); 0 = only at the end."""
    keep_last: int = 2
    """Complete checkpoints kept besides `best`."""
    light_ckpt_every: int = 0
    """Also write a weights-only checkpoint (`checkpoints/weights-N/`: model.safetensors + state.json,
    no optimiser, RNG or loader state) every N steps that are not full-checkpoint steps; eval, generate
    and export load them (`--checkpoint newest` or the directory), `--resume auto` never does. 0 = off."""
    freeze: list[str] = field(default_factory=list)
    """Glob patterns of parameter names to freeze (requires_grad=False), e.g. `["wte.weight",
    "blocks.0.*"]`: not updated, not in the optimiser, written once per run in checkpoints."""
    light_keep_last: int = 2
    """Weights-only checkpoints kept besides `best`; they never cause a full checkpoint to be deleted."""
    log_every: int = 10
    """Write a `train` metrics event every N steps."""
    precision: str = "auto"
    """`auto` (bf16 on a CUDA GPU that supports it, else fp32: bf16 autocast is several times slower
    than fp32 on CPUs without native bf16), `fp32`, `bf16` (autocast) or `fp16` (CUDA, GradScaler)."""
    device: str = "auto"
    """`auto`, `cpu`, `cuda` or `cuda:N`."""
    compile: bool = False
    """torch.compile the model."""
    grad_checkpointing: bool = False
    """Recompute each block's activations in the backward pass (less memory, ~30% more compute)."""
    early_stop_patience: int = 0
    """Stop after this many evaluations in a row without a val-loss improvement; 0 = off."""
    early_stop_min_delta: float = 0.0
    """Smallest val-loss decrease that counts as an improvement for early stopping."""
    sample_every: int = 0
    """Log samples for `eval.prompts` every N steps (kind `sample`); 0 = off."""
    async_checkpoint: bool = False
    """Write checkpoints in a background thread; training waits only for a CPU copy of the state."""
    auto_micro_batch: bool = False
    """Find the largest micro-batch that fits (a dry-run step at start-up, largest first) and
    accumulate to keep train.batch_size x train.grad_accum sequences per process and step."""
    distributed: str = "ddp"
    """Under torchrun (WORLD_SIZE > 1): `ddp` (replicate) or `fsdp` (FSDP2 fully_shard: shard
    parameters, gradients and optimiser state)."""
    collective_timeout: float = 1800.0
    """Under torchrun: seconds a collective (gradient all-reduce, barrier) waits for the other ranks
    before failing with a message; a rank that hung or died then ends the run instead of blocking it
    forever (PyTorch's default is 30 minutes)."""
    # -- starting from existing weights (train.init_from) --
    init_from: str | None = None
    """Start from existing weights: a local Hugging Face model folder (Llama, Qwen2, Qwen3, GPT-2), an
    lmforge run directory (its best checkpoint) or checkpoint directory. The model section is taken from
    it (keys you also set must agree; block_size and dropout are yours); optimiser, schedule and data
    start fresh (this is not a resume). See `lmforge.train.init_from`."""
    init_from_allow_pickle: bool = False
    """Allow `train.init_from` to read a `pytorch_model.bin` pickle (with torch.load(weights_only=True));
    off by default: safetensors is the safe format."""
    seed: int = 1337
    """Seed of the weights' initialisation, dropout and the data order."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        _finite(self, "train")
        _check(self.batch_size > 0, "train.batch_size", "must be > 0")
        _check(self.grad_accum > 0, "train.grad_accum", "must be > 0")
        _check(self.lr >= 0, "train.lr", f"must be >= 0 (0 leaves the weights as they are), got {self.lr}")
        _check(0 <= self.min_lr <= self.lr, "train.min_lr", f"must be in [0, train.lr], got {self.min_lr}")
        _check(self.schedule in ("cosine", "linear", "constant", "wsd", "step", "exponential"), "train.schedule",
               f"must be cosine, linear, constant, wsd, step or exponential, got {self.schedule!r}")
        _check(0.0 < self.decay_fraction <= 1.0, "train.decay_fraction", "must be in (0, 1]")
        _check(all(m > 0 for m in self.milestones) and self.milestones == sorted(self.milestones),
               "train.milestones", "must be increasing positive step numbers")
        _check(0.0 < self.gamma <= 1.0, "train.gamma", "must be in (0, 1]")
        _check(self.max_tokens >= 0, "train.max_tokens", "must be >= 0")
        _check(0.0 <= self.label_smoothing < 1.0, "train.label_smoothing", "must be in [0, 1)")
        _check(self.z_loss >= 0.0, "train.z_loss", "must be >= 0")
        _check(self.loss_norm in ("token", "sequence"), "train.loss_norm",
               f"must be token or sequence, got {self.loss_norm!r}")
        _check(self.nan_policy in ("skip", "rollback", "abort"), "train.nan_policy",
               f"must be skip, rollback or abort, got {self.nan_policy!r}")
        _check(self.max_bad_steps >= 1, "train.max_bad_steps", "must be >= 1")
        _check(self.peak_flops >= 0.0, "train.peak_flops", "must be >= 0")
        _check(self.early_stop_patience >= 0, "train.early_stop_patience", "must be >= 0")
        _check(self.early_stop_min_delta >= 0.0, "train.early_stop_min_delta", "must be >= 0")
        _check(self.sample_every >= 0, "train.sample_every", "must be >= 0")
        _check(self.distributed in ("ddp", "fsdp"), "train.distributed",
               f"must be ddp or fsdp, got {self.distributed!r}")
        _check(self.warmup_steps >= 0, "train.warmup_steps", "must be >= 0")
        _check(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        _check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "train.beta1", "betas must be in [0, 1)")
        _check(self.grad_clip >= 0, "train.grad_clip", "must be >= 0")
        _check(self.optimizer in ("adamw", "muon"), "train.optimizer",
               f"must be adamw or muon, got {self.optimizer!r}")
        _check(self.muon_lr > 0, "train.muon_lr", f"must be > 0, got {self.muon_lr}")
        _check(0 <= self.muon_momentum < 1, "train.muon_momentum", f"must be in [0, 1), got {self.muon_momentum}")
        _check(self.muon_weight_decay >= 0, "train.muon_weight_decay", "must be >= 0")
        _check(self.loss_chunk_rows >= 0, "train.loss_chunk_rows", "must be >= 0 (0 = full logits)")
        _check(self.max_steps >= 0 and self.max_epochs >= 0 and self.max_time >= 0, "train.max_steps",
               "budgets must be >= 0")
        _check(self.max_steps > 0 or self.max_epochs > 0 or self.max_time > 0 or self.max_tokens > 0,
               "train.max_steps",
               "set at least one budget: train.max_steps, train.max_epochs, train.max_tokens or train.max_time")
        _check(self.eval_every >= 0, "train.eval_every", "must be >= 0")
        _check(self.ckpt_every >= 0, "train.ckpt_every", "must be >= 0")
        _check(self.keep_last >= 1, "train.keep_last", "must be >= 1")
        _check(self.light_ckpt_every >= 0, "train.light_ckpt_every", f"must be >= 0, got {self.light_ckpt_every}")
        _check(self.light_keep_last >= 1, "train.light_keep_last", f"must be >= 1, got {self.light_keep_last}")
        _check(self.log_every > 0, "train.log_every", "must be > 0")
        _check(self.collective_timeout > 0, "train.collective_timeout", f"must be > 0 seconds, got "
               f"{self.collective_timeout}")
        _check(self.precision in ("auto", "fp32", "bf16", "fp16"), "train.precision",
               f"must be auto, fp32, bf16 or fp16, got {self.precision!r}")
