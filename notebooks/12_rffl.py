# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 12 · RFFL — A Reputation Mechanism Is All You Need: Collaborative Fairness and Adversarial Robustness in Federated Learning
#
# [arXiv 2011.10464](https://arxiv.org/abs/2011.10464) (FL-ICML'21 workshop) · official code
# [XinyiYS/Robust-and-Fair-Federated-Learning](https://github.com/XinyiYS/Robust-and-Fair-Federated-Learning) ·
# family: **federated-robustness**
#
# **What you will see:** five honest participants with very unequal amounts of digits data and one free-rider.
# RFFL scores every upload by how well it agrees with the aggregate, expels the free-rider within a round or two,
# and pays each participant in model quality, so final accuracies line up with contributions — while FedAvg hands
# everyone, free-rider included, the same model.

# %% tags=["parameters"]
preset = "quick"
seed = 0
device = "auto"
n_honest = None       # honest participants N, shard sizes proportional to 1..N
n_adversaries = None  # adversaries A per attack scenario
attacks = None        # attack scenarios, comma-separated
split = None          # powerlaw, classimbalance or uniform
alpha = None          # reputation smoothing
beta = None           # removal threshold coefficient
gamma_scale = None    # clip norm in units of the median honest round-1 update norm
rounds = None         # communication rounds
local_epochs = None   # local epochs per round

# %%
import inspect
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

import widgets
from labkit import viz
from labkit.core import overrides_from, resolve_params
from labkit.methods import rffl

overrides = overrides_from(rffl.PARAMS, globals())  # the knobs above, and any other param papermill injects
viz.notebook_setup()

# %% [markdown]
# ## The idea
#
# In FedAvg every participant receives the same global model, however much — or how little, or how harmfully — it
# contributed. RFFL keeps **one model per participant** and pays each one according to a **reputation**.
# Participants $i$ in the admitted set $R$ hold $|D_i|$ samples. In round $t$:
#
# 1. **upload** $\Delta_i = \mathrm{clip}_\Gamma\big(\mathrm{LocalSGD}(\theta_i) - \theta_i\big)$, rescaled to norm
#    $\Gamma$ if longer (an honest participant also moves its own model, $\theta_i \leftarrow \theta_i + \Delta_i$);
# 2. **aggregate** $u = \sum_{i\in R} w_i \Delta_i$ with $w_i = |D_i|/\sum_j |D_j|$ in round 1 and $w_i = r_i$ afterwards;
# 3. **contribution** $\varphi_i = \cos(\Delta_i, u) = \Delta_i^\top u / (\lVert\Delta_i\rVert\,\lVert u\rVert)$;
# 4. **reputation** $r_i \leftarrow \alpha r_i + (1-\alpha)\varphi_i$ (from $r = 0$), then $r \leftarrow r/\sum_{j\in R} r_j$;
# 5. **removal** of every $i$ with $r_i < \beta/|R|$, for good ($r_i = 0$), and $r$ renormalised;
# 6. **reward** $q_i = r_i/\max_j r_j$: participant $i$ adds to $\theta_i$ the aggregate $u$ **sparsified per layer**,
#    keeping the $\lceil q_i n_\ell\rceil$ largest-magnitude entries of each layer $\ell$ ($n_\ell$ entries).
#
# The fairness measure (from CFFL) is the Pearson correlation $\rho$ between each honest participant's
# *contribution* — the test accuracy of a model trained **standalone** on its own data — and its final accuracy in
# the federation. FedAvg gives everyone the same model, so its $\rho$ is undefined (reported as 0).

# %% [markdown]
# ## The core functions, on numbers small enough to check by hand

# %%
for fn in (rffl.update_reputation, rffl.remove_low_reputation, rffl.sparsify_layer):
    print(inspect.getsource(fn))

# %% tags=["nbval-check-output"]
# three participants with data sizes 2 : 1 : 1 upload (1, 0), (0, 1) and (-1, 0)
server = rffl.ReputationServer(torch.tensor([2.0, 1.0, 1.0]), alpha=0.95, beta=1 / 3)
step = server.step({"w": torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])})
print("u   =", step.u["w"].numpy(), "  by hand: 0.5·(1,0) + 0.25·(0,1) + 0.25·(−1,0) = (0.25, 0.25)")
print("phi =", step.phi.numpy().round(3), "  by hand: cosines 1/√2, 1/√2, −1/√2")
print("r   =", step.r.numpy().round(3), "  by hand: r ∝ 0.05·phi → (1, 1, −1); −1 < β/|R| = 1/9 → removed, renormalised")
print("q   =", step.q.numpy().round(3), " removed in round", server.removed_round)
# the reward: u sparsified per layer; a layer of 5 entries with q = 0.5 keeps ⌈2.5⌉ = 3, with q = 1 keeps 4 (n − 1)
t = torch.tensor([0.5, -3.0, 1.0, -2.0, 0.1])
print("q=0.5:", rffl.sparsify_layer(t, 0.5).numpy(), "  q=1:", rffl.sparsify_layer(t, 1.0).numpy())

