"""A-LoL (arXiv 2305.14718): Advantage-based Offline Policy Gradients ("Leftover Lunch" RL) for language models.

The whole response y to a prompt x is ONE action with a sequence-level reward R(x, y). Fit the value V(x) of the
reference (SFT) policy π_ref on π_ref's own greedy outputs, compute every training example's advantage
A = R(x, y) − V(x), keep only A⁺ = max(A, 0) and minimise, offline on the fixed data set,

    L_A-LoL = mean_b  A⁺_b · clip(r_b, 1−ε, 1+ε) · (−log π_θ(y_b|x_b)),    r_b = π_θ(y_b|x_b)/π_ref(y_b|x_b)  (detached)

with log π the SUM over response tokens. Baselines: NLL (plain fine-tuning on everything) and reward-weighted
behaviour cloning (wBC, R·NLL). The data is :func:`labkit.data.language.make_rule_mixture`: a rule task whose
offline set is dominated by mediocre responses. All (arm, seed) models are trained at once: their parameters are
stacked and one ``torch.func.vmap`` forward serves them all (each model sees its own batches; the summed loss
separates, so each gets exactly its own gradient and AdamW update).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap

from labkit import viz
from labkit.core import ClaimCheck, Outcome, Param, RunContext, method_run
from labkit.data import language as lang
from labkit.models.tiny_lm import TinyLM, prompt_features
from labkit.substrates.preference import dpo_loss
from labkit.substrates.rlhf import ValueHead

MAIN_METRIC = "test_reward"
PARAMS = [
    Param("lr", float, quick=5e-4, low=1e-6, high=1.0, log=True, help="AdamW learning rate of every arm after SFT"),
    Param(
        "eps",
        float,
        quick=0.9,
        low=0.0,
        high=1.0,
        help="clip ε of the importance weight: r clipped to [1−ε, 1+ε] (official default 0.9)",
    ),
    Param(
        "sampling",
        str,
        quick="uniform",
        choices=("uniform", "priority"),
        help="A-LoL batches: uniform over all data (A⁺ = 0 rows add nothing) or priority ∝ A⁺ (official good_priority)",
    ),
    Param(
        "expert_frac",
        float,
        quick=0.2,
        low=0.0,
        high=1.0,
        help="share of expert responses in the data (the rest: mediocre, then random_frac random)",
    ),
    Param(
        "n_steps",
        int,
        quick=200,
        standard=400,
        full=1500,
        low=1,
        high=100_000,
        help="optimiser steps of each arm after SFT",
    ),
    Param(
        "variants",
        bool,
        quick=False,
        standard=True,
        full=True,
        help="also train A-LoL ref-free / seq / KL, A-LoL with the other sampling, R-GOLD, R-LoL and DPO",
    ),
    Param("random_frac", float, quick=0.2, low=0.0, high=1.0, main=False, help="share of random responses"),
    Param("kl_beta", float, quick=0.1, low=0.0, high=10.0, main=False, help="β_KL of the A-LoL KL variant"),
    Param(
        "dpo_beta",
        float,
        quick=0.1,
        low=1e-3,
        high=10.0,
        log=True,
        main=False,
        help="DPO's β (pairs: expert response vs the mediocre response to the same prompt)",
    ),
    Param(
        "sft_steps",
        int,
        quick=400,
        standard=600,
        full=2000,
        low=1,
        high=100_000,
        main=False,
        help="NLL steps that make π_ref from the whole data set",
    ),
    Param(
        "sft_lr", float, quick=2e-3, standard=1e-3, low=1e-6, high=1.0, log=True, main=False, help="π_ref's AdamW lr"
    ),
    Param(
        "value_steps",
        int,
        quick=300,
        low=1,
        high=100_000,
        main=False,
        help="Adam steps of the value head (the step with the lowest held-out MSE is kept)",
    ),
    Param(
        "grad_clip",
        float,
        quick=1.0,
        low=0.0,
        high=100.0,
        main=False,
        help="per-model gradient-norm clip (0 = off; the official HHA runs use 0.3)",
    ),
    Param(
        "n_train",
        int,
        quick=4000,
        standard=8000,
        full=20000,
        low=64,
        high=1_000_000,
        main=False,
        help="offline training examples",
    ),
    Param(
        "n_val",
        int,
        quick=500,
        low=20,
        high=100_000,
        main=False,
        help="held-out prompts on which π_ref's greedy outputs train the value head",
    ),
    Param(
        "n_test", int, quick=500, standard=1000, low=10, high=100_000, main=False, help="test prompts (greedy decoding)"
    ),
    Param(
        "batch_size",
        int,
        quick=32,
        standard=64,
        low=2,
        high=4096,
        main=False,
        help="examples per step (DPO: half as many pairs)",
    ),
    Param("d_model", int, quick=32, standard=48, full=128, low=8, high=1024, main=False, help="TinyLM width"),
    Param(
        "eval_every",
        int,
        quick=40,
        standard=50,
        full=100,
        low=1,
        high=100_000,
        main=False,
        help="greedy test reward every this many steps",
    ),
    Param(
        "n_seeds",
        int,
        quick=2,
        standard=3,
        full=5,
        low=1,
        high=100,
        main=False,
        help="seeds seed, seed+1, …: each has its own data, π_ref, value head and arms",
    ),
]

VOCAB, PROMPT_LEN, RESPONSE_LEN = 12, 4, 6
BASE_ARMS = ("NLL", "wBC", "A-LoL")
VARIANT_ARMS = ("A-LoL ref-free", "A-LoL seq", "A-LoL KL", "R-GOLD", "R-LoL", "DPO")
STYLES = ("follows the rule", "copies the prompt", "other")


# --- the losses (per example, shape (B,); take the mean yourself). log-probs are SUMS over response tokens ----


def positive_advantage(reward, value):
    """A⁺ = max(R − V(x), 0): the advantage filter (negative-advantage data gets weight 0)."""
    return (reward - value).clamp_min(0.0)


def clipped_ratio(logp, ref_logp, eps):
    """clip(r, 1−ε, 1+ε) with r = exp(log π_θ − log π_ref), detached (only the NLL carries a gradient).
    ε = 0 pins the weight to 1."""
    return torch.exp(logp - ref_logp).detach().clamp(1.0 - eps, 1.0 + eps)


def nll_loss(logp):
    """NLL = −log π_θ(y|x) (plain fine-tuning / behaviour cloning)."""
    return -logp


def wbc_loss(logp, reward):
    """wBC = R · (−log π_θ(y|x)) (reward-weighted behaviour cloning)."""
    return reward * -logp


def a_lol_loss(logp, ref_logp, adv_plus, eps):
    """A-LoL = A⁺ · clip(π_θ/π_ref, 1−ε, 1+ε) · (−log π_θ(y|x)); gradient −A⁺·r̄·∇log π_θ(y|x)."""
    return adv_plus * clipped_ratio(logp, ref_logp, eps) * -logp


def a_lol_ref_free_loss(logp, adv_plus):
    """A-LoL ref-free = A⁺ · (−log π_θ(y|x)) (no importance weight)."""
    return adv_plus * -logp


def a_lol_seq_loss(token_logp, ref_token_logp, adv_plus, eps):
    """A-LoL seq = A⁺ · Σ_t clip(r_t, 1−ε, 1+ε) · (−log π_θ(y_t|x, y_<t)), r_t the per-token ratio (detached).
    ``token_logp, ref_token_logp (B, L)``."""
    return adv_plus * (clipped_ratio(token_logp, ref_token_logp, eps) * -token_logp).sum(-1)


def a_lol_kl_loss(logp, ref_logp, adv_plus, beta):
    """A-LoL KL = A⁺ · (−log π_θ(y|x)) + β_KL · (log π_θ(y|x) − log π_ref(y|x)), no clip (the code asserts ε = 0)."""
    return adv_plus * -logp + beta * (logp - ref_logp)


def r_gold_loss(token_logp, reward, floor=0.1):
    """R-GOLD = R · Σ_t max(π_θ(y_t|·), u)_detached · (−log π_θ(y_t|·)), u = ``floor`` (0.1). ``token_logp (B, L)``."""
    return reward * (token_logp.detach().exp().clamp_min(floor) * -token_logp).sum(-1)


def r_lol_loss(logp, ref_logp, reward, eps):
    """R-LoL = R · clip(π_θ/π_ref, 1−ε, 1+ε) · (−log π_θ(y|x)) (A-LoL with the reward in place of A⁺)."""
    return a_lol_loss(logp, ref_logp, reward, eps)


# --- data and analysis helpers -----------------------------------------------------------------------------


def data_mix(expert_frac, random_frac):
    """(expert, mediocre, random) shares; mediocre takes the rest."""
    mediocre = 1.0 - expert_frac - random_frac
    if mediocre < -1e-9:
        raise ValueError(f"expert_frac + random_frac = {expert_frac + random_frac:g} > 1: no room for the mix")
    return (expert_frac, max(mediocre, 0.0), random_frac)


def response_style(prompts, responses, vocab_size=VOCAB):
    """Which data source a response imitates, judged on its second half (where expert and mediocre differ):
    0 "follows the rule" if more than half of those tokens equal y*, 1 "copies the prompt" if more than half equal
    x_{t mod P}, else 2 "other". ``(N,)``."""
    L, half = responses.shape[1], responses.shape[1] // 2
    t = torch.arange(half, L, device=responses.device)
    rule = (responses[:, t] == lang.rule_targets(prompts, L, vocab_size)[:, t]).float().mean(1)
    copy = (responses[:, t] == prompts[:, t % prompts.shape[1]]).float().mean(1)
    return torch.where(rule > 0.5, 0, torch.where(copy > 0.5, 1, 2))


def positive_fraction(adv):
    """Share of examples with A > 0 (the ones A-LoL learns from)."""
    return float((adv > 0).float().mean())


# --- many TinyLMs at once ----------------------------------------------------------------------------------


class Stack:
    """M TinyLMs with stacked parameters ``{name: (M, ...)}``; ``logits(tokens (M, B, T))`` via vmap."""

    def __init__(self, base: TinyLM, params: dict):
        self.base, self.params = base, params

    @classmethod
    def fresh(cls, n, d_model, generator_seed):
        torch.manual_seed(generator_seed)
        models = [TinyLM(VOCAB, PROMPT_LEN + RESPONSE_LEN, d_model=d_model) for _ in range(n)]
        params, _ = stack_module_state(models)
        return cls(models[0], {k: v.detach().clone().requires_grad_(True) for k, v in params.items()})

    def select(self, index):
        """A new Stack of models ``index`` (a list; repeats allowed), parameters copied and trainable."""
        idx = torch.as_tensor(index)
        return Stack(self.base, {k: v.detach()[idx].clone().requires_grad_(True) for k, v in self.params.items()})

    def model(self, m) -> TinyLM:
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
    def greedy(self, prompts, length):
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


# --- the pieces of the experiment --------------------------------------------------------------------------


def make_data(p, seeds):
    """Per seed: train mixture, validation prompts, test prompts (CPU generator seeded by the seed)."""
    mix = data_mix(p.expert_frac, p.random_frac)
    out = []
    for s in seeds:
        gen = torch.Generator().manual_seed(int(s))
        train = lang.make_rule_mixture(p.n_train, gen, VOCAB, PROMPT_LEN, RESPONSE_LEN, mix=mix)
        val = lang.random_prompts(p.n_val, PROMPT_LEN, VOCAB, gen)
        test = lang.random_prompts(p.n_test, PROMPT_LEN, VOCAB, gen)
        out.append((train, val, test, gen))
    return out


def fit_value_head(features, targets, steps, generator, hidden=64, lr=1e-3, max_value=1.0, holdout=0.2):
    """V(x) = max_value·σ(MLP(φ(x))) fitted by full-batch Adam on MSE to π_ref's greedy rewards; returns the head
    at the step with the lowest held-out MSE, and that MSE."""
    n = features.shape[0]
    order = torch.randperm(n, generator=generator)
    n_hold = max(1, int(holdout * n))
    hold, fit = order[:n_hold], order[n_hold:]
    head = ValueHead(features.shape[1], hidden)
    value = lambda f: max_value * torch.sigmoid(head(f))  # noqa: E731
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    best, best_state = math.inf, None
    for _ in range(steps):
        loss = (value(features[fit]) - targets[fit]).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            mse = float((value(features[hold]) - targets[hold]).pow(2).mean())
        if mse < best:
            best, best_state = mse, {k: v.clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    head.requires_grad_(False)
    return value, best


def arm_loss(arm, tok, ref_tok, batch, p):
    """Per-example loss of ``arm`` on its batch: ``tok, ref_tok (B, L)`` token log-probs of π_θ and π_ref."""
    logp, ref_logp = tok.sum(-1), ref_tok.sum(-1)
    R, A = batch["reward"], batch["adv"]
    if arm == "NLL":
        return nll_loss(logp)
    if arm == "wBC":
        return wbc_loss(logp, R)
    if arm.startswith("A-LoL") and arm.split()[-1] in ("A-LoL", "uniform", "priority"):
        return a_lol_loss(logp, ref_logp, A, p.eps)
    if arm == "A-LoL ref-free":
        return a_lol_ref_free_loss(logp, A)
    if arm == "A-LoL seq":
        return a_lol_seq_loss(tok, ref_tok, A, p.eps)
    if arm == "A-LoL KL":
        return a_lol_kl_loss(logp, ref_logp, A, p.kl_beta)
    if arm == "R-GOLD":
        return r_gold_loss(tok, R)
    if arm == "R-LoL":
        return r_lol_loss(logp, ref_logp, R, p.eps)
    if arm == "DPO":
        h = logp.shape[0] // 2
        return dpo_loss(logp[:h], logp[h:], ref_logp[:h], ref_logp[h:], p.dpo_beta)
    raise ValueError(f"unknown arm {arm!r}")


def arm_sampling(arm, p):
    """Which rows an arm draws: 'priority' (∝ A⁺) for A-LoL-family arms when asked, 'pairs' for DPO, else uniform."""
    if arm == "DPO":
        return "pairs"
    if arm == "A-LoL priority" or (
        arm in ("A-LoL", "A-LoL ref-free", "A-LoL seq", "A-LoL KL") and p.sampling == "priority"
    ):
        return "priority"
    return "uniform"


def arm_names(p):
    arms = list(BASE_ARMS)
    if p.variants:
        arms += list(VARIANT_ARMS[:3]) + ["A-LoL priority" if p.sampling == "uniform" else "A-LoL uniform"]
        arms += list(VARIANT_ARMS[3:])
    return arms


def check_models(ctx, losses, step, names):
    """One sync per step; on NaN/inf name the (arm, seed) that diverged."""
    if math.isfinite(float(losses.detach().sum())):
        return
    for name, loss in zip(names, losses):
        ctx.check(loss, step, name)


# --- claim ---------------------------------------------------------------------------------------------------


def reward_claim(r_alol, r_wbc, r_nll, pos_frac, margin_wbc=0.15, margin_nll=0.20) -> ClaimCheck:
    """Final greedy test reward, mean over seeds: A-LoL ≥ wBC + ``margin_wbc`` and ≥ NLL + ``margin_nll``;
    the positive-advantage fraction is printed."""
    a, w, n = (float(np.mean(v)) for v in (r_alol, r_wbc, r_nll))
    return ClaimCheck(
        claim=f"greedy test reward: A-LoL ≥ wBC + {margin_wbc:g} and ≥ NLL + {margin_nll:g} (mean over seeds)",
        passed=bool(a >= w + margin_wbc and a >= n + margin_nll),
        numbers={
            "reward_alol": a,
            "reward_wbc": w,
            "reward_nll": n,
            "gap_wbc": a - w,
            "gap_nll": a - n,
            "positive_adv_frac": float(np.mean(pos_frac)),
            "alol_per_seed": [round(float(v), 3) for v in r_alol],
            "wbc_per_seed": [round(float(v), 3) for v in r_wbc],
            "nll_per_seed": [round(float(v), 3) for v in r_nll],
        },
    )


# --- figures -------------------------------------------------------------------------------------------------


def make_figures(result) -> dict:
    """Test reward per step, the advantage histogram by source, greedy output styles, importance ratios."""
    import plotly.graph_objects as go

    x = result.extras
    figs = {
        "test_reward": viz.curves(
            result.history,
            "test_reward",
            series=x["arms"],
            xlabel="step after SFT",
            ylabel="mean R of greedy outputs",
            title="Test reward (greedy) per step; step 0 is π_ref",
        )
    }
    for name, val in (("expert data", x["source_reward"][0]), ("mediocre data", x["source_reward"][1])):
        figs["test_reward"].add_hline(y=val, line_dash="dot", annotation_text=name)
    adv = go.Figure()
    for k, name in enumerate(lang.SOURCE_NAMES):
        adv.add_trace(
            go.Histogram(x=x["adv_by_source"][name], name=name, nbinsx=60, opacity=0.75, marker_color=viz.PALETTE[k])
        )
    adv.add_vrect(
        x0=min(min(v) for v in x["adv_by_source"].values() if v) - 0.02,
        x1=0.0,
        fillcolor="grey",
        opacity=0.15,
        line_width=0,
        annotation_text="filtered (A ≤ 0)",
    )
    adv.add_vline(x=0.0, line_dash="dash")
    adv.update_layout(
        barmode="stack",
        title=f"Advantage A = R − V(x) on the training set, seed {result.seed} (positive: {x['positive_frac'][0]:.2f})",
        xaxis_title="A",
        yaxis_title="examples",
        template="plotly_white",
        height=380,
    )
    figs["advantage"] = adv
    style = go.Figure()
    for k, name in enumerate(STYLES):
        style.add_trace(
            go.Bar(
                x=["π_ref"] + x["arms"],
                y=[x["styles"]["π_ref"][k]] + [x["styles"][a][k] for a in x["arms"]],
                name=name,
                marker_color=viz.PALETTE[k],
            )
        )
    style.update_layout(
        barmode="stack",
        title="Which data source the greedy test outputs imitate (rule = expert, copy = mediocre), mean over seeds",
        yaxis_title="share of test prompts",
        template="plotly_white",
        height=380,
    )
    figs["styles"] = style
    r = x["ratios"]
    ratio = go.Figure(
        go.Scatter(x=r["step"], y=r["ratio"], mode="markers", marker={"size": 3, "opacity": 0.5}, name="r = π_θ/π_ref")
    )
    ratio.add_hrect(
        y0=max(1 - x["eps"], 1e-3),
        y1=1 + x["eps"],
        fillcolor="green",
        opacity=0.1,
        line_width=0,
        annotation_text=f"clip band [1−ε, 1+ε], ε = {x['eps']:g}",
    )
    ratio.update_yaxes(type="log")
    ratio.update_layout(
        title=f"A-LoL's sequence importance ratios on its batches (seed {result.seed}, A⁺ > 0 rows)",
        xaxis_title="step",
        yaxis_title="r (log axis)",
        template="plotly_white",
        height=380,
    )
    figs["ratios"] = ratio
    figs["final"] = viz.bars(
        {a: x["final_reward"][a] for a in x["arms"]}, title="Final greedy test reward per arm", ylabel="mean R"
    )
    return figs


# --- the experiment ------------------------------------------------------------------------------------------


@method_run(PARAMS, figures=make_figures, threads={"quick": 1})
def run(ctx: RunContext) -> Outcome:
    p = ctx.p
    data_mix(p.expert_frac, p.random_frac)
    seeds = [ctx.seed + k for k in range(p.n_seeds)]
    S, B, dev = len(seeds), p.batch_size, ctx.device
    arms = arm_names(p)
    per_seed = make_data(p, seeds)
    train = [d[0].to(dev) for d in per_seed]
    gens = [d[3] for d in per_seed]
    test = torch.stack([d[2] for d in per_seed]).to(dev)
    bar = ctx.bar(p.sft_steps + p.n_steps, f"SFT ×{S}, then {len(arms)} arms × {S} seeds")

    # 1. π_ref: NLL on all the data, one model per seed
    refs = Stack.fresh(S, p.d_model, ctx.seed)
    refs.base.to(dev)
    refs.params = {k: v.detach().to(dev).requires_grad_(True) for k, v in refs.params.items()}
    P_all = torch.stack([t.prompts for t in train])
    Y_all = torch.stack([t.responses for t in train])
    opt = torch.optim.AdamW(refs.params.values(), lr=p.sft_lr, weight_decay=0.0)
    for step in range(1, p.sft_steps + 1):
        idx = torch.stack([torch.randint(p.n_train, (B,), generator=g) for g in gens]).to(dev)
        pick = lambda t: t.gather(1, idx.unsqueeze(-1).expand(-1, -1, t.shape[-1]))  # noqa: E731
        losses = -refs.token_logprobs(pick(P_all), pick(Y_all)).sum(-1).mean(-1)
        check_models(ctx, losses, step, [f"SFT seed {s}" for s in seeds])
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        opt.step()
        bar.update(1)

    # 2. value of π_ref on its own greedy outputs (held-out prompts), 3. advantages on the training data
    val_prompts = torch.stack([d[1] for d in per_seed]).to(dev)
    ref_val = refs.greedy(val_prompts, RESPONSE_LEN)
    ref_test = refs.greedy(test, RESPONSE_LEN)
    adv, adv_plus, value_mse, ref_val_reward = [], [], [], []
    with torch.no_grad():
        ref_tok = refs.token_logprobs(P_all, Y_all)  # (S, N, L), fixed for the whole run
    for s in range(S):
        ref_model = refs.model(s)
        targets = lang.rule_reward(val_prompts[s], ref_val[s], VOCAB)
        value, mse = fit_value_head(prompt_features(ref_model, val_prompts[s]), targets, p.value_steps, gens[s])
        with torch.no_grad():
            a = train[s].reward - value(prompt_features(ref_model, train[s].prompts))
        adv.append(a)
        adv_plus.append(a.clamp_min(0.0))
        value_mse.append(mse)
        ref_val_reward.append(float(targets.mean()))
    adv_plus_all = torch.stack(adv_plus)
    R_all = torch.stack([t.reward for t in train])
    pos_frac = [positive_fraction(a) for a in adv]

    # DPO pairs: each expert example against the mediocre response to the same prompt
    pair_idx = [torch.nonzero(t.source == lang.EXPERT).squeeze(1) for t in train]
    rej_all = [lang.mediocre_responses(t.prompts, RESPONSE_LEN, VOCAB) for t in train]
    with torch.no_grad():
        ref_rej_tok = refs.token_logprobs(P_all, torch.stack(rej_all)) if "DPO" in arms else None

    # 4. every (arm, seed) starts from its seed's π_ref
    M = len(arms) * S
    model_seed = [s for _ in arms for s in range(S)]
    names = [f"{a} (seed {seeds[s]})" for a in arms for s in range(S)]
    policies = refs.select(model_seed)
    opt = torch.optim.AdamW(policies.params.values(), lr=p.lr, weight_decay=0.0)
    prio = [
        torch.where(ap.sum() > 0, ap / ap.sum().clamp_min(1e-12), torch.full_like(ap, 1.0 / len(ap))).cpu()
        for ap in adv_plus
    ]
    sampling = [arm_sampling(a, p) for a in arms]
    alol_m = arms.index("A-LoL") * S  # seed 0's A-LoL model, for the ratio plot
    ratio_log = {"step": [], "ratio": []}

    def evaluate(step):
        out = test.unsqueeze(0).expand(len(arms), -1, -1, -1).reshape(M, *test.shape[1:])
        ys = policies.greedy(out, RESPONSE_LEN) if step > 0 else ref_test[model_seed]
        rewards = torch.stack([lang.rule_reward(out[m], ys[m], VOCAB).mean() for m in range(M)]).cpu()
        for m in range(M):
            ctx.history.log(step, arms[m // S], "test_reward", rewards[m], seed=seeds[m % S])
        return ys, rewards

    evaluate(0)
    for step in range(1, p.n_steps + 1):
        rows, prompts, responses, ref_rows, extra = [], [], [], [], []
        for m in range(M):
            arm, s, kind = arms[m // S], model_seed[m], sampling[m // S]
            g = gens[s]
            if kind == "priority":
                idx = torch.multinomial(prio[s], B, replacement=True, generator=g)
            elif kind == "pairs":
                k = pair_idx[s][torch.randint(len(pair_idx[s]), (B // 2,), generator=g)]
                idx = torch.cat([k, k])
            else:
                idx = torch.randint(p.n_train, (B,), generator=g)
            idx = idx.to(dev)
            resp = train[s].responses[idx]
            ref_t = ref_tok[s, idx]
            if kind == "pairs":
                h = B // 2
                resp = torch.cat([resp[:h], rej_all[s][idx[h:]]])
                ref_t = torch.cat([ref_t[:h], ref_rej_tok[s, idx[h:]]])
            rows.append(idx)
            prompts.append(train[s].prompts[idx])
            responses.append(resp)
            ref_rows.append(ref_t)
        tok = policies.token_logprobs(torch.stack(prompts), torch.stack(responses))
        losses = []
        for m in range(M):
            s, idx = model_seed[m], rows[m]
            batch = {"reward": R_all[s, idx], "adv": adv_plus_all[s, idx]}
            losses.append(arm_loss(arms[m // S], tok[m], ref_rows[m], batch, p).mean())
        losses = torch.stack(losses)
        check_models(ctx, losses, step, names)
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        clip_per_model(policies.params, p.grad_clip)
        opt.step()
        with torch.no_grad():
            keep = adv_plus_all[model_seed[alol_m], rows[alol_m]] > 0
            r = torch.exp(tok[alol_m].sum(-1) - ref_rows[alol_m].sum(-1))[keep][:8]
        ratio_log["step"] += [step] * len(r)
        ratio_log["ratio"] += [float(f"{float(v):.4g}") for v in r]
        if step % p.eval_every == 0 or step == p.n_steps:
            ys, rewards = evaluate(step)
        bar.update(1)
    bar.close()

    # 5. numbers
    final = {a: [float(rewards[i * S + s]) for s in range(S)] for i, a in enumerate(arms)}
    out = test.unsqueeze(0).expand(len(arms), -1, -1, -1).reshape(M, *test.shape[1:])
    styles = {
        "π_ref": [
            float(np.mean([(response_style(test[s], ref_test[s]) == k).float().mean() for s in range(S)]))
            for k in range(3)
        ]
    }
    for i, a in enumerate(arms):
        st = [response_style(out[i * S + s], ys[i * S + s]) for s in range(S)]
        styles[a] = [float(np.mean([(v == k).float().mean() for v in st])) for k in range(3)]
    src = train[0].source.cpu()
    adv0 = adv[0].cpu()
    ref_reward = [float(lang.rule_reward(test[s], ref_test[s], VOCAB).mean()) for s in range(S)]
    metrics = {
        "test_reward": float(np.mean(final["A-LoL"])),
        "test_reward_ref": float(np.mean(ref_reward)),
        "positive_adv_frac": float(np.mean(pos_frac)),
        "value_mse": float(np.mean(value_mse)),
        "ref_val_reward": float(np.mean(ref_val_reward)),
    }
    for a in arms:
        metrics[f"test_reward_{a.lower().replace(' ', '_').replace('-', '_')}"] = float(np.mean(final[a]))
    extras = {
        "arms": arms,
        "seeds": seeds,
        "eps": p.eps,
        "final_reward": final,
        "ref_reward": ref_reward,
        "positive_frac": pos_frac,
        "value_mse": value_mse,
        "styles": styles,
        "ratios": ratio_log,
        "source_reward": [
            float(train[0].reward[train[0].source == k].mean()) if (train[0].source == k).any() else float("nan")
            for k in range(3)
        ],
        "adv_by_source": {n: [round(float(v), 3) for v in adv0[src == k]] for k, n in enumerate(lang.SOURCE_NAMES)},
        "adv_mass_by_source": {
            n: float(adv0.clamp_min(0)[src == k].sum() / adv0.clamp_min(0).sum().clamp_min(1e-12))
            for k, n in enumerate(lang.SOURCE_NAMES)
        },
        "positive_by_source": {
            n: float((adv0[src == k] > 0).float().mean()) if (src == k).any() else float("nan")
            for k, n in enumerate(lang.SOURCE_NAMES)
        },
    }
    claims = [reward_claim(final["A-LoL"], final["wBC"], final["NLL"], pos_frac)]
    return Outcome(metrics=metrics, claims=claims, extras=extras)
