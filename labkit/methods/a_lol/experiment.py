"""A-LoL's experiment: the typed knobs, the rule-language toy, the arms, the claims and ``run``.

The data is :func:`labkit.data.language.make_rule_mixture`: a rule task whose offline set is dominated by mediocre
responses. Per seed: π_ref (NLL on everything), the value head on π_ref's greedy outputs for held-out prompts, the
advantages, then every arm from π_ref. All (arm, seed) models are trained at once: their parameters are stacked and
one ``torch.func.vmap`` forward serves them all (each model sees its own batches; the summed loss separates, so each
gets exactly its own gradient and AdamW update; a test checks one stacked step against :func:`a_lol_step`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap

from labkit.core import Arm, ClaimCheck, Outcome, RunContext, check_arms, knob, method_run, params_of
from labkit.data import language as lang
from labkit.models.tiny_lm import TinyLM, prompt_features
from labkit.substrates.preference import dpo_loss

from .figures import make_figures
from .method import (
    a_lol_kl_loss,
    a_lol_loss,
    a_lol_ref_free_loss,
    a_lol_seq_loss,
    draw_rows,
    fit_value_head,
    nll_loss,
    positive_fraction,
    priority_probs,
    r_gold_loss,
    r_lol_loss,
    wbc_loss,
)


@dataclass(frozen=True)
class Knobs:
    lr: float = knob(5e-4, low=1e-6, high=1.0, log=True, help="AdamW learning rate of every arm after SFT")
    eps: float = knob(
        0.9, low=0.0, high=1.0, help="clip ε of the importance weight: r clipped to [1−ε, 1+ε] (official default 0.9)"
    )
    sampling: str = knob(
        "uniform",
        choices=("uniform", "priority"),
        help="A-LoL batches: uniform over all data (A⁺ = 0 rows add nothing) or priority ∝ A⁺ (official good_priority)",
    )
    expert_frac: float = knob(
        0.2,
        low=0.0,
        high=1.0,
        help="share of expert responses in the data (the rest: mediocre, then random_frac random)",
    )
    n_steps: int = knob(150, 400, 1500, low=1, high=100_000, help="optimiser steps of each arm after SFT")
    variants: bool = knob(
        False,
        True,
        True,
        help="also train A-LoL ref-free / seq / KL, A-LoL with the other sampling, R-GOLD, R-LoL and DPO",
    )
    random_frac: float = knob(0.2, low=0.0, high=1.0, main=False, help="share of random responses")
    kl_beta: float = knob(0.1, low=0.0, high=10.0, main=False, help="β_KL of the A-LoL KL variant")
    dpo_beta: float = knob(
        0.1,
        low=1e-3,
        high=10.0,
        log=True,
        main=False,
        help="DPO's β (pairs: expert response vs the mediocre response to the same prompt)",
    )
    sft_steps: int = knob(
        300, 600, 2000, low=1, high=100_000, main=False, help="NLL steps that make π_ref from the whole data set"
    )
    sft_lr: float = knob(2e-3, 1e-3, low=1e-6, high=1.0, log=True, main=False, help="π_ref's AdamW lr")
    value_steps: int = knob(
        300,
        low=1,
        high=100_000,
        main=False,
        help="Adam steps of the value head (the step with the lowest held-out MSE is kept)",
    )
    grad_clip: float = knob(
        1.0,
        low=0.0,
        high=100.0,
        main=False,
        help="per-model gradient-norm clip (0 = off; the official HHA runs use 0.3)",
    )
    n_train: int = knob(4000, 8000, 20000, low=64, high=1_000_000, main=False, help="offline training examples")
    n_val: int = knob(
        500,
        low=20,
        high=100_000,
        main=False,
        help="held-out prompts on which π_ref's greedy outputs train the value head",
    )
    n_test: int = knob(500, 1000, low=10, high=100_000, main=False, help="test prompts (greedy decoding)")
    batch_size: int = knob(32, 64, low=2, high=4096, main=False, help="examples per step (DPO: half as many pairs)")
    d_model: int = knob(32, 48, 128, low=8, high=1024, main=False, help="TinyLM width")
    eval_every: int = knob(
        40, 50, 100, low=1, high=100_000, main=False, help="greedy test reward every this many steps"
    )
    n_seeds: int = knob(
        3,
        3,
        5,
        low=1,
        high=100,
        main=False,
        help="seeds seed, seed+1, …: each has its own data, π_ref, value head and arms (the claims' interval)",
    )


PARAMS = params_of(Knobs)
MAIN_METRIC = "test_reward"

#: the rule language: vocabulary, prompt and response lengths
VOCAB, PROMPT_LEN, RESPONSE_LEN = 12, 4, 6
#: A-LoL importance ratios kept per step for the ratio plot (seed 0's A-LoL model, positive-advantage rows)
RATIOS_PER_STEP = 8

NLL = Arm("nll", "NLL")
WBC = Arm("wbc", "wBC")
A_LOL = Arm("a_lol", "A-LoL")
A_LOL_REF_FREE = Arm("a_lol_ref_free", "A-LoL ref-free")
A_LOL_SEQ = Arm("a_lol_seq", "A-LoL seq")
A_LOL_KL = Arm("a_lol_kl", "A-LoL KL")
A_LOL_PRIORITY = Arm("a_lol_priority", "A-LoL priority")
A_LOL_UNIFORM = Arm("a_lol_uniform", "A-LoL uniform")
R_GOLD = Arm("r_gold", "R-GOLD")
R_LOL = Arm("r_lol", "R-LoL")
DPO = Arm("dpo", "DPO")
BASE_ARMS = (NLL, WBC, A_LOL)
#: the A-LoL arms whose batches follow the ``sampling`` knob
A_LOL_FAMILY = frozenset({A_LOL.key, A_LOL_REF_FREE.key, A_LOL_SEQ.key, A_LOL_KL.key})
STYLES = ("follows the rule", "copies the prompt", "other")


def arm_plan(variants: bool, sampling: str) -> list[Arm]:
    """The arms a run trains: NLL, wBC, A-LoL, and with ``variants`` the A-LoL variants (including A-LoL with the
    other sampling), R-GOLD, R-LoL and DPO."""
    arms = list(BASE_ARMS)
    if variants:
        other = A_LOL_PRIORITY if sampling == "uniform" else A_LOL_UNIFORM
        arms += [A_LOL_REF_FREE, A_LOL_SEQ, A_LOL_KL, other, R_GOLD, R_LOL, DPO]
    return arms


def arm_sampling(arm: Arm, sampling: str) -> str:
    """Which rows an arm draws: "pairs" for DPO, "priority" (∝ A⁺) or "uniform"."""
    if arm.key == DPO.key:
        return "pairs"
    if arm.key == A_LOL_PRIORITY.key or (arm.key in A_LOL_FAMILY and sampling == "priority"):
        return "priority"
    return "uniform"


def arm_loss(arm: Arm, tok, ref_tok, reward, adv_plus, *, eps: float, kl_beta: float, dpo_beta: float):
    """Per-example loss of ``arm``: ``tok, ref_tok (..., B, L)`` token log-probs of π_θ and π_ref, ``reward,
    adv_plus (..., B)``. DPO's batch is (chosen half, rejected half) and gives ``(..., B/2)``."""
    logp, ref_logp = tok.sum(-1), ref_tok.sum(-1)
    match arm.key:
        case "nll":
            return nll_loss(logp)
        case "wbc":
            return wbc_loss(logp, reward)
        case "a_lol" | "a_lol_priority" | "a_lol_uniform":
            return a_lol_loss(logp, ref_logp, adv_plus, eps)
        case "a_lol_ref_free":
            return a_lol_ref_free_loss(logp, adv_plus)
        case "a_lol_seq":
            return a_lol_seq_loss(tok, ref_tok, adv_plus, eps)
        case "a_lol_kl":
            return a_lol_kl_loss(logp, ref_logp, adv_plus, kl_beta)
        case "r_gold":
            return r_gold_loss(tok, reward)
        case "r_lol":
            return r_lol_loss(logp, ref_logp, reward, eps)
        case "dpo":
            h = logp.shape[-1] // 2
            return dpo_loss(logp[..., :h], logp[..., h:], ref_logp[..., :h], ref_logp[..., h:], dpo_beta)
    raise ValueError(f"unknown arm {arm!r}")


