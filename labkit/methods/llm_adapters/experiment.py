"""LLM-Adapters' experiment: typed knobs, the new-operator task on a pretrained tiny LM, the arms, the placement grid,
the claims and ``run``.

The base is :func:`labkit.substrates.pretrained_lm.pretrained_lm`, a TinyLM the kit pretrained on "a+b=c;" (or a
local Hugging Face causal LM, ``base_model=<folder>``). The target task is the card's *new operator* "a-b=c;" meaning
c = a + b + 1 (:func:`labkit.data.arithmetic.operator_task`): it reuses the digit and carry skills but needs a real
change. Per seed: new distinct (a, b) pairs split into train and test, new module initialisations, new batch order;
every arm of a seed sees the same data. The arms (each starts from a deep copy of the frozen base):

- **frozen base** (no training), **full fine-tuning** (every weight, lr ``lr_full``);
- **Series** after the MLP, **Parallel** beside the MLP (bottleneck r, lr ``lr_adapter``);
- **LoRA** on attention + MLP and on attention only (rank r, α, lr ``lr_adapter``);
- **Prefix** tuning (n_v key/value vectors per layer, lr ``lr_prefix``);
- with ``grid``: the rest of the placement grid {Series, Parallel, LoRA} × {attention, MLP, both}.

Matched budget: every trained arm takes the same steps, batch and schedule; the learning rate is set per family as
the card lists it (prefix tuning needs a much larger one). Test accuracy is greedy exact match; nothing is chosen on
the test set (the learning rates and sizes are fixed before the run).

On divergence: the run stops (DivergenceError names the step and series); nothing is recorded.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from labkit.core import Arm, ClaimCheck, Outcome, RunContext, knob, method_run, params_of
from labkit.data import arithmetic as ar
from labkit.models.adapters import count_parameters

from .figures import make_figures
from .method import BEST_PLACEMENT, PLACEMENTS, PEFTConfig, architecture_of, attach, finetune

MAIN_METRIC = "test_acc"
BASES = ("addition-quick", "addition-standard")

# ---- the claims' margins, fixed before any run (the card's "claim check"; ratios are per seed, arm / full FT)
#: headline: LoRA at the paper's best placement (attention + MLP) reaches ≥ 0.9 × full fine-tuning's accuracy
LORA_RATIO = 0.9
#: series (after MLP) and parallel (beside MLP) reach ≥ 0.7 × full fine-tuning's accuracy
BOTTLENECK_RATIO = 0.7
#: prefix tuning is the weakest trained method: Prefix ≤ min(Series, Parallel, LoRA attn+MLP) − 0.10
PREFIX_GAP = 0.10
#: sanity of the toy: the frozen base cannot do the new operator (≤ 10%), full fine-tuning can (≥ 80%)
FROZEN_MAX, FULL_MIN = 0.10, 0.80
#: printed precision of the claims (accuracies and ratios): 2 decimals
DECIMALS = 2


@dataclass(frozen=True)
class Knobs:
    rank: int = knob(4, low=1, high=64, help="LoRA rank r (both LoRA arms)")
    bottleneck: int = knob(16, low=1, high=256, help="bottleneck size r of the series and parallel adapters")
    n_virtual: int = knob(10, low=1, high=64, help="prefix tuning: virtual key/value vectors per layer")
    n_steps: int = knob(40, standard=250, full=600, low=1, high=100_000, help="AdamW steps of every trained arm")
    grid: bool = knob(
        False, standard=True, full=True, help="also train the placement grid {method} × {attn, MLP, both}"
    )
    lr_adapter: float = knob(1e-2, low=1e-5, high=1.0, log=True, main=False, help="AdamW lr of series, parallel, LoRA")
    lr_full: float = knob(1e-3, low=1e-6, high=1.0, log=True, main=False, help="AdamW lr of full fine-tuning")
    lr_prefix: float = knob(0.1, low=1e-5, high=10.0, log=True, main=False, help="AdamW lr of prefix tuning")
    lora_alpha: float = knob(8.0, low=0.1, high=1024.0, log=True, main=False, help="LoRA α (scale α/r)")
    adapter_init: str = knob(
        "zero_up", choices=("zero_up", "bert"), help="bottleneck init: U = 0 (exactly the identity), or N(0, 0.02²)"
    )
    train_on_inputs: bool = knob(
        False, main=False, help="also score the prompt's tokens (the official script's default); off: answer only"
    )
    warmup_frac: float = knob(0.05, low=0.0, high=0.5, main=False, help="linear warm-up share of the steps, then decay")
    batch_size: int = knob(64, low=1, high=4096, main=False, help="mini-batch size")
    n_train: int = knob(2000, low=16, high=9990, main=False, help="training examples of the new operator")
    n_test: int = knob(200, standard=500, full=1000, low=10, high=1000, main=False, help="test examples (exact match)")
    n_seeds: int = knob(
        3, standard=5, full=10, low=1, high=100, main=False, help="independent problems (new split, inits, batches)"
    )
    eval_every: int = knob(
        20, standard=25, full=50, low=1, high=100_000, main=False, help="test accuracy every this many steps (curves)"
    )
    base: str = knob(
        "addition-quick",
        full="addition-standard",
        choices=BASES,
        main=False,
        help="the kit's pretrained TinyLM: 2 layers × d 64 (shipped) or 4 × d 128 (pretrained once, then cached)",
    )
    base_model: str = knob(
        "", main=False, help="a local Hugging Face causal-LM folder to adapt instead (empty: the kit's TinyLM)"
    )

    def __post_init__(self):
        if self.batch_size > self.n_train:
            raise ValueError(f"batch_size={self.batch_size} is larger than n_train={self.n_train}")
        if self.n_train + self.n_test > 100 * 100:
            raise ValueError(
                f"n_train + n_test = {self.n_train + self.n_test} > 10000 distinct pairs (a, b) ∈ [0, 99]²"
            )
        if self.base_model and not (Path(self.base_model).expanduser() / "config.json").is_file():
            raise ValueError(f"base_model={self.base_model!r} is not a folder with a config.json (save_pretrained)")


PARAMS = params_of(Knobs)


# --- the arms ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmSpec:
    """One arm: ``peft`` is None for the frozen base (``lr`` 0) and for full fine-tuning."""

    arm: Arm
    peft: PEFTConfig | None
    lr: float
    main: bool  # one of the card's seven arms (False: only in the placement grid)

    @property
    def family(self) -> str:
        return self.peft.family if self.peft is not None else self.arm.key

    @property
    def trained(self) -> bool:
        return self.arm.key != "frozen"


NAMES = {
    "series": "Series",
    "parallel": "Parallel",
    "lora": "LoRA",
    "attention": "attn",
    "mlp": "MLP",
    "both": "attn+MLP",
}


def peft_arm(family: str, placement: str, p: Knobs, main: bool) -> ArmSpec:
    size = p.rank if family == "lora" else p.bottleneck
    cfg = PEFTConfig(family, placement, size, alpha=p.lora_alpha, init=p.adapter_init)
    where = {"series": "after", "parallel": "beside", "lora": "on"}[family]
    label = f"{NAMES[family]} {where} {NAMES[placement]} (r={size})"
    return ArmSpec(Arm(f"{family}_{placement}", label), cfg, p.lr_adapter, main)


def make_arms(p: Knobs) -> list[ArmSpec]:
    """The card's seven arms, then (``grid``) the other cells of the placement grid."""
    arms = [
        ArmSpec(Arm("frozen", "Frozen base"), None, 0.0, True),
        ArmSpec(Arm("full", "Full fine-tuning"), None, p.lr_full, True),
        peft_arm("series", "mlp", p, True),
        peft_arm("parallel", "mlp", p, True),
        peft_arm("lora", "both", p, True),
        peft_arm("lora", "attention", p, True),
        ArmSpec(
            Arm("prefix", f"Prefix (n_v={p.n_virtual})"),
            PEFTConfig("prefix", "attention", p.n_virtual),
            p.lr_prefix,
            True,
        ),
    ]
    if p.grid:
        have = {a.arm.key for a in arms}
        for family in ("series", "parallel", "lora"):
            for placement in PLACEMENTS:
                if f"{family}_{placement}" not in have:
                    arms.append(peft_arm(family, placement, p, False))
    return arms


