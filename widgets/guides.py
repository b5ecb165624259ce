"""Teaching content for the app's method pages: what a learner sees, the key equation, and guided experiments.

One :class:`Guide` per method of :mod:`labkit.core.registry`, keyed by its slug in :data:`GUIDES`. A guide is
plain data (markdown strings, a LaTeX equation without ``$`` delimiters, knob overrides), written for that method
from its card (``shared/methods/NN_slug.md``), its knobs (``experiment.py``) and its committed notebook, so that
what it says matches what the kit really does at the quick preset.

The guided experiments change one or two knobs to show the idea. Their ``overrides`` are validated by the same
function as every front end (:func:`labkit.core.params.resolve_params`, with the method's cross-field checks);
:func:`experiment_values` does that and ``tests/test_guides.py`` runs it for every experiment. Their ``expect``
text is honest: where the outcome at the quick preset is not settled it says what to look for, and it never quotes
a number that a run has not produced. This module imports no method (and no torch) until
:func:`experiment_values` is called; the text holds no raw HTML, since the app renders it as markdown.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Experiment", "Guide", "GUIDES", "guide_for", "experiment_values"]


@dataclass(frozen=True)
class Experiment:
    """One guided experiment: a title, the knobs it changes (valid at the quick preset), and what to expect."""

    title: str  # "Set η = 0: RPO becomes DPO"
    overrides: dict[str, object]  # knob name -> value
    expect: str  # what to expect, honestly, in one or two sentences (markdown)


@dataclass(frozen=True)
class Guide:
    """What a method page teaches: what the run shows, the key equation (LaTeX, no ``$``), and 2-3 experiments."""

    what_you_see: str  # 2-4 sentences of markdown for this method: what trains, what the curves are, what to look for
    equation: str  # the method's key equation in LaTeX (no $ delimiters), from its card
    equation_note: str  # one sentence naming the symbols
    experiments: tuple[Experiment, ...]  # 2 or 3 guided experiments


def _x(title: str, overrides: dict[str, object], expect: str) -> Experiment:
    return Experiment(title=title, overrides=overrides, expect=expect)


GUIDES: dict[str, Guide] = {
    "lol_prf": Guide(
        what_you_see=(
            "A small query reformulator learns to rewrite a query from its top-k pseudo-relevant documents (BM25 "
            "term weights or LSA vectors), once with LoL's comparative regularisation (λ_cr) and once without it "
            "(λ_cr = 0), with Rocchio as the classic baseline. Curves give held-out MAP and the violation rate V "
            "along training, and plots give the ranking numbers against the number of feedback documents k. Look "
            "for the drift: more feedback should not make a revision worse, "
            "and LoL's MAP-versus-k curve should be flatter than the unregularised one's."
        ),
        equation=(
            r"\mathcal{L} = \frac{1}{1+n}\sum_{j=0}^{n} \ell\big(q^{(k_j)}\big) + \lambda_{cr}\,"
            r"\mathrm{mean}_{k_a \gt k_b} \max\big(0,\ \ell(q^{(k_a)}) - \ell(q^{(k_b)})\big)"
        ),
        equation_note=(
            "ℓ(q^(k)) is the ranking loss of the query revised with the top-k feedback documents, each query is "
            "revised 1 + n times with nested feedback k_0 > … > k_n, and λ_cr weighs the hinge that penalises a "
            "revision with more feedback for losing more than one with less."
        ),
        experiments=(
            _x(
                "Stronger comparative regularisation (λ_cr = 5)",
                {"lam_cr": 5.0},
                "The hinge weighs five times more. Look at whether LoL's violation rate V falls further below the "
                "λ_cr = 0 arm's, and whether MAP at small k pays for it; the kit has not pre-measured this setting.",
            ),
            _x(
                "A dense retriever",
                {"space": "dense"},
                "Revisions live in a 32-dimensional LSA space instead of BM25 term weights. Compare V and the "
                "MAP-versus-k drift with the sparse run: the paper applies LoL to both kinds of retriever.",
            ),
            _x(
                "No vocabulary mismatch",
                {"mismatch": 0.0},
                "Queries now use the documents' own words, so the query alone already retrieves well: expect "
                "Recall@20 at k = 0 to rise and leave less for feedback to add (checked at the quick preset).",
            ),
        ),
    ),
    "a_lol": Guide(
        what_you_see=(
            "A tiny language model π_ref is first fitted to an offline data set that mixes expert, mediocre and "
            "random responses; then every arm continues from it on the same data: A-LoL (advantage-weighted, with "
            "a clipped importance weight), reward-weighted behaviour cloning (wBC) and plain NLL fine-tuning. The "
            "curve is each arm's greedy test reward over training steps. Look at A-LoL climbing away from π_ref "
            "while NLL and wBC stay near the data's majority (mediocre) level."
        ),
        equation=(
            r"\mathcal{L}(\theta) = -\,\mathbb{E}_{(x,y)\sim D}\Big[A^{+}\,\mathrm{clip}\big(r_\theta,\,1-\epsilon,"
            r"\,1+\epsilon\big)\,\log \pi_\theta(y\mid x)\Big],\quad r_\theta = \frac{\pi_\theta(y\mid x)}"
            r"{\pi_{\mathrm{ref}}(y\mid x)},\quad A^{+} = \max\big(R(x,y) - V_{\mathrm{ref}}(x),\,0\big)"
        ),
        equation_note=(
            "A⁺ is the positive advantage of a data response's reward R over π_ref's value V_ref, the importance "
            "ratio r (no gradient) is clipped to [1 − ε, 1 + ε], and log π_θ(y|x) sums the response's token "
            "log-probabilities."
        ),
        experiments=(
            _x(
                "No importance weight (ε = 0)",
                {"eps": 0.0},
                "Clipping r to [1, 1] leaves the weight A⁺ alone: A-LoL becomes its reference-free variant. If "
                "A-LoL's curve barely changes, the advantage, not the ratio, does the work on this data.",
            ),
            _x(
                "More expert data (expert_frac = 0.5)",
                {"expert_frac": 0.5},
                "Experts become the largest share of the data. Watch whether NLL and wBC, which imitate what the "
                "data holds, climb towards A-LoL; the headline compares A-LoL with wBC.",
            ),
            _x(
                "Priority sampling",
                {"sampling": "priority"},
                "Batches are drawn in proportion to A⁺ (the official good_priority), so rows with zero advantage "
                "never appear. Compare how fast A-LoL's test reward rises with the uniform batches of the default.",
            ),
        ),
    ),
    "o3_unlearning": Guide(
        what_you_see=(
            "A digit classifier (an MLP on scikit-learn's 8×8 digits) is asked to forget class 0, then 1, then 2. "
            "For each request O3 trains a LoRA unlearning adapter on random labels and an out-of-distribution "
            "detector; at test time each adapter is loaded with a soft weight from its detector. The plots show "
            "accuracy on the retained and the forgotten classes after each request for O3, the same adapters "
            "always on, and gradient ascent: look for retained accuracy staying near the original model's."
        ),
        equation=(
            r"\mathcal{L}_t = \mathrm{CE}_{\mathrm{random}}(U_t) + \lambda_o \sum_{i \lt t} "
            r"\lVert A_i A_t^{\top} \rVert_F^2"
        ),
        equation_note=(
            "U_t is request t's forget set with random labels, A_i the down-projection of adapter i, and λ_o "
            "(orthogonal_weight) keeps each new adapter away from the earlier ones; at inference adapter t is "
            "scaled by a soft weight in (0, 1) from its detector's score, shaped by the steepness k and offset c."
        ),
        experiments=(
            _x(
                "A leakier gate (offset c = 0.5)",
                {"offset": 0.5},
                "The weight's floor sigmoid(−c) rises from about 0.12 to about 0.38, so retained-class images also "
                "get more of the unlearning adapters. Expect retained-class accuracy to fall below the default's "
                "(checked at the quick preset: the headline's 3-point bar is then at risk).",
            ),
            _x(
                "No orthogonality (λ_o = 0)",
                {"orthogonal_weight": 0.0},
                "Adapters train without the penalty that keeps their subspaces apart. In the per-class plot, look "
                "for a later adapter undoing an earlier one (a forgotten class climbing back).",
            ),
            _x(
                "Five requests",
                {"n_requests": 5},
                "Forget classes 0 to 4 in turn. The headline asks for retained accuracy within 3 points of the "
                "original model: see whether it survives as the adapters pile up.",
            ),
        ),
    ),
    "fedld": Guide(
        what_you_see=(
            "Clients hold label-skewed shares of the digits data (Dirichlet α) and train locally. FedAvg averages "
            "their models; FedLD adds margin control to the local loss and aggregates the clients' updates along "
            "their principal directions; a third arm uses margin control with the plain FedAvg server. Curves are "
            "global test accuracy per round. At the quick preset FedLD trails FedAvg in the committed notebook "
            "while margin control alone helps: look at where the curves part."
        ),
        equation=(
            r"\mathcal{L}_{\mathrm{local}} = \mathrm{CE}(Z, y) + \lambda \log\big(1 + \lVert \mathrm{softmax}(Z) "
            r"\rVert_F^2\big),\qquad \hat g_i = \sum_{j \le k} \mathrm{sign}(g_i^{\top} v_j)\,\frac{s_j}"
            r"{\sum_l s_l}\,\lVert g_i \rVert\,\frac{v_j}{\lVert v_j \rVert}"
        ),
        equation_note=(
            "Z is a batch of logits and λ the margin-control weight; g_i is client i's update, v_j and s_j the "
            "principal directions and eigenvalues of the clients' updates, k = max(1, ⌊k_proportion·m⌋), and the "
            "server adds the mean of the revised updates ĝ_i."
        ),
        experiments=(
            _x(
                "Almost IID clients (α = 100)",
                {"alpha": 100.0},
                "Every client sees nearly every class. Expect FedLD and FedAvg to end close together: the "
                "heterogeneity FedLD is built for is gone (checked at the quick preset, seed 0).",
            ),
            _x(
                "Principal aggregation only (λ = 0)",
                {"lam": 0.0},
                "FedLD without margin control: only the server's principal-gradient aggregation differs from "
                "FedAvg. Compare with the default to see which half of FedLD moves its accuracy.",
            ),
            _x(
                "Scanner shift",
                {"feature_shift": True},
                "Each client also gets its own translation and contrast shift, the paper's feature heterogeneity. "
                "Expect every arm to lose accuracy; watch the gap between FedLD and FedAvg.",
            ),
        ),
    ),
    "lamo": Guide(
        what_you_see=(
            "A Decision Transformer learns a grid-world policy from a few offline episodes. LaMo puts the kit's "
            "small pre-trained language model inside (frozen, with LoRA) and keeps training it on arithmetic text "
            "(λ·L_LM); the baseline is the same transformer trained from scratch. Curves are the action loss and "
            "the held-out language loss per step, and the bars normalised returns (0 random, 100 expert). Look at "
            "whether the language loss stays flat with λ > 0, and at the returns' spread over seeds."
        ),
        equation=(
            r"\mathcal{L} = \frac{1}{|\mathcal{V}|}\sum_{t \in \mathcal{V}} \ell\big(\hat a_t, a_t\big) "
            r"+ \lambda\,\mathcal{L}_{\mathrm{LM}}"
        ),
        equation_note=(
            "â_t is the action predicted at the state token of step t, ℓ the action loss (squared error for the "
            "paper's continuous control, cross-entropy on this grid's discrete actions), and L_LM the next-token "
            "loss of the same LoRA-adapted LM on text, weighted by λ."
        ),
        experiments=(
            _x(
                "No language loss (λ = 0)",
                {"lam": 0.0},
                "LaMo's LM is now tuned for the grid only. Expect its held-out arithmetic loss to rise on average "
                "like the kit's own λ = 0 arm's, with a wide spread over seeds (checked at the quick preset); "
                "compare the returns with the default.",
            ),
            _x(
                "Ten times the data (200 episodes)",
                {"n_episodes": 200},
                "The paper's edge for LaMo is in the low-data regime. Watch whether the DT from scratch catches up "
                "with, or passes, LaMo when data is plentiful.",
            ),
            _x(
                "Cleaner behaviour (ε = 0.1)",
                {"epsilon": 0.1},
                "The behaviour policy takes a random action one time in ten instead of one in two, so the data "
                "are closer to the expert's. Look at how far each arm's return follows the data's quality.",
            ),
        ),
    ),
    "ad_survival": Guide(
        what_you_see=(
            "Synthetic ad creatives with text, image, categorical and numeric features run until the advertiser "
            "stops them or the collection window ends (censoring). The two-term model predicts daily hazards with "
            "a short-term head (cut-outs) and a long-term head (wear-out), weighting creatives by CTR; it faces a "
            "censoring-blind regression on log duration, a linear Cox model and ablations. Curves are validation "
            "c-index per epoch; the table splits the c-index overall, short term, long term and in the top CTR "
            "quartile."
        ),
        equation=(
            r"\ell_i = -\big[\delta_i \log p(T_i) + (1-\delta_i)\log S(T_i)\big],\qquad \mathcal{L} = "
            r"\sum_i w_i\big(\ell_i^{\mathrm{short}} + \ell_i^{\mathrm{long}}\big),\qquad w_i \propto "
            r"\big(\mathrm{CTR}_i / \overline{\mathrm{CTR}}\big)^{\gamma}"
        ),
        equation_note=(
            "From the predicted hazards h, S(l) = Π_{j ≤ l}(1 − h_j) is the survival and p(l) = h_l·S(l − 1) the "
            "stop probability; δ_i = 1 if creative i stopped at T_i, 0 if censored; γ is ctr_power (the "
            "discrete-time form and the weight are the card's inferred reading of the paper)."
        ),
        experiments=(
            _x(
                "Censoring that depends on a feature",
                {"launch_shift": 1.0},
                "Advertisers launch later depending on a feature, so who gets censored depends on the features. "
                "This is where ignoring censoring hurts the regression's ranking: expect the two-term model to pull "
                "ahead of it, though at the quick preset (checked) not by the card's margin of 0.05.",
            ),
            _x(
                "No CTR weighting (γ = 0)",
                {"ctr_power": 0.0},
                "Every creative counts the same. Compare the top-CTR-quartile c-index with the default run: the "
                "CTR weight is meant to help exactly there.",
            ),
            _x(
                "A short window (30 days)",
                {"window": 30},
                "Observation ends after 30 days, so most long-running creatives are censored and the long-term "
                "c-index rests on far fewer pairs. Watch how the arms' order changes.",
            ),
        ),
    ),
    "ensloss": Guide(
        what_you_see=(
            "An over-parameterised MLP classifies noisy simulated data. Each arm trains the same network with a "
            "different loss: BCE, hinge, and EnsLoss, which draws a fresh random convex, calibrated loss derivative "
            "for every batch. Curves are training and test accuracy per epoch. Every arm fits its training set, "
            "so look at the test curves: EnsLoss is meant to overfit less."
        ),
        equation=(
            r"J(\theta) = \frac{1}{B}\sum_{b=1}^{B} \mathrm{sg}\big(g_{(r_b)}\big)\, y_b f_\theta(x_b),\qquad "
            r"g_b = \max\big(-e^{\xi_b},\,-1\big),\quad \xi_b \sim \mathcal{N}(0,1)"
        ),
        equation_note=(
            "g_(r) is the r-th smallest drawn derivative, given to the sample whose margin z_b = y_b f(x_b) has "
            "rank r_b (so the implied loss is convex on the batch), and sg stops its gradient; the card also divides "
            "it by z_b where z_b > 1 and draws from a Box-Cox family when λ ≠ 0."
        ),
        experiments=(
            _x(
                "Ten seeds",
                {"n_seeds": 10},
                "Three seeds give a wide 95% interval. Ten narrow it (about three times the time): see whether the "
                "sign of EnsLoss − BCE settles.",
            ),
            _x(
                "Noisier labels (signal_scale = 0.5)",
                {"signal_scale": 0.5},
                "Labels come closer to coin flips, so there is more noise to overfit. At the quick preset (seed 0) "
                "EnsLoss's edge did not grow: it ended level with BCE and hinge within wide intervals over 3 seeds.",
            ),
            _x(
                "Another derivative family (Box-Cox λ = 0.5)",
                {"boxcox_lambda": 0.5},
                "Derivatives are drawn from a Box-Cox family other than the log-normal. Compare EnsLoss's test "
                "curve with the default run's.",
            ),
        ),
    ),
    "rpo": Guide(
        what_you_see=(
            "A bandit of 200 responses with a hidden concave gold reward stands in for an LLM: the policy tilts a "
            "reference policy π_ref and learns from 300 preference pairs drawn from π_ref. DPO, RPO(η = 1) and "
            "RPO(η = 5) train side by side over 10 seeds. The gold-reward curve shows over-optimisation: DPO's "
            "rises, then collapses as it leaves π_ref's support, while RPO's stays near its peak; the log π(y_w) "
            "curve shows DPO pushing the chosen responses' likelihood down."
        ),
        equation=(
            r"\mathcal{L}_{\mathrm{RPO}} = -\log\sigma\Big(\beta\log\frac{\pi_\theta(y_w\mid x)}{\pi_{\mathrm{ref}}"
            r"(y_w\mid x)} - \beta\log\frac{\pi_\theta(y_l\mid x)}{\pi_{\mathrm{ref}}(y_l\mid x)}\Big) "
            r"- \eta\,\beta\,\log\pi_\theta(y_w\mid x)"
        ),
        equation_note=(
            "y_w and y_l are the chosen and rejected responses, β the DPO temperature and η the weight of the SFT "
            "term on the chosen response (summed token log-probabilities); η = 0 is DPO."
        ),
        experiments=(
            _x(
                "Set η = 0: RPO becomes DPO",
                {"eta": 0.0},
                "The SFT term vanishes, so the RPO arm is DPO exactly: expect identical curves, a gap of zero, and "
                "the check that RPO keeps log π(y_w) to fail (checked at the quick preset).",
            ),
            _x(
                "A wider reference policy",
                {"ref_width": 5.0},
                "π_ref now covers far-out responses, which the gold reward punishes, so π_ref itself scores lower. "
                "Expect DPO still to collapse and RPO to stay near π_ref's level (checked at the quick preset).",
            ),
            _x(
                "Strong SFT (η = 20)",
                {"eta": 20.0},
                "RPO leans towards plain SFT on the chosen responses: safe, but it moves little from π_ref. Expect "
                "a final gold reward below what a small η reaches (the notebook's η × β grid shows the trade-off).",
            ),
        ),
    ),
    "netllm": Guide(
        what_you_see=(
            "A video player picks a bitrate for each of 48 chunks (adaptive bitrate streaming). NetLLM adapts the "
            "kit's small pre-trained LM with LoRA, a multimodal state encoder and a networking head, trained "
            "offline on an experience pool from classic rules (buffer-based, rate-based, MPC) and noisy copies of "
            "them. The curve is the training loss per step; the bars compare QoE per chunk on test and unseen "
            "traces with each rule and with an MLP trained from scratch."
        ),
        equation=(
            r"\mathcal{L} = -\frac{1}{N}\sum_{t} \log \mathrm{softmax}\big(W_{\mathrm{head}}\, h_t\big)_{a_t},"
            r"\qquad h = \mathrm{LM}_{W_0 + BA}\big(\hat R_t,\ \mathrm{enc}(s_t),\ a_t,\ \dots\big)"
        ),
        equation_note=(
            "h_t is the LM's hidden state at step t's last state token, a_t the pool's bitrate, W_0 the frozen LM "
            "weights and BA the trainable rank-r LoRA update; R̂_t is the return-to-go the policy is conditioned on."
        ),
        experiments=(
            _x(
                "Train longer (1,000 steps)",
                {"train_steps": 1000},
                "The quick run stops while the loss is still falling. Four times the steps (and about four times "
                "the time): see whether NetLLM closes the gap to the best classic rule on test traces.",
            ),
            _x(
                "Ask for less (target return × 0.5)",
                {"target_return_scale": 0.5},
                "At inference the policy is conditioned on half the pool's best return, so in principle it should "
                "play like the pool's weaker episodes. At the quick preset (seed 0) its QoE barely moved: look at "
                "how much the policy reads the return it is given.",
            ),
            _x(
                "Without pre-training",
                {"no_pretrain": True},
                "Also trains the same recipe on a randomly initialised LM. The difference from NetLLM is what the "
                "pre-trained weights bring to this task.",
            ),
        ),
    ),
    "frugal": Guide(
        what_you_see=(
            "A one-block GPT learns a synthetic symbol chain with three optimisers from the same start: AdamW, a "
            "GaLore-style optimiser (Adam only inside a rank-ρ SVD subspace of each weight, nothing outside it) "
            "and FRUGAL (the same subspace plus signSGD on the residual). Curves are validation loss per step; a "
            "bar shows each optimiser's state memory. Look at FRUGAL tracking AdamW with GaLore's memory."
        ),
        equation=(
            r"W \leftarrow W - \eta\, Q\,\mathrm{Adam}\big(Q^{\top} G\big) "
            r"- c\,\eta\,\mathrm{sign}\big(G - Q Q^{\top} G\big)"
        ),
        equation_note=(
            "G is the weight's gradient, Q the projector onto the state-full subspace (density ρ, refreshed every "
            "T steps with Adam's moments reset), η the learning rate and c the state-free scale; the last term is "
            "the state-free signSGD step on the residual."
        ),
        experiments=(
            _x(
                "Drop the residual: FRUGAL becomes GaLore",
                {"state_free": "none"},
                "Without the signSGD step on the residual, FRUGAL's arm is the GaLore-style optimiser: expect its "
                "validation loss to end close to GaLore-style's, well above AdamW's (checked at the quick preset).",
            ),
            _x(
                "Fewer state-full directions (ρ = 0.1)",
                {"rho": 0.1},
                "Only a tenth of each weight's rank gets Adam, so state memory shrinks further. At the quick preset "
                "(seed 0) FRUGAL stayed level with AdamW at about a fifth of its state, ahead of GaLore-style by less "
                "than the card's 0.3 nats.",
            ),
            _x(
                "Whole-tensor blocks",
                {"projection": "blocks"},
                "Instead of an SVD subspace, a ρ share of whole weight tensors gets Adam and the rest signSGD (the "
                "official code's default FRUGAL). Compare the validation loss with the SVD run.",
            ),
        ),
    ),
    "vagram": Guide(
        what_you_see=(
            "A small one-layer dynamics model learns the pendulum, whose state carries extra distracting "
            "dimensions, once by plain MSE and once by VaGraM's value-gradient-weighted loss. Each model then "
            "drives the true pendulum by one-step lookahead. The plots give returns and value errors with and "
            "without distractors: a small MSE model spends its capacity on the distractors, VaGraM where the "
            "value changes."
        ),
        equation=(
            r"\mathcal{L}_{\mathrm{VaGraM}} = \frac{1}{N}\sum_{i}\sum_{j}\big(g_{ij}\, e_{ij}\big)^2 + \frac{1}{N}"
            r"\sum_i\big(\hat r_\theta(s_i,a_i) - r_i\big)^2,\quad e_i = f_\theta(s_i,a_i) - s'_i,\quad "
            r"g_i = \nabla_s V(s)\big|_{s = s'_i}"
        ),
        equation_note=(
            "e is the model's next-state error and g the value function's gradient at the observed next state "
            "(held fixed, its norm clipped at a batch quantile), so each coordinate's error counts as much as the "
            "value changes along it."
        ),
        experiments=(
            _x(
                "A bigger model (width 64)",
                {"width": 64},
                "With room to spare, the MSE model fits the distractors too. Expect the return gap to shrink to a "
                "few points although MSE's value error stays far higher (checked at the quick preset).",
            ),
            _x(
                "No distractors (D = 0)",
                {"n_distractors": 0},
                "A width-8 model has enough room for the true state. Expect both models' returns close to the true "
                "model's and VaGraM's advantage gone (checked at the quick preset): it is a distractor effect.",
            ),
            _x(
                "No gradient clipping (quantile = 1)",
                {"quantile": 1.0},
                "Value-gradient norms are used as they are. Look at whether a few large gradients make VaGraM's fit "
                "worse than with the default 0.95 clip.",
            ),
        ),
    ),
    "rffl": Guide(
        what_you_see=(
            "Honest participants with data of different sizes and one adversary (a free-rider by default) train "
            "softmax regressions on digits. RFFL keeps a reputation for each participant from the cosine between "
            "its update and the aggregate, removes those below a threshold, and gives each a share of the "
            "aggregate that grows with its reputation; FedAvg is the baseline. Curves are each participant's "
            "reputation and test accuracy per round: look at the adversary leaving early and rewards ordered by "
            "contribution."
        ),
        equation=(
            r"r_i \leftarrow \alpha\, r_i + (1-\alpha)\cos(\Delta_i, u),\qquad u = \sum_{j \in R} r_j \Delta_j,"
            r"\qquad i \text{ leaves } R \text{ if } r_i \lt \beta / |R|"
        ),
        equation_note=(
            "Δ_i is participant i's update clipped to norm Γ, u the reputation-weighted aggregate (data shares in "
            "the first round), α the smoothing and β the removal coefficient; reputations are renormalised over R, "
            "and participant i receives the largest ⌈q_i·n⌉ entries of u per layer, q_i = r_i / max_j r_j."
        ),
        experiments=(
            _x(
                "No removal threshold (β = 0)",
                {"beta": 0.0},
                "Only a negative reputation removes anyone now. Expect the free-rider to stay in R far longer than "
                "5 rounds, and look at what that costs the honest participants (checked at the quick preset).",
            ),
            _x(
                "Equal shares",
                {"split": "uniform"},
                "Every honest participant has the same amount of data, so their standalone accuracies are nearly "
                "equal and the fairness correlation has little to track: expect ρ to be noisy, no test of fairness.",
            ),
            _x(
                "Label flipping",
                {"attacks": "label_flip"},
                "The adversary relabels 1 as 7. Such a small change keeps its cosine with the aggregate, and its "
                "reputation, high: look at the attack success rate (true 1 predicted 7) more than at removal.",
            ),
        ),
    ),
    "archer": Guide(
        what_you_see=(
            "An agent plays a twenty-questions-style guessing game, one utterance per turn. ArCHer trains an "
            "utterance-level critic off-policy from a replay buffer and a token-level actor by REINFORCE with the "
            "critic's advantage; trajectory-level REINFORCE and online filtered BC play the same number of games. "
            "Curves are the evaluation return over iterations: random play is about −8, and binary search is the "
            "ceiling to aim for."
        ),
        equation=(
            r"A(s,a) = \min_k Q_{\phi_k}(s,a) - \min_k V_{\psi_k}(s),\qquad \mathcal{L}_\pi = -\,\mathbb{E}"
            r"\Big[A(s,a)\sum_{l=1}^{L}\log\pi_\theta\big(a^{l}\mid s, a^{1:l-1}\big)\Big]"
        ),
        equation_note=(
            "s is the dialogue so far and a one utterance of L tokens; the two Q-heads regress on "
            "r + γ(1 − d)·V̄(s′) with Polyak-averaged targets (rate τ), and the advantage A (no gradient) weights "
            "every token's log-probability."
        ),
        experiments=(
            _x(
                "Three times the budget",
                {"iterations": 36},
                "The quick run gives the critic only about a hundred TD steps. With 36 iterations (about three times "
                "the time), see whether ArCHer pulls away from REINFORCE as its critic learns.",
            ),
            _x(
                "More critic steps",
                {"critic_steps": 40},
                "Four times the TD steps per iteration on the same games: the off-policy critic gets more out of "
                "each game, ArCHer's argument. Look at the critic's TD loss and at the return's rise.",
            ),
            _x(
                "No warm-up",
                {"warmup": 0},
                "The actor learns from the first iteration, guided by a critic that knows nothing yet. Compare the "
                "early returns with the default run's.",
            ),
        ),
    ),
    "daa_overoptimization": Guide(
        what_you_see=(
            "32 prompts with 40 candidate responses each, described by a length and a quality; a hidden gold "
            "reward likes length up to a peak ℓ* and punishes it beyond, while π_ref writes short answers. DPO, "
            "IPO and SLiC train at several β on preference pairs from π_ref, and KL and gold are computed exactly. "
            "Curves are gold reward against KL and over training: look for the hump, gold rising then falling as "
            "KL grows, most at small β."
        ),
        equation=(
            r"\mathcal{L}(\theta) = \mathbb{E}_{D}\big[g(\beta\, h_\theta)\big],\quad h_\theta = \log\frac{\pi_"
            r"\theta(y_w\mid x)}{\pi_{\mathrm{ref}}(y_w\mid x)} - \log\frac{\pi_\theta(y_l\mid x)}{\pi_{\mathrm"
            r"{ref}}(y_l\mid x)},\quad g_{\mathrm{DPO}}(z) = -\log\sigma(z),\ g_{\mathrm{IPO}}(z) = (z-1)^2,\ "
            r"g_{\mathrm{SLiC}}(z) = \max(0, 1-z)"
        ),
        equation_note=(
            "β sets the KL budget (small β, large KL); the scaling law R(d) = d(α − β_s log d), d = √KL, is "
            "fitted to the gold gain R over π_ref at every checkpoint."
        ),
        experiments=(
            _x(
                "Add a large β",
                {"betas": "0.01,0.1,1,10"},
                "At β = 10 the policy barely leaves π_ref (KL near zero) and its gold stays near the reference's, "
                "while β = 0.01 spends the most KL and falls from its peak (checked at the quick preset).",
            ),
            _x(
                "IPO only",
                {"objective": "ipo"},
                "Train only IPO's squared loss. Compare its gold-against-KL curves with DPO's in the default run: "
                "the paper finds that every DAA over-optimises.",
            ),
            _x(
                "Gold peaks further out (ℓ* = 10)",
                {"gold_peak": 10.0},
                "Longer answers are good up to length 10, far beyond what π_ref writes, so pushing length pays all "
                "the way. Expect gold to keep rising to the end of training at every β and the over-optimisation "
                "headline to fail (checked at the quick preset): the hump needs a gold peak the policy can pass.",
            ),
        ),
    ),
    "rm_ensembles": Guide(
        what_you_see=(
            "Responses are 8-dimensional vectors, and a hidden gold reward prefers moderate ones in one direction. "
            "Five reward models (MLPs differing by seed) learn from 1,000 noisy preference pairs; best-of-n then "
            "keeps the best of n samples by a single RM, the ensemble mean, the worst case (WCO) or the "
            "uncertainty-weighted objective (UWO). Curves are gold reward against n: a single RM's curve turns "
            "down as n grows, and the conservative ensembles are meant to turn down less."
        ),
        equation=(
            r"R_{\mathrm{WCO}}(x,y) = \min_{i} R_i(x,y),\qquad R_{\mathrm{UWO}}(x,y) = \frac{1}{k}\sum_{i=1}^{k} "
            r"R_i(x,y) - \lambda\,\mathrm{Var}_i\, R_i(x,y)"
        ),
        equation_note=(
            "R_1 … R_k are the k standardised member RMs and λ the UWO penalty on their disagreement; best-of-n "
            "keeps the sample with the highest combined score, at a KL of log n − (n − 1)/n from the base policy."
        ),
        experiments=(
            _x(
                "Clean labels",
                {"noise": 0.0},
                "No preference label is flipped. Expect the single RM's best-of-n curve to turn down little or not "
                "at all by n = 2048 (checked at the quick preset): here label noise is what drives the "
                "over-optimisation the ensembles guard against.",
            ),
            _x(
                "Stronger UWO penalty (λ = 2)",
                {"lam": 2.0},
                "UWO punishes disagreement four times more. Look at whether its curve flattens further at large n, "
                "and whether it gives up gold at small n.",
            ),
            _x(
                "Two members",
                {"n_members": 2},
                "A minimal ensemble: the minimum and the variance rest on two RMs. See how much of the conservative "
                "objectives' effect remains.",
            ),
        ),
    ),
    "recsys_extraction": Guide(
        what_you_see=(
            "A victim sequential recommender (SASRec) answers each query with its top-k list. The attacker holds "
            "a small share of real user sequences and a query budget: the proposed framework trains a sampler on "
            "them, generates realistic sequences through the victim's answers, and distils a surrogate with a "
            "ranking loss plus a bidirectional repair loss. Data-free extraction (random walks inside the victim's "
            "lists) gets the same budget. The score is the surrogate's agreement with the victim's top 10 (Agr@10)."
        ),
        equation=(
            r"\mathcal{L} = \sum_{j=1}^{k-1}\max\big(0,\ s(v_{j+1}) - s(v_j) + m_1\big) + \sum_{j=1}^{k}\max\big(0,"
            r"\ s(n_j) - s(v_j) + m_2\big) + \lambda\,\mathcal{L}_{\mathrm{BR}}"
        ),
        equation_note=(
            "v_1 … v_k is the victim's ranked list for a prefix, n_j items sampled outside it, s the surrogate's "
            "scores and m_1 = m_2 = 0.5; L_BR, the bidirectional repair loss on where the two top lists disagree, "
            "is the card's inferred reading, weighted by λ."
        ),
        experiments=(
            _x(
                "No repair loss (λ = 0)",
                {"lam": 0.0},
                "The proposed arm distils with the ranking loss only. Expect its Agr@10 to drop to about the "
                "'without L_BR' arm's and the gap over data-free to shrink (checked at the quick preset).",
            ),
            _x(
                "Less real data (2%)",
                {"few_shot_frac": 0.02},
                "The attacker holds a fifth of the default share. At the quick preset (seed 0) the data-free walks "
                "then came out ahead: a sampler trained on so few sequences generates less useful queries.",
            ),
            _x(
                "Twice the budget",
                {"budget_seqs": 600},
                "Every arm may query twice as many sequences. Watch whether more queries help data-free extraction "
                "more than the few-shot framework.",
            ),
        ),
    ),
    "tempnet": Guide(
        what_you_see=(
            "A small LM, trained with plain cross-entropy and then frozen, gives next-token logits for factual "
            "contexts (one clear answer) and creative ones (many good answers). TempNet, a small network on the "
            "logits, learns a temperature per input by minimising the KL-DRO loss; it faces τ = 1, a learned "
            "global τ, the best single τ of a grid and the per-context oracle τ*. Curves are the DRO loss over "
            "training; the scatter shows TempNet's τ against the oracle's."
        ),
        equation=(
            r"\mathcal{L}(w) = \mathbb{E}\Big[\tau\,\log\Big(\frac{1}{m}\sum_{k=1}^{m} e^{(h_k - h_y)/\tau}\Big) "
            r"+ \tau\rho\Big],\qquad \tau = T_w(h) \in [\tau_{\min}, \tau_{\max}]"
        ),
        equation_note=(
            "h are the frozen LM's logits over m tokens, y the label, ρ the KL budget of the worst-case "
            "distribution and T_w TempNet; at the per-input optimal τ the worst case softmax(h/τ) lies exactly at "
            "KL = ρ from uniform."
        ),
        experiments=(
            _x(
                "A smaller KL budget (ρ = 0.5)",
                {"rho": 0.5},
                "The worst case may move less from uniform, so the optimal temperatures rise. Expect TempNet's τ to "
                "be higher on both kinds of context and still to track the oracle (checked at the quick preset).",
            ),
            _x(
                "Cap the temperature at 1",
                {"tau_max": 1.0},
                "At ρ = 2 the oracle gives factual contexts a τ above 1, which TempNet can no longer reach. Expect "
                "TempNet to close little or none of the gap to the oracle, and the headline to fail (checked at the "
                "quick preset).",
            ),
            _x(
                "A tiny TempNet (H = 2)",
                {"hidden": 2},
                "Two hidden units. See how much of the per-input temperature survives in such a small network.",
            ),
        ),
    ),
    "lol_decoding": Guide(
        what_you_see=(
            "A small transformer learns a world of entities and facts in which, for rare entities, a popular "
            "misconception is stated more often than the truth. Decoders answer multiple-choice questions about "
            "held-out rare entities: greedy, contrastive decoding (CD), DoLa, ICD (contrast with an amateur "
            "fine-tuned on false statements) and LOL (ICD's contrast fused over a lower and the final layer, with "
            "a truthfulness prefix). The bars are MC1 per decoder; α, ω and ℓ are tuned on validation entities."
        ),
        equation=(
            r"F(v) = F_L(v) + \omega\,F_\ell(v),\qquad F_j(v) = (1+\alpha)\log \tilde q_M^{(j)}(v) - \alpha\log "
            r"q_A^{(j)}(v),\qquad v \in V_{\mathrm{head}}"
        ),
        equation_note=(
            "q_M^(j) and q_A^(j) are the early-exit next-token distributions of the model M and the "
            "hallucination-induced amateur A at layer j (L final, ℓ lower), the tilde marks M run with the "
            "truthfulness prefix, and V_head keeps the tokens with q_M ≥ β_apc·max q_M."
        ),
        experiments=(
            _x(
                "Plausibility constraint off (β_apc = 0)",
                {"beta_apc": 0.0},
                "Contrasts may now pick tokens the model itself finds unlikely. Expect ICD to gain a lot and come "
                "much closer to LOL (checked at the quick preset; the notebook's sensitivity figure shows the same).",
            ),
            _x(
                "LOL by hand, without the lower layer",
                {"tune": False, "omega": 0.0},
                "With tuning off the knobs are used as given, and ω = 0 removes the lower-layer contrast: LOL is "
                "then ICD with the truthfulness prefix. Compare with tuned LOL to see what the lower layer adds.",
            ),
            _x(
                "A weaker amateur",
                {"amateur_steps": 5},
                "The amateur sees false statements for 5 steps instead of 40, so it hallucinates less and the "
                "contrast has less to subtract. Look at how ICD's gain over greedy changes.",
            ),
        ),
    ),
    "superhf": Guide(
        what_you_see=(
            "A tiny LM writes 8-token completions on a few topics; the proxy reward it is trained on pays for an "
            "exploit token, '!', while the hidden gold reward penalises repeats. SuperHF samples a superbatch "
            "per prompt, keeps the best by the proxy and fine-tunes on it with a KL prior to the initial model; "
            "PPO gets the same number of samples. Curves are proxy and gold reward, KL and cross-prompt METEOR "
            "over iterations: look for gold parting from the proxy, the sign of reward hacking."
        ),
        equation=(
            r"\mathcal{L}(\theta) = \mathrm{CE}_\theta\big(y^{*}\mid x\big) + \beta_{\mathrm{KL}}\,\mathrm{KL}"
            r"\big(\pi_0 \,\Vert\, \pi_\theta\big),\qquad y^{*} = \arg\max_{s \le S} R(x, y_s),\quad "
            r"y_s \sim \pi_\theta(\cdot\mid x)"
        ),
        equation_note=(
            "π_0 is the initial model, R the proxy reward, S the superbatch size (the top_k best completions are "
            "kept per prompt), and the KL term is averaged over the completion's tokens."
        ),
        experiments=(
            _x(
                "A strong prior (β_KL = 2)",
                {"beta_kl": 2.0},
                "The policy is held much closer to π_0. Expect a smaller proxy gain, further behind PPO (checked at "
                "the quick preset); look at whether gold and the share of '!' show less hacking than SuperHF "
                "without the prior (always trained too).",
            ),
            _x(
                "A bigger superbatch (S = 64)",
                {"superbatch": 64},
                "64 samples per prompt and iteration, the best one kept: a stronger filter, and more samples per "
                "iteration for every method. Watch the proxy rise faster, and whether gold follows.",
            ),
            _x(
                "Keep the top 4",
                {"top_k": 4},
                "Fine-tune on the four best completions per prompt instead of one: a softer filter. Compare proxy "
                "and gold with the default run.",
            ),
        ),
    ),
    "ear": Guide(
        what_you_see=(
            "After a frozen encoder is trained on digits, shifted domains (rotated, inverted, noisy, …) arrive "
            "unlabelled. EAR detects a new domain with hyperdimensional (HDC) descriptors, grows a small adaptor "
            "picked by a zero-cost NAS proxy under a parameter budget, and routes each input to its domain's "
            "adaptor; sequential fine-tuning and a single shared adaptor are the baselines. The tables give "
            "detection AUROC per domain, the share routed to the right domain, and accuracy on every domain after "
            "the stream."
        ),
        equation=(
            r"H(x) = \sum_{\ell} P_\ell f_\ell(x),\qquad s(x) = \max_{k}\cos\big(H(x), C_k\big),\qquad "
            r"\text{shift if } \frac{1}{W}\sum_{x \in \text{window}} \mathbf{1}\big[s(x) \lt \theta\big] \gt \kappa"
        ),
        equation_note=(
            "f_ℓ are the encoder's pooled layer features, P_ℓ fixed random projections into D dimensions, C_k the "
            "bundled class descriptors of known data, θ the threshold that passes 95% of in-distribution inputs, "
            "W the window and κ the share of out-of-distribution inputs that declares a new domain."
        ),
        experiments=(
            _x(
                "A more sensitive detector (κ = 0.1)",
                {"kappa": 0.1},
                "A window now declares a new domain when more than a tenth of it looks out of distribution. Expect "
                "EAR to grow adaptors for some new domains where the default grows none (checked at the quick "
                "preset); look at the routing share and whether the headline gets closer.",
            ),
            _x(
                "Random adaptor choice",
                {"proxy": "random"},
                "Each adaptor is picked at random under the budget instead of by NASWOT. Compare the accuracy of "
                "'EAR, boundaries known' with the default run: that isolates what the zero-cost proxy adds.",
            ),
            _x(
                "Bigger hypervectors (D = 8192)",
                {"hd_dim": 8192},
                "Four times the HDC dimension. Look at whether the per-domain detection AUROC rises.",
            ),
        ),
    ),
    "ailboost": Guide(
        what_you_see=(
            "A slippery 8×8 gridworld with a known model, one expert demonstration per seed, and the same number "
            "of environment steps per round for every method. AILBoost adds a weak learner each round (soft-Q on "
            "the discriminator's reward), trains the discriminator against a replay buffer weighted like the "
            "ensemble, and evaluates the ensemble; a DAC-style learner (BCE discriminator, uniform buffer, last "
            "policy) and behaviour cloning are the baselines. Curves are normalised return and the total-variation "
            "distance to the expert's state-action distribution per round."
        ),
        equation=(
            r"\mathcal{L}_D(\phi) = \mathbb{E}_{(s,a)\sim D_E}\big[e^{-D_\phi(s,a)}\big] + \mathbb{E}_{(s,a)\sim "
            r"B_w}\big[D_\phi(s,a)\big],\qquad w_j \leftarrow (1-\eta)\,w_j,\quad w_{t+1} = \eta"
        ),
        equation_note=(
            "D_E are the expert's demonstrations and B_w the replay buffer weighted like the ensemble; at the "
            "optimum D = log(d^E / d^mix), the next learner's reward, and η is the boosting step that gives each "
            "new learner its weight."
        ),
        experiments=(
            _x(
                "The paper's step (η = 0.05)",
                {"eta": 0.05},
                "Each new learner gets a twentieth of the weight, so the ensemble and its buffer change slowly, and "
                "with 30 rounds the early learners keep much weight. Compare the ensemble's return curve with η = 0.2.",
            ),
            _x(
                "Ten demonstrations",
                {"n_expert_episodes": 10},
                "One episode of a stochastic expert can take a rare route; ten show its distribution better. Expect "
                "every method's TV to the expert to fall far below the one-demonstration run's and the returns to "
                "rise (checked at the quick preset); look at whether the methods' order changes.",
            ),
            _x(
                "No slip",
                {"slip": 0.0},
                "The chosen action is always the one taken. Look at whether imitation gets easier for every "
                "method, and whether the ranking of the methods changes.",
            ),
        ),
    ),
    "llm_adapters": Guide(
        what_you_see=(
            "The kit's small pre-trained LM, which already answers plain sums, learns a new arithmetic operator "
            "from instruction-style examples. Seven arms see the same data: the frozen base, full fine-tuning, a "
            "series adapter after the MLP, a parallel adapter beside it, LoRA on attention + MLP and on attention "
            "only, and prefix tuning. Curves are training loss per step; bars give test exact match and the share "
            "of parameters each arm trains."
        ),
        equation=(
            r"h' = h + U\,\sigma(D\,h)\ \ (\text{series}),\qquad y = W x + U\,\sigma(D\,x)\ \ (\text{parallel}),"
            r"\qquad y = W x + \frac{\alpha}{r}\,B A x\ \ (\text{LoRA})"
        ),
        equation_note=(
            "W is a frozen weight, D and U the bottleneck's down- and up-projections (size r), A and B LoRA's "
            "rank-r factors with B = 0 at the start; prefix tuning instead learns n_v virtual key/value vectors "
            "per layer."
        ),
        experiments=(
            _x(
                "Rank-1 LoRA",
                {"rank": 1},
                "A quarter of LoRA's parameters. Expect LoRA still to match full fine-tuning on this small edit "
                "(checked at the quick preset): the new operator needs very few directions.",
            ),
            _x(
                "BERT-style adapter init",
                {"adapter_init": "bert"},
                "Both bottleneck matrices start at N(0, 0.02²), so the adapters are near, not exactly, the identity "
                "at step 0. Compare the series and parallel adapters' first losses and final accuracy.",
            ),
            _x(
                "The card's training length",
                {"n_steps": 250},
                "250 steps instead of 40 (about five times the time). At 40 steps prefix tuning ends level with the "
                "bottleneck adapters and behind LoRA: look at which of them pull ahead.",
            ),
        ),
    ),
    "inpo": Guide(
        what_you_see=(
            "Four prompts with a few responses each and an intransitive preference oracle (cycles, as in "
            "rock-paper-scissors), so there is no best response, only a Nash mixture. INPO and iterative DPO learn "
            "from on-policy pairs for 40 iterations, and the exact online-mirror-descent path is computed "
            "alongside. The curve is exploitability per iteration (0 at Nash): iterative DPO tends to settle on a "
            "pure response, INPO moves towards the mixture."
        ),
        equation=(
            r"\hat{\mathcal{L}}_t(\theta) = \mathrm{mean}\Big(\log\frac{\pi_\theta(y_w)}{\pi_\theta(y_l)} - \eta"
            r"\tau\log\frac{\pi_{\mathrm{ref}}(y_w)}{\pi_{\mathrm{ref}}(y_l)} - (1-\eta\tau)\log\frac{\pi_t(y_w)}"
            r"{\pi_t(y_l)} - \frac{\eta}{2}\Big)^2"
        ),
        equation_note=(
            "π_t is the previous iterate, π_ref the reference, (y_w, y_l) a pair ordered by the oracle, η the "
            "mirror-descent step and τ the KL regularisation (ητ ≤ 1); the minimiser is the OMD step "
            "π_{t+1} ∝ π_t^{1−ητ} π_ref^{ητ} exp(η P(y ≻ π_t))."
        ),
        experiments=(
            _x(
                "No regularisation (τ = 0)",
                {"tau": 0.0},
                "Without the pull towards π_ref, mirror descent on this cyclic game need not settle. Expect INPO's "
                "last iterate to stay far from Nash, about as exploitable as iterative DPO's (checked at the quick "
                "preset).",
            ),
            _x(
                "A smaller step (η = 0.5)",
                {"eta": 0.5},
                "Each iteration moves a quarter as far. Expect INPO's exploitability to fall more slowly and end "
                "higher than with η = 2, still below iterative DPO's (checked at the quick preset).",
            ),
            _x(
                "Fewer pairs (64 per prompt)",
                {"n_pairs": 64},
                "Each iteration learns from an eighth of the samples. Look at how far the learned iterate strays "
                "from the closed-form OMD step (the tracking check) and at the curve's noise.",
            ),
        ),
    ),
    "regret_loss": Guide(
        what_you_see=(
            "A small transformer reads the loss vectors seen so far and outputs a mixed action each round of an "
            "online-learning game. It trains with the regret-loss (a soft maximum of the regret over sampled loss "
            "sequences, with no labels of the best action) and, for comparison, with a supervised loss; Hedge, "
            "FTPL, FTL and uniform play the same fresh sequences. Curves are training regret per step; the table "
            "gives mean regret per loss family (one held out), and self-play shows rock-paper-scissors strategies "
            "approaching Nash."
        ),
        equation=(
            r"\mathcal{L}(\theta; k, N) = \mathbb{E}\Big[\frac{\sum_{j=1}^{N} h(R_j)\, e^{k R_j}}{\sum_{j=1}^{N} "
            r"e^{k R_j}}\Big],\qquad R_j = \sum_{t=1}^{T}\langle \ell_t^{(j)}, \pi_t\rangle - \min_{i}\sum_{t=1}^{T}"
            r"\ell_{t,i}^{(j)}"
        ),
        equation_note=(
            "π_t = M_θ(ℓ_1, …, ℓ_{t−1}) is the model's mixed action at round t, R_j its regret on the j-th of N "
            "sampled loss sequences, h non-decreasing (here h(x) = x) and k the sharpness: k = 0 averages the "
            "regrets, a large k approaches the worst one."
        ),
        experiments=(
            _x(
                "Average regret (k = 0)",
                {"k": 0.0},
                "The loss becomes the plain mean regret, with no weight on the worst sequences. At the quick preset "
                "(seed 0) the worst-family regret, the headline's number, came out about as with k = 2: look for "
                "where k matters, in the per-family table and the training curve.",
            ),
            _x(
                "A sharper worst case (k = 20)",
                {"k": 20.0},
                "Training focuses almost entirely on the worst sampled sequence. Look at the worst-family regret "
                "and at whether the training curve gets noisier.",
            ),
            _x(
                "A longer horizon (T = 40)",
                {"horizon": 40},
                "Twice the rounds per sequence. No-regret means Regret_T / T falls as T grows: compare the "
                "transformer's regret per round with Hedge's at this horizon.",
            ),
        ),
    ),
    "bang": Guide(
        what_you_see=(
            "Inputs carry a weak invariant feature (a noisy pooled digit) and coloured patches that are spurious: "
            "group A's patches match the label in pre-training, group B's in fine-tuning, and neither reliably out "
            "of distribution (OOD). The pre-trained θ_0 and the fine-tuned θ_ft are averaged in weight space "
            "(WiSE-FT) and compared with an output ensemble; BANG fine-tunes with label smoothing and MixUp before "
            "averaging. Plots show OOD accuracy along the mixing weight α and OOD confidence."
        ),
        equation=(
            r"\theta_\alpha = (1-\alpha)\,\theta_0 + \alpha\,\theta_{\mathrm{ft}},\qquad \tilde y = (1-\epsilon)\,"
            r"\mathrm{onehot}(y) + \frac{\epsilon}{C},\quad \tilde x = \lambda x_i + (1-\lambda)x_j,\quad "
            r"\lambda \sim \mathrm{Beta}(a, a)"
        ),
        equation_note=(
            "θ_0 is the pre-trained and θ_ft the fine-tuned model, α the mixing weight, ε the label smoothing over "
            "C classes and a the MixUp parameter; BANG averages θ_0 with θ_ft^B, fine-tuned on these softened "
            "targets (mixed inputs with mixed labels)."
        ),
        experiments=(
            _x(
                "α = 1: no averaging",
                {"alpha": 1.0},
                "The mixture is θ_ft itself: expect WiSE-FT's OOD accuracy to equal θ_ft's and no sample to be "
                "wrong for both ends yet right for the average (checked at the quick preset). Read the α path for "
                "where the best mix lies.",
            ),
            _x(
                "Plain fine-tuning inside BANG",
                {"label_smoothing": 0.0, "mixup_a": 0.0},
                "With neither label smoothing nor MixUp, BANG's fine-tuning is ordinary fine-tuning. Expect BANG "
                "and WiSE-FT to coincide, and θ_ft^B to be as confident as θ_ft (checked at the quick preset).",
            ),
            _x(
                "A harsher shift",
                {"ood_b_wrong": 0.6},
                "Out of distribution, group B's patches, which θ_ft learned to trust, more often show a consistent "
                "wrong colour. Expect θ_ft to lose OOD accuracy; watch how much weight averaging recovers.",
            ),
        ),
    ),
    "mossbench": Guide(
        what_you_see=(
            "A generated benchmark of benign requests that look risky (exaggerated risk, negated harm, "
            "counterintuitive interpretation), with plain controls and harmful contrast items. A keyword filter and "
            "a context-aware classifier answer at nine safety strengths, a rule-based judge marks refusals, and "
            "each model's operating point is the least caution that refuses enough harmful validation items. The "
            "plots show benign against harmful refusal rates along the sweep and refusals per stimulus type: look "
            "at what safety costs in benign refusals."
        ),
        equation=(
            r"\mathrm{RR} = \frac{1}{N}\sum_{i=1}^{N} j_i,\quad j_i = 1 \text{ if reply } i \text{ is judged a "
            r"refusal, else } 0;\qquad \rho_{\mathrm{S}}\big(\mathrm{RR}_{\mathrm{harmful}}(s),\ "
            r"\mathrm{RR}_{\mathrm{benign}}(s)\big)"
        ),
        equation_note=(
            "RR is the refusal rate over N items, overall and per stimulus type; s is the swept safety strength, "
            "and the Spearman correlation ρ_S over the sweep measures how benign refusals rise with harmful ones "
            "(the card's inferred statistic)."
        ),
        experiments=(
            _x(
                "A stricter safety target (99%)",
                {"target_harmful": 0.99},
                "Each model must refuse 99% of harmful validation items. Expect both models' benign refusal rates "
                "to rise sharply at their operating points (checked at the quick preset).",
            ),
            _x(
                "Stock phrases count as refusals",
                {"judge_mode": "stock_phrases"},
                "Any 'sorry' or 'as an AI' now marks a refusal, even in a reply that answers. Expect higher benign "
                "refusal rates from the same replies, plain controls included (checked at the quick preset): the "
                "numbers depend on the judge's rubric.",
            ),
            _x(
                "Cluttered scenes",
                {"distractors": 4},
                "Four random objects join every scene, a tenth of them risky. Look at how the keyword filter's "
                "benign refusals rise compared with the context-aware model's.",
            ),
        ),
    ),
    "tlob": Guide(
        what_you_see=(
            "A simulated limit-order book carries a fast signal whose sign flips with the market regime and a slow "
            "signal deep in the book. TLOB (attention over time and over features), MLPLOB, a logistic regression "
            "on the last snapshot and the majority class predict whether the smoothed mid-price goes up, down or "
            "stays at horizon h. Curves are training loss and validation macro-F1; a plot compares TLOB's labels "
            "with the classic ones as h grows."
        ),
        equation=(
            r"\ell_t = \frac{m^{+}_t - m^{-}_t}{m^{-}_t},\quad m^{-}_t = \frac{1}{w}\sum_{i=0}^{w-1} m_{t-i},\quad "
            r"m^{+}_t = \frac{1}{w}\sum_{i=0}^{w-1} m_{t+h-i},\quad \text{up if } \ell_t \gt \theta,\ \text{down "
            r"if } \ell_t \lt -\theta"
        ),
        equation_note=(
            "m_t is the mid-price, h the horizon, w = min(smooth_window, h) the smoothing window and θ = mean|ℓ|/2 "
            "the threshold (stationary in between); the classic labels smooth over h instead of w, which biases "
            "long horizons."
        ),
        experiments=(
            _x(
                "Three horizons",
                {"horizons": "5,20,50"},
                "Train and score at h = 5, 20 and 50 (about three times the time). Look at how macro-F1 changes "
                "with the horizon, and at the labelling gap growing with h.",
            ),
            _x(
                "Faster regimes",
                {"switch_prob": 0.05},
                "The fast signal's sign flips ten times as often, so each regime is short. At the quick preset "
                "(seed 0) TLOB's edge over the logistic regression on the last snapshot shrank rather than grew: "
                "short regimes leave little history to read.",
            ),
            _x(
                "No slow signal",
                {"slow_weight": 0.0},
                "Only the regime-flipped fast signal is left. See which model loses most: the slow signal sits deep "
                "in the book, where attention over features can find it.",
            ),
        ),
    ),
    "allora": Guide(
        what_you_see=(
            "A frozen 3-layer MLP is shifted by a low-rank perturbation, and rank-4 adapters on every layer learn "
            "the shift from 256 noisy points. LoRA (with dropout and α/r scaling), DoRA and ALLoRA (no dropout, no "
            "scaling, each row's update multiplied by c(θ)) train on the same batches. Curves are test MSE per "
            "step: ALLoRA is meant to leave the zero start faster, which the claims read at steps 10 and 50."
        ),
        equation=(
            r"\theta \leftarrow \theta - \mathrm{lr}\cdot c(\theta)\, u(\theta),\qquad "
            r"c(\theta) = \frac{1}{\sqrt{\lVert\theta\rVert_2^2 + 1/\eta^2}}"
        ),
        equation_note=(
            "θ is one row of an adapter matrix A or B (the card's inferred grouping) or the whole matrix, u(θ) "
            "Adam's step direction, and η the one hyper-parameter: c = η at θ = 0 and about 1/‖θ‖ for large θ."
        ),
        experiments=(
            _x(
                "A tiny η (0.05)",
                {"eta": 0.05},
                "c(θ) starts at 0.05, so ALLoRA's first steps are twenty times smaller than Adam's. Expect ALLoRA "
                "to barely leave the zero-shot MSE and every claim to fail (checked at the quick preset).",
            ),
            _x(
                "Whole-matrix norms",
                {"grouping": "matrix"},
                "c(θ) is computed per matrix instead of per row. Compare the step-10 and step-50 MSE with the row "
                "grouping.",
            ),
            _x(
                "A larger learning rate",
                {"lr": 0.009},
                "Every matched-lr arm uses three times the rate. Part of ALLoRA's edge is a larger effective step "
                "near zero: see whether LoRA closes the gap when its own rate goes up.",
            ),
        ),
    ),
    "dual_rl": Guide(
        what_you_see=(
            "A tabular 8×8 gridworld with holes. Part A, imitation: ReCOIL learns from one expert episode plus "
            "random replay data, against behaviour cloning and IQ-Learn. Part B, offline RL from ε-noisy expert "
            "data: f-DVL with the χ² and total-variation value losses against IQL and XQL, then a stress test that "
            "starts the Q tables from large noise. Curves are normalised returns and value losses per step."
        ),
        equation=(
            r"\mathcal{L}_V(\psi) = \mathbb{E}_{(s,a)\sim d^{O}}\big[\lambda\, g_f\big(Q(s,a) - V_\psi(s)\big) - "
            r"(1-\lambda)\big(Q(s,a) - V_\psi(s)\big)\big],\quad g_{\chi^2}(x) = \max\big(x + \tfrac{x^2}{4}, "
            r"0\big),\quad g_{\mathrm{TV}}(x) = \max(x, 0)"
        ),
        equation_note=(
            "d^O is the offline data, Q is held fixed while V is fitted, and λ pushes V towards the best "
            "in-support action value; XQL's Gumbel loss e^{x/α} − x/α − 1 is the reverse-KL member, the one the "
            "stress test can blow up."
        ),
        experiments=(
            _x(
                "ReCOIL closer to IQ-Learn (β = 0.8)",
                {"beta": 0.8},
                "The expert's share of ReCOIL's mixtures grows (β = 1 would be IQ-Learn). Look at whether ReCOIL "
                "keeps its lead over BC; at the quick preset it ended a little lower than with β = 0.2.",
            ),
            _x(
                "A tamer XQL (α = 10)",
                {"alpha": 10.0},
                "A larger Gumbel temperature softens the exponential in XQL's value loss. Expect XQL's largest "
                "value loss in the stress test to stay finite, so the blow-up claim fails (checked at the quick "
                "preset): the instability belongs to small α.",
            ),
            _x(
                "No stress (std = 0)",
                {"stress_std": 0.0},
                "The stress test's Q tables start at zero like the others. Expect no blow-up, even for XQL at α = 1 "
                "(checked at the quick preset): the exponential loss explodes from a noisy start, not by itself.",
            ),
        ),
    ),
    "ssl_recsys": Guide(
        what_you_see=(
            "A synthetic catalogue with Zipf popularity and categorical item features, and a log of user–item "
            "pairs. A two-tower retrieval model trains with an in-batch softmax (with a log-frequency correction); "
            "the +SSL arm adds a contrastive task on two complementary masked views of items drawn uniformly from "
            "the catalogue. Curves are the losses and validation recall@50 per step; a plot splits recall by item "
            "popularity (head, mid, tail)."
        ),
        equation=(
            r"\mathcal{L} = \mathcal{L}_{\mathrm{main}} + \alpha\,\mathcal{L}_{\mathrm{self}},\qquad "
            r"\mathcal{L}_{\mathrm{self}} = -\frac{1}{N}\sum_{i=1}^{N}\log\frac{e^{\langle z_i, z'_i\rangle/\tau}}"
            r"{\sum_{j=1}^{N} e^{\langle z_i, z'_j\rangle/\tau}}"
        ),
        equation_note=(
            "z_i and z′_i are the item tower's normalised embeddings of two complementary masked views of item i "
            "(correlated feature masking by default), τ the SSL temperature and α its weight; L_main is the "
            "in-batch softmax over query–item pairs."
        ),
        experiments=(
            _x(
                "A fifth of the data",
                {"train_fraction": 0.2},
                "Only 20% of the logged pairs are used. The paper reports the SSL task helping most when data are "
                "scarce, but at the quick preset (seed 0) +SSL ended below the two-tower overall while still "
                "gaining on tail items: read the popularity buckets, not only the overall recall.",
            ),
            _x(
                "Random masking",
                {"masking": "rfm"},
                "Mask a random half of the features instead of correlated groups. The paper argues random splits "
                "make the contrastive task too easy: compare recall, above all on tail items.",
            ),
            _x(
                "SSL off (α = 0)",
                {"alpha": 0.0},
                "The +SSL arm trains on the main loss alone, from the same start and batches as the two-tower. "
                "Expect the two arms to give the same recall (checked at the quick preset): every gap in the "
                "default run is the SSL task's doing.",
            ),
        ),
    ),
}


def guide_for(slug: str) -> Guide | None:
    """The guide of the method with registry slug ``slug``, or ``None`` for an unknown slug."""
    return GUIDES.get(slug)


def experiment_values(slug: str, experiment: Experiment, preset: str = "quick") -> dict:
    """The knob values ``experiment`` would run with: the preset's values with its overrides applied, checked by
    :func:`labkit.core.params.resolve_params` (names, types, ranges and the method's cross-field constraints), the
    same check every front end makes. Raises ``ValueError`` for an override the method refuses. Imports the method
    module (and torch) on first use."""
    from labkit.core.params import resolve_params
    from labkit.core.registry import get_method

    return resolve_params(get_method(slug).load().PARAMS, preset, experiment.overrides)