# --- records ---------------------------------------------------------------------------------------------------


@dataclass
class ArmOutcome:
    """One trained arm (or π_ref): final greedy test reward per seed and the share of its greedy outputs in each
    of ``STYLES`` (mean over seeds)."""

    arm: Arm
    final_reward: list[float]
    styles: list[float]


@dataclass
class AdvantageStats:
    """The advantage filter: per seed the positive fraction and the value head's held-out MSE; for the first seed
    the advantages by data source, the share of each source with A > 0 and its share of the total A⁺ mass."""

    positive_frac: list[float]
    value_mse: list[float]
    by_source: dict[str, list[float]]
    positive_by_source: dict[str, float]
    mass_by_source: dict[str, float]
    source_reward: list[float]


# --- data and analysis helpers -----------------------------------------------------------------------------


def data_mix(expert_frac: float, random_frac: float) -> tuple[float, float, float]:
    """(expert, mediocre, random) shares; mediocre takes the rest."""
    mediocre = 1.0 - expert_frac - random_frac
    if mediocre < -1e-9:
        raise ValueError(f"expert_frac + random_frac = {expert_frac + random_frac:g} > 1: no room for the mix")
    return (expert_frac, max(mediocre, 0.0), random_frac)


def response_style(prompts, responses, vocab_size: int = VOCAB):
    """Which data source a response imitates, judged on its second half (where expert and mediocre differ):
    0 "follows the rule" if more than half of those tokens equal y*, 1 "copies the prompt" if more than half equal
    x_{t mod P}, else 2 "other". ``(N,)``."""
    L, half = responses.shape[1], responses.shape[1] // 2
    t = torch.arange(half, L, device=responses.device)
    rule = (responses[:, t] == lang.rule_targets(prompts, L, vocab_size)[:, t]).float().mean(1)
    copy = (responses[:, t] == prompts[:, t % prompts.shape[1]]).float().mean(1)
    return torch.where(rule > 0.5, 0, torch.where(copy > 0.5, 1, 2))