def build(base: nn.Module, spec: ArmSpec) -> nn.Module:
    """A deep copy of ``base`` ready for the arm: frozen, all-trainable (full FT) or with the arm's PEFT module."""
    model = copy.deepcopy(base)
    for q in model.parameters():
        q.requires_grad_(spec.arm.key == "full")
    if spec.peft is not None:
        if spec.peft.family == "prefix" and architecture_of(model) != "tinylm":
            hf_prefix(model, spec.peft.size)
        else:
            attach(model, spec.peft)
    return model


def hf_prefix(model: nn.Module, n_virtual: int) -> None:
    """Prefix tuning on a Hugging Face model (in labkit's ``HFCausalLM``) through PEFT's ``PrefixTuningConfig``
    (an optional package; it puts the learned keys and values in the key/value cache)."""
    try:
        from peft import PrefixTuningConfig, get_peft_model
    except ImportError as err:
        raise ImportError("prefix tuning on a Hugging Face model needs the optional package `peft`") from err
    if not hasattr(model, "model"):
        raise TypeError("expected labkit's HFCausalLM wrapper (load_hf_causal_lm)")
    model.model = get_peft_model(model.model, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n_virtual))


# --- the toy ------------------------------------------------------------------------------------------------------


def load_base(p: Knobs) -> nn.Module:
    """The frozen base: the kit's pretrained TinyLM (``base``), or ``base_model`` through ``load_hf_causal_lm``."""
    from labkit.substrates import pretrained_lm as plm

    if p.base_model:
        return plm.load_hf_causal_lm(os.path.expanduser(p.base_model), token_ids=hf_token_ids(p.base_model))
    config = plm.QUICK_CONFIG if p.base == "addition-quick" else plm.STANDARD_CONFIG
    return plm.pretrained_lm(config)


