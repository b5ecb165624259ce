"""The method registry: the one list that the notebooks' index, the README, the CLI and the app read.

All thirty methods are listed from the start; a method is *available* once its package
``labkit/methods/<slug>/`` exists. Nothing here imports torch or a method module until asked.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

FAMILIES = ("alignment", "adaptation", "rl", "federated-robustness", "retrieval-recsys-applied")
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class MethodInfo:
    id: int
    slug: str
    short: str
    title: str
    arxiv: str
    family: str

    @property
    def module_name(self) -> str:
        return f"labkit.methods.{self.slug}"

    @property
    def notebook(self) -> str:
        """Path of the paired notebook's source, relative to the repository root."""
        return f"notebooks/{self.id:02d}_{self.slug}.py"

    @property
    def arxiv_url(self) -> str:
        return f"https://arxiv.org/abs/{self.arxiv}"

    @property
    def available(self) -> bool:
        return importlib.util.find_spec(self.module_name) is not None

    def load(self):
        """The method's module (with ``PARAMS`` and ``run``); ``ValueError`` if not written yet."""
        if not self.available:
            raise ValueError(f"method {self.slug!r} (#{self.id} {self.short}) is listed but not available yet")
        return importlib.import_module(self.module_name)


_ROWS = [
    (
        1,
        "lol_prf",
        "LoL",
        "LoL: A Comparative Regularization Loss over Query Reformulation Losses for Pseudo-Relevance Feedback",
        "2204.11545",
        "retrieval-recsys-applied",
    ),
    (
        2,
        "a_lol",
        "A-LoL",
        "Improving Language Models with Advantage-based Offline Policy Gradients (Leftover Lunch RL)",
        "2305.14718",
        "alignment",
    ),
    (
        3,
        "o3_unlearning",
        "O3",
        "Practical Unlearning for Large Language Models (v2: On Large Language Model Continual Unlearning)",
        "2407.10223",
        "alignment",
    ),
    (
        4,
        "fedld",
        "FedLD",
        "Tackling Data Heterogeneity in Federated Learning via Loss Decomposition",
        "2408.12300",
        "federated-robustness",
    ),
    (
        5,
        "lamo",
        "LaMo",
        "Unleashing the Power of Pre-trained Language Models for Offline Reinforcement Learning",
        "2310.20587",
        "rl",
    ),
    (
        6,
        "ad_survival",
        "Ad survival",
        "Ad Creative Discontinuation Prediction with Multi-Modal Multi-Task Neural Survival Networks",
        "2204.11588",
        "retrieval-recsys-applied",
    ),
    (
        7,
        "ensloss",
        "EnsLoss",
        "EnsLoss: Stochastic Calibrated Loss Ensembles for Preventing Overfitting in Classification",
        "2409.00908",
        "federated-robustness",
    ),
    (
        8,
        "rpo",
        "RPO",
        "Provably Mitigating Overoptimization in RLHF: Your SFT Loss is Implicitly an Adversarial Regularizer",
        "2405.16436",
        "alignment",
    ),
    (
        9,
        "netllm",
        "NetLLM",
        "Large Language Model Adaptation for Networking (NetLLM: Adapting Large Language Models for Networking)",
        "2402.02338",
        "adaptation",
    ),
    (
        10,
        "frugal",
        "FRUGAL",
        "FRUGAL: Memory-Efficient Optimization by Reducing State Overhead for Scalable Training",
        "2411.07837",
        "adaptation",
    ),
    (11, "vagram", "VaGraM", "Value Gradient weighted Model-Based Reinforcement Learning", "2204.01464", "rl"),
    (
        12,
        "rffl",
        "RFFL",
        "A Reputation Mechanism Is All You Need: Collaborative Fairness and Adversarial Robustness in Federated Learning",
        "2011.10464",
        "federated-robustness",
    ),
    (13, "archer", "ArCHer", "Training Language Model Agents via Hierarchical Multi-Turn RL", "2402.19446", "rl"),
    (
        14,
        "daa_overoptimization",
        "DAA overoptimization",
        "Scaling Laws for Reward Model Overoptimization in Direct Alignment Algorithms",
        "2406.02900",
        "alignment",
    ),
    (
        15,
        "rm_ensembles",
        "RM ensembles",
        "Reward Model Ensembles Help Mitigate Overoptimization",
        "2310.02743",
        "alignment",
    ),
    (
        16,
        "recsys_extraction",
        "Few-shot recsys extraction",
        "Few-shot Model Extraction Attacks against Sequential Recommender Systems",
        "2411.11677",
        "retrieval-recsys-applied",
    ),
    (
        17,
        "tempnet",
        "TempNet",
        "To Cool or not to Cool? Temperature Network Meets Large Foundation Models via DRO",
        "2404.04575",
        "adaptation",
    ),
    (
        18,
        "lol_decoding",
        "LOL",
        "Lower Layer Matters: Alleviating Hallucination via Multi-Layer Fusion Contrastive Decoding with Truthfulness Refocused",
        "2408.08769",
        "alignment",
    ),
    (19, "superhf", "SuperHF", "Supervised Iterative Learning from Human Feedback", "2310.16763", "alignment"),
    (20, "ear", "EAR", "Efficient Model Adaptation for Continual Learning at the Edge", "2308.02084", "adaptation"),
    (21, "ailboost", "AILBoost", "Adversarial Imitation Learning via Boosting", "2404.08513", "rl"),
    (
        22,
        "llm_adapters",
        "LLM-Adapters",
        "LLM-Adapters: An Adapter Family for Parameter-Efficient Fine-Tuning of Large Language Models",
        "2304.01933",
        "adaptation",
    ),
    (
        23,
        "inpo",
        "INPO",
        "Iterative Nash Policy Optimization: Aligning LLMs with General Preferences via No-Regret Learning",
        "2407.00617",
        "alignment",
    ),
    (
        24,
        "regret_loss",
        "Regret-loss",
        "Do LLM Agents Have Regret? A Case Study in Online Learning and Games",
        "2403.16843",
        "rl",
    ),
    (
        25,
        "bang",
        "BANG",
        "Spurious Feature Diversification Improves Out-of-distribution Generalization",
        "2309.17230",
        "federated-robustness",
    ),
    (
        26,
        "mossbench",
        "MOSSBench",
        "MOSSBench: Is Your Multimodal Language Model Oversensitive to Safe Queries?",
        "2406.17806",
        "alignment",
    ),
    (
        27,
        "tlob",
        "TLOB",
        "TLOB: A Novel Transformer Model with Dual Attention for Stock Price Trend Prediction with Limit Order Book Data",
        "2502.15757",
        "retrieval-recsys-applied",
    ),
    (28, "allora", "ALLoRA", "ALLoRA: Adaptive Learning Rate Mitigates LoRA Fatal Flaws", "2410.09692", "adaptation"),
    (
        29,
        "dual_rl",
        "Dual RL",
        "Dual RL: Unification and New Methods for Reinforcement and Imitation Learning",
        "2302.08560",
        "rl",
    ),
    (
        30,
        "ssl_recsys",
        "SSL-RecSys",
        "Self-supervised Learning for Large-scale Item Recommendations",
        "2007.12865",
        "retrieval-recsys-applied",
    ),
]