def style_shares(prompts, responses) -> list[float]:
    """Share of ``responses`` in each of ``STYLES``."""
    st = response_style(prompts, responses)
    return [float((st == k).float().mean()) for k in range(len(STYLES))]


def make_data(seed: int, *, n_train: int, n_val: int, n_test: int, mix: tuple[float, float, float]):
    """One seed's train mixture, validation prompts and test prompts, and its CPU generator (seeded by ``seed``)."""
    gen = torch.Generator().manual_seed(int(seed))
    train = lang.make_rule_mixture(n_train, gen, VOCAB, PROMPT_LEN, RESPONSE_LEN, mix=mix)
    val = lang.random_prompts(n_val, PROMPT_LEN, VOCAB, gen)
    test = lang.random_prompts(n_test, PROMPT_LEN, VOCAB, gen)
    return train, val, test, gen


# --- many TinyLMs at once ----------------------------------------------------------------------------------


class Stack:
    """M TinyLMs with stacked parameters ``{name: (M, ...)}``; ``logits(tokens (M, B, T))`` via vmap."""

    def __init__(self, base: TinyLM, params: dict):
        self.base, self.params = base, params

    @classmethod
    def fresh(cls, n: int, d_model: int, init_seed: int) -> Stack:
        torch.manual_seed(init_seed)
        models = [TinyLM(VOCAB, PROMPT_LEN + RESPONSE_LEN, d_model=d_model) for _ in range(n)]
        params, _ = stack_module_state(models)
        return cls(models[0], {k: v.detach().clone().requires_grad_(True) for k, v in params.items()})

    def to(self, device) -> Stack:
        self.base.to(device)
        self.params = {k: v.detach().to(device).requires_grad_(True) for k, v in self.params.items()}
        return self

    def select(self, index) -> Stack:
        """A new Stack of models ``index`` (a list; repeats allowed), parameters copied and trainable."""
        idx = torch.as_tensor(index)
        return Stack(self.base, {k: v.detach()[idx].clone().requires_grad_(True) for k, v in self.params.items()})

    def model(self, m: int) -> TinyLM:
        """Model ``m`` as a plain (frozen) TinyLM."""
        out = TinyLM(VOCAB, PROMPT_LEN + RESPONSE_LEN, d_model=self.base.d_model)
        out.load_state_dict({k: v.detach()[m] for k, v in self.params.items()})
        return out.eval().requires_grad_(False)

    def logits(self, tokens):
        def one(params, tok):
            return functional_call(self.base, params, (tok,))

        return vmap(one)(self.params, tokens)

    def token_logprobs(self, prompts, responses):
        """log π_m(y_t | x, y_<t) for each model's own batch. ``(M, B, L)``."""
        P, L = prompts.shape[-1], responses.shape[-1]
        logits = self.logits(torch.cat([prompts, responses], -1))[:, :, P - 1 : P - 1 + L]
        return logits.log_softmax(-1).gather(-1, responses.unsqueeze(-1)).squeeze(-1)

    @torch.no_grad()
    def greedy(self, prompts, length: int):
        """Greedy responses of every model to ``prompts (M, N, P)``. ``(M, N, length)``."""
        seq = prompts
        for _ in range(length):
            seq = torch.cat([seq, self.logits(seq)[:, :, -1].argmax(-1, keepdim=True)], -1)
        return seq[..., prompts.shape[-1] :]