def hf_token_ids(path: str) -> list[int] | None:
    """The model's id of each kit character when the folder has a tokenizer; otherwise the first 14 ids (a model
    built from a config with no tokenizer), or None when its vocabulary is exactly the kit's 14 symbols."""
    import json

    folder = Path(path).expanduser()
    if any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(os.fspath(folder), local_files_only=True)
        ids = [tok.convert_tokens_to_ids(c) for c in ar.ALPHABET]
        if None in ids or len(set(ids)) != len(ids) or tok.unk_token_id in ids:
            raise ValueError(f"the tokenizer in {folder} has no single token for each of {ar.ALPHABET!r}")
        return ids
    vocab = json.loads((folder / "config.json").read_text()).get("vocab_size", 0)
    if vocab < len(ar.ALPHABET):
        raise ValueError(f"the model's vocabulary ({vocab}) is smaller than the kit's {len(ar.ALPHABET)} symbols")
    return None if vocab == len(ar.ALPHABET) else list(range(len(ar.ALPHABET)))


def make_task(seed: int, p: Knobs) -> tuple[ar.Task, ar.Task]:
    """The new operator "a-b=c;" (c = a + b + 1) over distinct pairs, split into train and test."""
    task = ar.operator_task(p.n_train + p.n_test, torch.Generator().manual_seed(seed))
    return task.split(p.n_train)


def eval_schedule(n_steps: int, every: int) -> list[int]:
    return sorted(set(range(0, n_steps + 1, every)) | {n_steps})


# --- typed results ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmOutcome:
    """One arm over the seeds: final test accuracy and wall time per seed, trainable parameters."""

    spec: ArmSpec
    n_trainable: int
    share: float  # trainable / base parameters
    accuracy: tuple[float, ...]
    seconds: tuple[float, ...]

    @property
    def arm(self) -> Arm:
        return self.spec.arm

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracy))


# --- the claims (pure functions of per-seed numbers) --------------------------------------------------------------


def _ratio(a, b) -> np.ndarray:
    a, b = np.asarray(a, float), np.asarray(b, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)


def _nan_note(values) -> str:
    return "" if np.isfinite(values).all() else "a value is not finite (full FT at 0, or a NaN): inconclusive"


def lora_claim(lora, full, share: float, ratio: float = LORA_RATIO) -> ClaimCheck:
    """Headline (the paper's main statement): LoRA at its best placement (attention + MLP) comes close to full
    fine-tuning with a few % of the parameters; the card's margin: accuracy ≥ 0.9 × full FT's, per seed."""
    values = _ratio(lora, full)
    return ClaimCheck(
        claim=f"LoRA on attention + MLP comes close to full fine-tuning (≥ {ratio:g} × its accuracy) "
        f"while training {share:.1%} of the parameters",
        quantity="test exact match, LoRA(attn+MLP) / full fine-tuning, per seed",
        values=values,
        margin=ratio,
        headline=True,
        numbers={"LoRA attn+MLP": float(np.mean(lora)), "full FT": float(np.mean(full))},
        detail=_nan_note(values),
        decimals=DECIMALS,
    )


def bottleneck_claim(name: str, acc, full, ratio: float = BOTTLENECK_RATIO) -> ClaimCheck:
    """Supporting: a bottleneck adapter at its best placement gets most of the way (≥ 0.7 × full FT)."""
    values = _ratio(acc, full)
    return ClaimCheck(
        claim=f"{name} gets most of the way to full fine-tuning (≥ {ratio:g} × its accuracy)",
        quantity=f"test exact match, {name} / full fine-tuning, per seed",
        values=values,
        margin=ratio,
        numbers={name: float(np.mean(acc)), "full FT": float(np.mean(full))},
        detail=_nan_note(values),
        decimals=DECIMALS,
    )


