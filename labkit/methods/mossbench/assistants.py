"""The toy assistants the MOSSBench harness is run on: each is a risk score r(x) ∈ [0, 1] and a threshold, and
answers with a template reply, so any judge can read it.

* keyword filter: r(x) = 1 − exp(−Σ_w risk_weight(w)) over scene and question words (blind to context/negation);
* context-aware: r(x) = σ(θ·φ(x)), a logistic regression on bag-of-tokens φ (scene tokens, question words without
  scikit-learn's English stop words) plus (risky object, context) and (harmful act, negation cue) pair indicators,
  trained on a train split whose phrasings never occur in the test split;
* (full preset) a tiny transformer "assistant" fine-tuned with refusal-class weight s/(1 − s): safety
  fine-tuning of strength s, which for a calibrated model moves the 0.5 decision threshold to exactly 1 − s.

With **safety strength** s ∈ [0, 1] (the card's caution knob) an assistant refuses iff r(x) ≥ 1 − s.
These are the experiment's models, not the paper's method (the paper evaluates 20 real MLLMs).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable

import numpy as np

from labkit.data import mossbench as bench

#: the keyword filter's lexicon: how alarming each word looks on its own
RISK_WEIGHTS = {
    "knife": 1.0,
    "gun": 1.5,
    "fire": 0.8,
    "campfire": 0.8,
    "pills": 0.8,
    "pill": 0.8,
    "syringe": 1.0,
    "grenade": 1.5,
    "skull": 0.8,
    "poison": 1.2,
    "blood": 1.0,
    "cigarette": 0.6,
    "cigarettes": 0.6,
    "wine": 0.5,
    "broken": 0.3,
    "glass": 0.3,
    "axe": 1.0,
    "smoking": 0.6,
    "fight": 1.0,
    "drunk": 1.0,
    "bullying": 1.0,
    "graffiti": 0.5,
    "vandal": 0.6,
    "drug": 1.2,
    "needles": 0.8,
    "needle": 0.8,
    "shoplifter": 1.0,
    "police": 0.3,
    "kill": 1.5,
    "shoot": 1.2,
    "execute": 1.0,
    "blow": 0.6,
    "attack": 1.2,
    "crack": 0.5,
    "steal": 1.0,
    "destroy": 0.8,
    "dissect": 0.6,
    "silence": 0.5,
    "hurt": 1.2,
    "injure": 1.2,
    "lethal": 1.5,
    "weapon": 1.2,
    "caught": 0.8,
    "noticing": 0.5,
    "nobody": 0.3,
    "promoting": 0.5,
    "encouraging": 0.5,
    "glorifies": 0.8,
    "prisoner": 0.3,
    "witness": 0.3,
    "password": 0.5,
}


def item_words(item: dict) -> list[str]:
    """The words a text-only reader sees: the scene tokens split at "_" (or, for items without a toy scene, the
    image description's words), then the question's words."""
    scene = item.get("scene")
    seen = [w for token in scene for w in token.split("_")] if scene else bench.words(item.get("description", ""))
    return seen + bench.words(item.get("question", ""))


def keyword_score(item: dict, weights: dict = RISK_WEIGHTS) -> float:
    """Σ_w risk_weight(w) over :func:`item_words` (with repeats)."""
    return float(sum(weights.get(w, 0.0) for w in item_words(item)))


def keyword_risk(item: dict) -> float:
    """r(x) = 1 − exp(−Σ_w risk_weight(w)): refusing iff r ≥ 1 − s is refusing iff Σ_w ≥ −ln s."""
    return 1.0 - math.exp(-keyword_score(item))


def content_words(question: str, stop_words: bool = True) -> list[str]:
    """The question's words, without scikit-learn's English stop words when ``stop_words`` (what the learned models
    read)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    drop = ENGLISH_STOP_WORDS if stop_words else ()
    return [w for w in bench.words(question) if w not in drop]


#: negation cue → the harmful act it negates (a no-smoking sign negates a person smoking)
NEGATION_CUES = {cue: act for act, (cue, _, _) in bench.HARM_ACTS.items()}


def context_features(item: dict, stop_words: bool = True) -> list[str]:
    """φ(x) as feature names, as the card specifies: bag of tokens (every scene token, every question word except
    scikit-learn's English stop words), plus
    an indicator for every (risky object, context) pair and every (harmful act, negation cue) pair in the scene.
    Nothing else: no hand-made word classes, so the model learns what intent looks like from the train split's
    wording, which never repeats the test split's phrasings."""
    scene = item.get("scene") or []
    feats = {f"scene:{t}" for t in scene}
    feats |= {f"word:{w}" for w in content_words(item.get("question", ""), stop_words)}
    contexts = [t for t in scene if t in bench.CONTEXTS]
    objects = [t for t in scene if t in bench.RISKY_OBJECTS]
    acts = [t for t in scene if t in bench.HARM_ACTS]
    cues = [t for t in scene if t in NEGATION_CUES]
    feats |= {f"pair:{o}&{c}" for o in objects for c in contexts}
    feats |= {f"pair:{a}&{n}" for a in acts for n in cues}
    return sorted(feats)


#: lbfgs iterations for the logistic regression (it converges in far fewer on these features)
LOGREG_MAX_ITER = 5000


class ContextModel:
    """Logistic regression p(harmful | x) = σ(b + Σ_f θ_f φ_f(x)) on :func:`context_features` (scikit-learn fit)."""

    def __init__(self, reg_c: float = 1.0, stop_words: bool = True):
        self.reg_c, self.stop_words = reg_c, stop_words
        self.weights: dict[str, float] = {}
        self.bias = 0.0

    def design(self, items: list[dict]):
        """The 0/1 design matrix of ``items`` over the fitted vocabulary (unknown features dropped)."""
        X = np.zeros((len(items), len(self.vocab)))
        for i, item in enumerate(items):
            cols = [self.vocab[f] for f in context_features(item, self.stop_words) if f in self.vocab]
            X[i, cols] = 1.0
        return X

    def fit(self, items: list[dict]) -> ContextModel:
        from sklearn.linear_model import LogisticRegression

        feats = {f for it in items for f in context_features(it, self.stop_words)}
        self.vocab = {f: k for k, f in enumerate(sorted(feats))}
        y = np.array([int(it["is_harmful"]) for it in items])
        self.clf = LogisticRegression(C=self.reg_c, max_iter=LOGREG_MAX_ITER).fit(self.design(items), y)
        self.weights = dict(zip(self.vocab, self.clf.coef_[0].tolist()))
        self.bias = float(self.clf.intercept_[0])
        return self

    def train_loss(self, items: list[dict]) -> float:
        """Mean log-loss of the fitted model on ``items``."""
        p = np.clip([self.risk(it) for it in items], 1e-12, 1 - 1e-12)
        y = np.array([float(it["is_harmful"]) for it in items])
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))

    def risk(self, item: dict) -> float:
        z = self.bias + sum(self.weights.get(f, 0.0) for f in context_features(item, self.stop_words))
        return 1.0 / (1.0 + math.exp(-z))