# %% [markdown]
# ## The data
#
# scikit-learn's 8×8 digits (shipped with the package, pixels/16), an 80/20 stratified split. A random 60% of the
# training split is dealt to the $N$ honest participants with shard sizes $\propto 1 : 2 : \dots : N$ (the card's
# "power-law" split; the official code's `powerlaw` split is also linear in $i$, from a smaller first share). Each
# adversary holds a copy of the median honest shard. The model is softmax regression (64 → 10), trained with plain
# SGD (lr 0.1, batch 32, lr × 0.977 per epoch); all arms of a seed share the split, the initial model and every
# participant's batch order. $\Gamma$ is half the median honest update norm of round 1, so every upload is clipped
# to the same length — the paper's regime (its $\Gamma$ is 0.5 on MNIST).

# %%
p = SimpleNamespace(**resolve_params(rffl.PARAMS, preset, overrides))
fed = rffl.with_adversaries(rffl.honest_federation(p, seed, "cpu"), rffl.scenarios(p)[0], p.n_adversaries)
table = pd.DataFrame([np.bincount(q.client.y.numpy(), minlength=10) for q in fed.participants],
                     index=[q.label for q in fed.participants])
table.columns.name = "digit"
table

# %% [markdown]
# ## Train standalone, RFFL and FedAvg
#
# For every seed: each honest participant alone (the contribution proxy, no clipping), then RFFL and FedAvg with the
# same clipped uploads, free-rider included (it uploads $U[-1, 1]$ noise, clipped to $\Gamma$).

# %%
result = rffl.run(preset=preset, seed=seed, device=device, **overrides)
print(f"{result.duration_s:.1f} s;  Γ per seed:", [round(g, 4) for g in result.extras["gammas"]])

# %% [markdown]
# ## What happens, round by round
#
# Reputations (adversaries in red) against the removal threshold $\beta/|R|$: the free-rider's noise is nearly
# orthogonal to the aggregate, its $\varphi \approx 0$, so its reputation drops under the threshold at once.
# The honest reputations spread out by shard size: a bigger shard gives an update closer to the aggregate.

# %%
result.figures["reputation"]

# %% [markdown]
# Reward against contribution, per honest participant and seed: under RFFL the final accuracy grows with the
# standalone accuracy; under FedAvg everyone sits on one horizontal line (one model).

# %%
result.figures["fairness"]

# %%
result.figures["participant_acc"]

# %%
result.figures["test_acc"]

# %% [markdown]
# ## Other adversaries
#
# The same pipeline with two label flippers (train with every 1 relabelled 7) and, separately, two sign randomisers
# (their honest update with each coordinate's sign flipped with probability 1/2), as in the card's standard preset,
# for one seed to stay within the quick budget. The label flippers' attack success rate is the share of true-1 test
# images predicted as 7 (mean over honest participants for RFFL).

# %%
other = rffl.run(preset=preset, seed=seed, device=device,
                 **{**overrides, "attacks": "label_flip,sign_flip", "n_adversaries": 2, "n_seeds": 1})
print(f"{other.duration_s:.1f} s")

# %%
other.figures["robust_acc"]

# %%
other.figures["reputation"]

# %%
other.figures["reputation_sign_flip"]

# %% tags=["nbval-check-output"]
for attack in other.extras["attacks"]:
    fin, asr = other.extras["final"][attack], other.extras["asr"][attack]
    removed = other.extras["removed"][attack][0]
    print(f"{rffl.ATTACK_LABELS[attack]}: best honest RFFL {max(fin['rffl'][0]):.3f}, FedAvg {fin['fedavg'][0][0]:.3f};"
          f" attack success (1 -> 7) RFFL {asr['rffl'][0]:.3f}, FedAvg {asr['fedavg'][0]:.3f};"
          f" removed: {removed if removed else 'nobody'}")

# %% [markdown]
# ## The claim check
#
# The card's toy claims, computed from the runs above (3 seeds for the free-rider run): **fairness** $\rho_{\rm RFFL}
# \ge 0.7$ in every seed; **robustness** the free-rider leaves $R$ by round 5 in every seed (rounds count from 1);
# **accuracy** the best honest participant under RFFL is at least FedAvg's accuracy (with the free-rider) − 0.02 in
# every seed. Means are not compared: the smallest participant is paid less on purpose.

# %%
for c in result.claims:
    print(c)
print("— other adversaries (one seed) —")
for c in other.claims:
    print(c)

# %% tags=["nbval-check-output"]
primary = result.extras["primary"]
numbers = {c.claim.split(":")[0]: c.numbers for c in result.claims}
fair, removal, acc = numbers["fairness"], numbers.get("robustness", {}), numbers["accuracy"]
for s in result.extras["seeds"]:
    print(f"seed {s}: rho {fair[f'{primary}_seed{s}_rho']:.3f}; adversaries removed by round "
          f"{removal.get(f'{primary}_seed{s}_round', 'n/a')}; best honest RFFL {acc[f'{primary}_seed{s}_rffl_best']:.3f}"
          f" vs FedAvg {acc[f'{primary}_seed{s}_fedavg']:.3f}")