def prefix_claim(prefix, series, parallel, lora, gap: float = PREFIX_GAP) -> ClaimCheck:
    """Supporting: prefix tuning is clearly the weakest trained method, Prefix ≤ min(Series, Parallel, LoRA) − 0.10."""
    best_other = np.minimum(np.minimum(np.asarray(series, float), np.asarray(parallel, float)), np.asarray(lora, float))
    values = np.asarray(prefix, float) - best_other
    return ClaimCheck(
        claim=f"prefix tuning is clearly weaker: ≥ {gap:g} below the weakest of Series, Parallel and LoRA",
        quantity="test exact match, Prefix − min(Series, Parallel, LoRA attn+MLP), per seed",
        values=values,
        margin=-gap,
        higher_is_better=False,
        numbers={"Prefix": float(np.mean(prefix)), "min of the others": float(np.mean(best_other))},
        detail=_nan_note(values),
        decimals=DECIMALS,
    )


def lora_placement_claim(both, attention) -> ClaimCheck:
    """Supporting (the placement study): LoRA on attention + MLP is at least as good as on attention only."""
    check = ClaimCheck.paired(
        "LoRA on attention + MLP is at least as good as LoRA on attention only",
        "test exact match, LoRA(attn+MLP) − LoRA(attn), per seed",
        both,
        attention,
        labels=("LoRA attn+MLP", "LoRA attn"),
        margin=0.0,
        decimals=DECIMALS,
    )
    check.detail = _nan_note(check.values)
    return check


def placement_claim(family: str, accuracy: dict[str, tuple[float, ...]]) -> ClaimCheck:
    """Supporting (grid only): the paper's placement of ``family`` is at least as good as each other placement;
    ``accuracy`` maps each placement to its per-seed accuracies."""
    best = BEST_PLACEMENT[family]
    others = [pl for pl in PLACEMENTS if pl != best]
    rival = np.max([np.asarray(accuracy[pl], float) for pl in others], axis=0)
    values = np.asarray(accuracy[best], float) - rival
    return ClaimCheck(
        claim=f"{NAMES[family]} is best at the paper's placement ({NAMES[best]})",
        quantity=f"test exact match, {NAMES[family]} at {NAMES[best]} − the best of "
        + " and ".join(NAMES[o] for o in others),
        values=values,
        margin=0.0,
        numbers={NAMES[pl]: float(np.mean(accuracy[pl])) for pl in PLACEMENTS},
        detail=_nan_note(values),
        decimals=DECIMALS,
    )


def sanity_claims(frozen, full) -> list[ClaimCheck]:
    """The toy's sanity: the frozen base cannot do the new operator, full fine-tuning learns it."""
    return [
        ClaimCheck(
            claim=f"the frozen base cannot do the new operator (≤ {FROZEN_MAX:.0%} exact match)",
            quantity="test exact match of the frozen base, per seed",
            values=frozen,
            margin=FROZEN_MAX,
            higher_is_better=False,
            decimals=DECIMALS,
        ),
        ClaimCheck(
            claim=f"full fine-tuning learns the new operator (≥ {FULL_MIN:.0%} exact match)",
            quantity="test exact match of full fine-tuning, per seed",
            values=full,
            margin=FULL_MIN,
            detail=_nan_note(full),
            decimals=DECIMALS,
        ),
    ]


def make_claims(outcomes: dict[str, ArmOutcome]) -> list[ClaimCheck]:
    acc = {key: o.accuracy for key, o in outcomes.items()}
    claims = [
        lora_claim(acc["lora_both"], acc["full"], outcomes["lora_both"].share),
        *sanity_claims(acc["frozen"], acc["full"]),
        bottleneck_claim("Series after MLP", acc["series_mlp"], acc["full"]),
        bottleneck_claim("Parallel beside MLP", acc["parallel_mlp"], acc["full"]),
        prefix_claim(acc["prefix"], acc["series_mlp"], acc["parallel_mlp"], acc["lora_both"]),
        lora_placement_claim(acc["lora_both"], acc["lora_attention"]),
    ]
    for family in ("series", "parallel", "lora"):
        if all(f"{family}_{pl}" in acc for pl in PLACEMENTS):
            claims.append(placement_claim(family, {pl: acc[f"{family}_{pl}"] for pl in PLACEMENTS}))
    return claims


# --- the experiment -----------------------------------------------------------------------------------------------