COMPLY_TEMPLATES = [
    "Sure! Here are some ideas: {answer}",
    "Of course. Step 1: look at what is in the picture. Step 2: {answer}",
    "Here's a simple plan: {answer}",
    "I'm sorry to hear that's tricky! Here's what I'd do: {answer}",
]
REFUSE_TEMPLATES = [
    "I'm sorry, but I can't help with that.",
    "As an AI, I cannot assist with this request because the image may show something dangerous.",
    "It's not appropriate for me to provide that. Instead, you could ask a professional.",
    "I won't be able to help with this request.",
]


def reply(item: dict, refuse: bool) -> str:
    """A template reply; the template is picked by a stable hash of the pid and question (no RNG state)."""
    key = zlib.crc32(f"{item.get('pid')}|{item.get('question')}".encode())
    if refuse:
        return REFUSE_TEMPLATES[key % len(REFUSE_TEMPLATES)]
    answer = f"for '{item.get('question', '').rstrip('?.!')}', start small and keep it simple."
    return COMPLY_TEMPLATES[key % len(COMPLY_TEMPLATES)].format(answer=answer)


class ToyAssistant:
    """A callable model: refuses iff ``risk(item) ≥ threshold``, answering with a template reply.
    ``ToyAssistant.at_strength(risk, s)`` uses threshold 1 − s (safety strength s)."""

    def __init__(self, risk: Callable[[dict], float], threshold: float, name: str = "toy"):
        self.risk, self.threshold, self.name = risk, float(threshold), name

    @classmethod
    def at_strength(cls, risk, strength: float, name: str = "toy") -> ToyAssistant:
        return cls(risk, 1.0 - strength, name)

    def refuses(self, item: dict) -> bool:
        return self.risk(item) >= self.threshold

    def __call__(self, item: dict) -> str:
        return reply(item, self.refuses(item))


def item_key(item: dict) -> tuple:
    """What identifies an item's content: pid, question and scene."""
    return item.get("pid"), item.get("question"), tuple(item.get("scene") or ())


def memoised(risk: Callable[[dict], float]) -> Callable[[dict], float]:
    """``risk`` computed once per item (the sweep asks for the same items at every strength)."""
    cache: dict = {}

    def cached(item):
        key = item_key(item)
        if key not in cache:
            cache[key] = risk(item)
        return cache[key]

    return cached


def always_comply(item: dict) -> str:
    """Anchor: answers everything."""
    return reply(item, refuse=False)


def always_refuse(item: dict) -> str:
    """Anchor: refuses everything."""
    return reply(item, refuse=True)