print("claims:", ", ".join(c.verdict for c in result.claims))
print("mean final accuracy of the honest participants under RFFL:",
      np.round(np.mean(result.extras["final"][primary]["rffl"], axis=0), 3),
      " standalone:", np.round(np.mean(result.extras["standalone"], axis=0), 3))

# %% [markdown]
# **What showed at the quick preset** (the numbers are the printed ones above).
#
# * **Fairness holds**: $\rho$ between standalone and final RFFL accuracy is above 0.7 in all three seeds, high in
#   some and lower in others — with five points $\rho$ is noisy, which is why the card asks for three seeds. The
#   smallest participant ends well below the largest; FedAvg gives everyone one accuracy.
# * **Robustness holds for the free-rider and the sign randomisers**: both are expelled in the first round or two.
# * **Accuracy holds**: the best honest participant under RFFL ends at or above FedAvg's accuracy in every seed.
#   Read it with care: only a small part of that margin is robustness. FedAvg averages in the free-rider's (clipped)
#   noise with a sixth of the weight, which costs it about one point; the rest is step length — an RFFL participant
#   applies its own clipped step *and* its reward every round, so it moves up to twice as far as FedAvg's global
#   model, whose one update is an average of clipped steps. Without any adversary the best RFFL participant is still
#   ahead (table below).
# * **Label flipping is not removed**, as the card expects: relabelling one digit of ten changes the update a little,
#   its cosine with the aggregate stays high and so does its reputation. What protects the honest participants is
#   the reputation weighting and the partial rewards: with two flippers FedAvg's global model calls some true 1s
#   a 7, while the honest RFFL models do so less (one seed, reported, not asserted).
#
# **Read against the official code** (`RFFL_run.py`, `utils/utils.py`): the implementation follows it — clipping
# with $\Gamma$ before upload, honest models reset to $\theta_i + \mathrm{clip}(\Delta_i)$ before the reward is added,
# data-share weights in the first round and $r$ afterwards, the cosine against the weighted aggregate, $r$ zeroed
# outside $R$ and normalised, removal against $\beta/|R|$ with $|R|$ fixed for the round, and `mask_grad_update_by_order`
# in layer mode ($\lceil q\,n_\ell\rceil$ entries, at most $n_\ell - 1$, ties kept). Two things differ in its last
# version and are knobs here: removal starts only after 10 rounds there (`grace_rounds=10`; the paper and the
# card remove from round 1), and its adversaries get fresh uniform shards of 600 examples instead of a copy of an
# honest shard. The adversaries' own models are also stepped with their clipped honest update here. The code's own
# no-reputation baseline (`-nr -ns`) lets every participant add the full $u$ to its own model (which also carries its
# own $\Delta_i$); ours is plain FedAvg with one global model, as the card asks.

# %% [markdown]
# **Other settings, measured offline** (not re-run here; final test accuracy of the best honest RFFL participant
# vs FedAvg, seeds 0 / 1 / 2; each call reproduces its line):
#
# | call | RFFL best | FedAvg | what it shows |
# | --- | --- | --- | --- |
# | `run(attacks="none")` | 0.928 / 0.925 / 0.894 | 0.911 / 0.892 / 0.869 | no adversary: RFFL's best still leads (step length), ρ 0.997 / 0.748 / 0.812 |
# | `run(attacks="none", gamma_scale=100)` (no clipping) | 0.928 / 0.931 / 0.903 | 0.917 / 0.911 / 0.886 | the same without clipping |
# | `run(gamma_scale=100)` | 0.914 / 0.875 / 0.783 | 0.514 / 0.433 / 0.533 | the free-rider's noise is no longer clipped, dominates $u$, and **every honest participant is expelled** (rounds 1–6) while the free-rider stays: the card's pitfall, in full |
# | `run(preset="standard")`: N = 10, A = 2, MLP, 60 rounds | 0.79–0.87 | 0.61–0.78 | ρ ≥ 0.82 in all 12 seed × scenario runs; free-riders and sign randomisers out in round 1–2; label flippers never removed, yet their attack success is 0.045 for RFFL vs 0.454 for FedAvg |
#
# In the standard run FedAvg stays far below even without adversaries (0.78 / 0.75 / 0.67): with every update clipped
# to half the median honest norm, one averaged step per round is too short for the MLP in 60 rounds.

# %% [markdown]
# ## Try it yourself
#
# Change α, β, Γ, the number and kind of adversaries, or the split, and retrain. With `gamma_scale` around 2 the
# clipped noise is the longest upload and weighs more in $u$ — does the free-rider still get caught?

# %%
widgets.explorer("rffl", metric="test_acc")