def clip_per_model(params: dict, max_norm: float) -> None:
    """Scale each model's gradient so its global norm is at most ``max_norm`` (``clip_grad_norm_`` per model)."""
    if max_norm <= 0:
        return
    grads = [p.grad for p in params.values() if p.grad is not None]
    norms = torch.stack([g.pow(2).flatten(1).sum(1) for g in grads]).sum(0).sqrt()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *[1] * (g.dim() - 1)))


def greedy_rewards(stack: Stack, prompts) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy responses of every model to its ``prompts (M, N, P)`` and their mean reward per model ``(M,)``."""
    ys = stack.greedy(prompts, RESPONSE_LEN)
    M, N = ys.shape[:2]
    r = lang.rule_reward(prompts.reshape(M * N, -1), ys.reshape(M * N, -1), VOCAB).view(M, N).mean(1)
    return ys, r


# --- claims ----------------------------------------------------------------------------------------------------

#: decimals of the claims' printed numbers. Measured at the quick preset over ATEN_CPU_CAPABILITY default / avx2 /
#: avx512 and 1-2 threads (benchmarks/spread/a_lol.json): the claims' means move by up to 0.0006 and their interval
#: edges by up to 0.0016, but at 2 decimals some printed numbers sit on a rounding boundary (wBC's mean reward
#: 0.5149-0.5158, the NLL claim's low edge 0.4945-0.4951), so they print at 1 decimal, > 10x the spread from a boundary
CLAIM_DECIMALS = 1
#: the card's claim check: A-LoL's reward at least 0.15 above wBC's and 0.20 above NLL's (fixed before any run)
WBC_MARGIN = 0.15
NLL_MARGIN = 0.20


def beats_wbc_claim(r_alol, r_wbc, decimals: int = CLAIM_DECIMALS) -> ClaimCheck:
    """Headline: the paper reports A-LoL above reward-weighted BC (and the other offline baselines). Margin +0.15,
    the card's claim check (A-LoL ≥ wBC + 0.15: filtering recovers the rare good behaviour, not a sliver of it).
    Per seed: final greedy test reward of A-LoL minus that of wBC."""
    return ClaimCheck.paired(
        claim="A-LoL reaches a higher reward than reward-weighted behaviour cloning (wBC) on the same offline data",
        quantity="greedy test reward, A-LoL − wBC, final step",
        method=r_alol,
        baseline=r_wbc,
        margin=WBC_MARGIN,
        margin_decimals=2,
        headline=True,
        labels=("A-LoL", "wBC"),
        detail="toy: mediocre responses dominate the data (see the notebook); a diverged arm makes this inconclusive",
        decimals=decimals,
    )


def beats_nll_claim(r_alol, r_nll, decimals: int = CLAIM_DECIMALS) -> ClaimCheck:
    """Supporting: A-LoL above plain fine-tuning on all the data (NLL); margin +0.20 (the card's).
    Per seed: A-LoL − NLL."""
    return ClaimCheck.paired(
        claim="A-LoL reaches a higher reward than plain fine-tuning on all the data (NLL)",
        quantity="greedy test reward, A-LoL − NLL, final step",
        method=r_alol,
        baseline=r_nll,
        margin=NLL_MARGIN,
        margin_decimals=2,
        labels=("A-LoL", "NLL"),
        decimals=decimals,
    )


# --- the experiment ------------------------------------------------------------------------------------------


@method_run(Knobs, figures=make_figures, threads={"quick": 1})
def run(ctx: RunContext[Knobs]) -> Outcome:
    p, dev = ctx.p, ctx.device
    mix = data_mix(p.expert_frac, p.random_frac)
    seeds = ctx.seeds(p.n_seeds)
    S, B = len(seeds), p.batch_size
    arms = arm_plan(p.variants, p.sampling)
    A = len(arms)
    per_seed = [make_data(s, n_train=p.n_train, n_val=p.n_val, n_test=p.n_test, mix=mix) for s in seeds]
    train = [d[0].to(dev) for d in per_seed]
    gens = [d[3] for d in per_seed]
    val_prompts = torch.stack([d[1] for d in per_seed]).to(dev)
    test = torch.stack([d[2] for d in per_seed]).to(dev)
    P_all = torch.stack([t.prompts for t in train])  # (S, N, P)
    Y_all = torch.stack([t.responses for t in train])  # (S, N, L)
    R_all = torch.stack([t.reward for t in train])  # (S, N)
    bar = ctx.bar(p.sft_steps + p.n_steps, f"SFT ×{S}, then {A} arms × {S} seeds")

    # 1. π_ref: NLL on all the data, one model per seed
    refs = Stack.fresh(S, p.d_model, ctx.seed).to(dev)
    seed_rows = torch.arange(S, device=dev).unsqueeze(1)
    opt = torch.optim.AdamW(refs.params.values(), lr=p.sft_lr, weight_decay=0.0)
    for step in range(1, p.sft_steps + 1):
        idx = torch.stack([draw_rows(p.n_train, B, g) for g in gens]).to(dev)
        losses = -refs.token_logprobs(P_all[seed_rows, idx], Y_all[seed_rows, idx]).sum(-1).mean(-1)
        check_arms(losses, step, [f"SFT seed {s}" for s in seeds], weights=refs.params.values())
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        opt.step()
        bar.update(1)

    # 2. the value of π_ref on its own greedy outputs (held-out prompts), 3. advantages on the training data
    ref_val, ref_val_r = greedy_rewards(refs, val_prompts)
    ref_test, ref_test_r = greedy_rewards(refs, test)
    with torch.no_grad():
        ref_tok = refs.token_logprobs(P_all, Y_all)  # (S, N, L), fixed for the whole run
    adv, value_mse = [], []
    for s in range(S):
        ref_model = refs.model(s)
        targets = lang.rule_reward(val_prompts[s], ref_val[s], VOCAB)
        value, mse = fit_value_head(prompt_features(ref_model, val_prompts[s]), targets, p.value_steps, gens[s])
        with torch.no_grad():
            adv.append(train[s].reward - value(prompt_features(ref_model, train[s].prompts)))
        value_mse.append(mse)
    adv_plus = torch.stack(adv).clamp_min(0.0)  # (S, N)
    prio = [priority_probs(a).cpu() for a in adv_plus]

    # DPO pairs: each expert example against the mediocre response to the same prompt
    pair_rows = [torch.nonzero(t.source == lang.EXPERT).squeeze(1).cpu() for t in train]
    rejected = torch.stack([lang.mediocre_responses(t.prompts, RESPONSE_LEN, VOCAB) for t in train])
    if DPO in arms:
        with torch.no_grad():
            ref_rej_tok = refs.token_logprobs(P_all, rejected)

    # 4. every (arm, seed) starts from its seed's π_ref; model m = arm·S + seed
    model_seed = torch.tensor([s for _ in arms for s in range(S)], device=dev)
    names = [f"{a.label} (seed {seeds[s]})" for a in arms for s in range(S)]
    policies = refs.select(model_seed.cpu().tolist())
    opt = torch.optim.AdamW(policies.params.values(), lr=p.lr, weight_decay=0.0)
    kinds = [arm_sampling(a, p.sampling) for a in arms]
    alol_m = arms.index(A_LOL) * S  # the first seed's A-LoL model, for the ratio plot
    ratio_steps, ratios = [], []
    test_m = test[model_seed]  # (M, N_test, P)

    def evaluate(step: int):
        ys, rewards = greedy_rewards(policies, test_m) if step > 0 else (ref_test[model_seed], ref_test_r[model_seed])
        for m, r in enumerate(rewards.cpu().tolist()):
            ctx.history.log(step, arms[m // S].label, "test_reward", r, seed=seeds[m % S])
        return ys, rewards.cpu()

    ys, rewards = evaluate(0)
    for step in range(1, p.n_steps + 1):
        rows = []
        for a in range(A):
            for s in range(S):
                if kinds[a] == "pairs":
                    k = pair_rows[s][draw_rows(len(pair_rows[s]), B // 2, gens[s])]
                    rows.append(torch.cat([k, k]))
                else:
                    rows.append(draw_rows(p.n_train, B, gens[s], prio[s] if kinds[a] == "priority" else None))
        idx = torch.stack(rows).to(dev)  # (M, B)
        sm = model_seed.unsqueeze(1)
        resp, ref_t = Y_all[sm, idx], ref_tok[sm, idx]
        if DPO in arms:  # the second half of DPO's batch is the rejected response to the same prompts
            d, h = arms.index(DPO), B // 2
            dm = slice(d * S, (d + 1) * S)
            resp[dm, h:] = rejected[sm[dm], idx[dm, h:]]
            ref_t[dm, h:] = ref_rej_tok[sm[dm], idx[dm, h:]]
        tok = policies.token_logprobs(P_all[sm, idx], resp).view(A, S, B, -1)
        ref_t, R, Ap = ref_t.view(A, S, B, -1), R_all[sm, idx].view(A, S, B), adv_plus[sm, idx].view(A, S, B)
        losses = torch.cat(
            [
                arm_loss(arm, tok[a], ref_t[a], R[a], Ap[a], eps=p.eps, kl_beta=p.kl_beta, dpo_beta=p.dpo_beta).mean(-1)
                for a, arm in enumerate(arms)
            ]
        )  # (M,)
        check_arms(losses, step, names, weights=policies.params.values())
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        clip_per_model(policies.params, p.grad_clip)
        opt.step()
        with torch.no_grad():
            a_ = alol_m // S
            keep = Ap[a_, 0] > 0
            ratios.append(torch.exp(tok[a_, 0].sum(-1) - ref_t[a_, 0].sum(-1))[keep][:RATIOS_PER_STEP])
            ratio_steps.append(step)
        if step % p.eval_every == 0 or step == p.n_steps:
            ys, rewards = evaluate(step)
        bar.update(1)
    bar.close()

    # 5. records and numbers
    final = {arm.key: [float(rewards[i * S + s]) for s in range(S)] for i, arm in enumerate(arms)}
    outcomes = [
        ArmOutcome(
            arm,
            final[arm.key],
            list(np.mean([style_shares(test[s], ys[i * S + s]) for s in range(S)], axis=0)),
        )
        for i, arm in enumerate(arms)
    ]
    reference = ArmOutcome(
        Arm("ref", "π_ref"),
        [float(v) for v in ref_test_r.cpu()],
        list(np.mean([style_shares(test[s], ref_test[s]) for s in range(S)], axis=0)),
    )
    src, adv0 = train[0].source.cpu(), adv[0].cpu()
    pos0 = adv0.clamp_min(0)
    stats = AdvantageStats(
        positive_frac=[positive_fraction(a) for a in adv],
        value_mse=value_mse,
        by_source={n: [round(float(v), 3) for v in adv0[src == k]] for k, n in enumerate(lang.SOURCE_NAMES)},
        positive_by_source={
            n: float((adv0[src == k] > 0).float().mean()) if (src == k).any() else float("nan")
            for k, n in enumerate(lang.SOURCE_NAMES)
        },
        mass_by_source={
            n: float(pos0[src == k].sum() / pos0.sum().clamp_min(1e-12)) for k, n in enumerate(lang.SOURCE_NAMES)
        },
        source_reward=[
            float(train[0].reward[train[0].source == k].mean()) if (train[0].source == k).any() else float("nan")
            for k in range(len(lang.SOURCE_NAMES))
        ],
    )
    metrics = {
        "test_reward": float(np.mean(final[A_LOL.key])),
        "test_reward_ref": float(np.mean(reference.final_reward)),
        "positive_adv_frac": float(np.mean(stats.positive_frac)),
        "value_mse": float(np.mean(value_mse)),
        "ref_val_reward": float(ref_val_r.mean()),
    }
    for arm in arms:
        metrics[f"test_reward_{arm.key}"] = float(np.mean(final[arm.key]))
    claims = [
        beats_wbc_claim(final[A_LOL.key], final[WBC.key]),
        beats_nll_claim(final[A_LOL.key], final[NLL.key]),
    ]
    ratio_log = {
        "step": [st for st, r in zip(ratio_steps, ratios) for _ in range(len(r))],
        "ratio": [float(f"{v:.4g}") for v in torch.cat(ratios).cpu().tolist()] if ratios else [],
    }
    extras = {
        "arms": outcomes,
        "reference": reference,
        "advantage": stats,
        "ratios": ratio_log,
        "eps": p.eps,
        "seeds": seeds,
    }
    return Outcome(metrics=metrics, claims=claims, extras=extras)