METHODS: tuple[MethodInfo, ...] = tuple(MethodInfo(*row) for row in _ROWS)


def get_method(key: str | int) -> MethodInfo:
    """Look a method up by slug, short name or id; ``ValueError`` lists the slugs otherwise."""
    for m in METHODS:
        if key == m.id or str(key).lower() in (m.slug, m.short.lower(), f"{m.id:02d}", str(m.id)):
            return m
    raise ValueError(f"unknown method {key!r}: choose a slug from {[m.slug for m in METHODS]}")


def available_methods() -> list[MethodInfo]:
    return [m for m in METHODS if m.available]


def registry_frame():
    """The registry as a DataFrame (id, slug, short, title, arxiv, family, available, notebook)."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "id": m.id,
                "slug": m.slug,
                "short": m.short,
                "title": m.title,
                "arxiv": m.arxiv,
                "family": m.family,
                "available": m.available,
                "notebook": m.notebook,
            }
            for m in METHODS
        ]
    )


def markdown_table() -> str:
    """The README's method table, generated from the registry."""
    lines = ["| # | method | paper | family | status |", "| --- | --- | --- | --- | --- |"]
    for m in METHODS:
        name = f"[{m.short}]({m.notebook.replace('.py', '.ipynb')})" if m.available else m.short
        status = "available" if m.available else "not yet available"
        lines.append(f"| {m.id:02d} | {name} | [{m.title}]({m.arxiv_url}) | {m.family} | {status} |")
    return "\n".join(lines)


TABLE_START, TABLE_END = "<!-- methods:start -->", "<!-- methods:end -->"


def readme_with_table(text: str) -> str:
    """``text`` (the README) with the block between the method-table markers regenerated."""
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    return f"{head}{TABLE_START}\n{markdown_table()}\n{TABLE_END}{tail}"