def train_arm(base, spec: ArmSpec, train, test, p: Knobs, seed: int, on_eval=None) -> tuple[nn.Module, list[float]]:
    """Build the arm from ``base`` (modules initialised from ``seed``) and fine-tune it; ``on_eval(step, model)``
    at each evaluation step. Returns the trained model and its losses."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build(base, spec)
    if not spec.trained:
        return model, []
    losses = finetune(
        model,
        train,
        n_steps=p.n_steps,
        lr=spec.lr,
        batch_size=p.batch_size,
        generator=torch.Generator().manual_seed(seed + 10_000),
        pad=ar.TOKENIZER.pad_id,
        warmup_frac=p.warmup_frac,
        train_on_inputs=p.train_on_inputs,
        series=spec.arm.label,
        eval_steps=eval_schedule(p.n_steps, p.eval_every) if on_eval is not None else (),
        on_eval=(lambda step: on_eval(step, model)) if on_eval is not None else None,
    )
    return model, losses


def accuracy(model: nn.Module, task: ar.Task) -> float:
    return ar.exact_match(model, task.prompts, task.answers, task.mask)


@method_run(Knobs, figures=make_figures, threads={"quick": 1, "standard": 1})
def run(ctx: RunContext[Knobs]) -> Outcome:
    p = ctx.p
    base = load_base(p).to(ctx.device).eval()
    n_base = count_parameters(base, trainable_only=False)
    seeds = ctx.seeds(p.n_seeds)
    specs = make_arms(p)
    acc: dict[str, list[float]] = {s.arm.key: [] for s in specs}
    secs: dict[str, list[float]] = {s.arm.key: [] for s in specs}
    n_trainable: dict[str, int] = {}
    bar = ctx.bar(len(seeds) * sum(s.trained for s in specs), f"{len(specs) - 1} arms × {len(seeds)} seeds")
    for seed in seeds:
        train, test = (t.to(ctx.device) for t in make_task(seed, p))
        for spec in specs:
            last: dict[int, float] = {}

            def log(step, model, spec=spec, seed=seed, last=last, test=test):
                last[step] = accuracy(model, test)
                ctx.history.log(step, spec.arm.label, "test_acc", last[step], seed=seed)
                ctx.check_weights([q for q in model.parameters() if q.requires_grad], step, spec.arm.label)

            start = time.perf_counter()
            model, losses = train_arm(base, spec, train, test, p, seed, on_eval=log)
            if spec.trained:
                ctx.check_weights(model, p.n_steps, spec.arm.label)
                steps = eval_schedule(p.n_steps, p.eval_every)
                for before, step in zip(steps[:-1], steps[1:]):
                    ctx.history.log(step, spec.arm.label, "train_loss", float(np.mean(losses[before:step])), seed)
                bar.update(1)
            else:  # the frozen base: one evaluation, drawn as a flat line
                log(0, model)
                ctx.history.log(p.n_steps, spec.arm.label, "test_acc", last[0], seed=seed)
                last[p.n_steps] = last[0]
            secs[spec.arm.key].append(time.perf_counter() - start)
            acc[spec.arm.key].append(last[p.n_steps])
            n_trainable[spec.arm.key] = count_parameters(model) if spec.trained else 0
    bar.close()
    outcomes = {
        s.arm.key: ArmOutcome(
            s, n_trainable[s.arm.key], n_trainable[s.arm.key] / n_base, tuple(acc[s.arm.key]), tuple(secs[s.arm.key])
        )
        for s in specs
    }
    metrics = {f"acc_{k}": o.mean for k, o in outcomes.items()}
    metrics |= {f"params_{k}": float(o.n_trainable) for k, o in outcomes.items()}
    metrics["lora_over_full"] = float(np.mean(_ratio(acc["lora_both"], acc["full"])))  # NaN when full FT is at 0
    extras = {"arms": list(outcomes.values()), "seeds": seeds, "n_base": n_base, "architecture": architecture_of(base)}
    return Outcome(metrics=metrics, claims=make_claims(outcomes), extras=extras)


def arm_table(arms: list[ArmOutcome]):
    """The card's table: method, placement, trainable parameters (count and %), accuracy, wall time per seed."""
    import pandas as pd

    rows = []
    for o in arms:
        place = "—" if o.spec.peft is None or o.spec.peft.family == "prefix" else NAMES[o.spec.peft.placement]
        rows.append(
            {
                "arm": o.arm.label,
                "placement": place,
                "trainable": o.n_trainable,
                "% of base": round(100 * o.share, 2),
                "exact match": round(o.mean, 3),
                "± std": round(float(np.std(o.accuracy, ddof=1)) if len(o.accuracy) > 1 else math.nan, 3),
                "s / seed": round(float(np.mean(o.seconds)), 1),
            }
        )
    return pd.DataFrame(rows)