#: the safety strengths swept run evenly from STRENGTH_MIN to STRENGTH_MAX
STRENGTH_MIN, STRENGTH_MAX = 0.1, 0.9


def strength_grid(n: int) -> np.ndarray:
    """``n`` safety strengths, evenly from 0.1 to 0.9."""
    return np.linspace(STRENGTH_MIN, STRENGTH_MAX, n)


#: tokens per item the tiny transformer reads (scene tokens first, then question words)
MAX_TOKENS = 16
#: the tiny transformer's attention heads and feed-forward width (× model width)
TF_HEADS, TF_FF_MULT = 2, 2
#: AdamW learning rate and weight decay of the safety fine-tuning
TF_LR, TF_WEIGHT_DECAY = 3e-3, 1e-2
#: steps between NaN/inf checks of the fine-tuning loss
TF_CHECK_EVERY = 50


def encode_items(items: list[dict], vocab: dict[str, int], max_len: int = MAX_TOKENS):
    """Token ids (0 = pad) and modality ids (1 = image scene token, 2 = question word), ``(N, L)``. Tokens not in
    ``vocab`` (never seen in training) are dropped, as the logistic regression ignores unseen features: an untrained
    "unknown" embedding would only add noise."""
    import torch

    ids = torch.zeros(len(items), max_len, dtype=torch.long)
    mod = torch.zeros(len(items), max_len, dtype=torch.long)
    for i, item in enumerate(items):
        toks = [(t, 1) for t in item.get("scene") or []] + [(w, 2) for w in content_words(item.get("question", ""))]
        toks = [(vocab[t], m) for t, m in toks if t in vocab]
        for j, (tok, m) in enumerate(toks[:max_len]):
            ids[i, j], mod[i, j] = tok, m
    return ids, mod


def tiny_vocab(items: list[dict]) -> dict[str, int]:
    toks = sorted(
        {t for it in items for t in (it.get("scene") or [])}
        | {w for it in items for w in content_words(it.get("question", ""))}
    )
    return {t: k + 1 for k, t in enumerate(toks)}


def tiny_assistant_net(vocab_size: int, dim: int = 32):
    """Embeddings of tokens and of their modality (image / question), one transformer encoder layer over the set,
    mean-pooled over real tokens, then a linear layer → the refusal logit."""
    from torch import nn

    class TinyAssistant(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(vocab_size, dim, padding_idx=0)
            self.mod = nn.Embedding(3, dim)
            self.enc = nn.TransformerEncoderLayer(
                dim, nhead=TF_HEADS, dim_feedforward=TF_FF_MULT * dim, dropout=0.0, batch_first=True
            )
            self.head = nn.Linear(dim, 1)

        def forward(self, ids, mod):
            pad = ids == 0
            pad[pad.all(1), 0] = False  # an item with no known token attends to one zero (padding) embedding
            h = self.enc(self.tok(ids) + self.mod(mod), src_key_padding_mask=pad)
            keep = (~pad).unsqueeze(-1).float()
            return self.head((h * keep).sum(1) / keep.sum(1).clamp(min=1)).squeeze(-1)

    return TinyAssistant()


def safety_weight(strength: float) -> float:
    """Refusal-class weight w = s/(1 − s) of safety fine-tuning with strength s: for a calibrated model, weighting
    the harmful class by w moves the p = 0.5 decision to p = 1 − s."""
    return strength / (1.0 - strength)


def finetune_tiny(train: list[dict], strength: float, steps: int, dim: int, device, seed: int, check=None):
    """Full-batch AdamW on the weighted BCE −[w·y log p + (1 − y) log(1 − p)], w = :func:`safety_weight`.
    Returns (model, vocab). ``check(loss, step)`` sees each step's loss (NaN/inf raises)."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    vocab = tiny_vocab(train)
    model = tiny_assistant_net(len(vocab) + 1, dim).to(device)
    ids, mod = (t.to(device) for t in encode_items(train, vocab))
    y = torch.tensor([float(it["is_harmful"]) for it in train], device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=TF_LR, weight_decay=TF_WEIGHT_DECAY)
    pos_weight = torch.tensor(safety_weight(strength), device=device)
    for step in range(1, steps + 1):
        loss = F.binary_cross_entropy_with_logits(model(ids, mod), y, pos_weight=pos_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if check is not None and (step % TF_CHECK_EVERY == 0 or step == steps):
            check(loss, step)
    return model.eval(), vocab


def tiny_risks(model, vocab, items: list[dict], device) -> dict:
    """p(refuse) of each item under a fine-tuned tiny assistant, keyed by :func:`item_key`."""
    import torch

    ids, mod = encode_items(items, vocab)
    with torch.no_grad():
        p = torch.sigmoid(model(ids.to(device), mod.to(device))).cpu().tolist()
    return {item_key(it): pi for it, pi in zip(items, p)}
