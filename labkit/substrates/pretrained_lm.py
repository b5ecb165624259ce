"""A small "pretrained" causal LM that the kit trains itself, caches on disk, and ships, plus bring-your-own-model.

The adaptation methods (LLM-Adapters, ALLoRA, FRUGAL, O3) start from a model that already knows something. Here it
is :class:`labkit.models.tiny_lm.TinyLM` pretrained on the arithmetic language of :mod:`labkit.data.arithmetic`:

    corpus   "a+b=c;" for every pair (a, b) ∈ [0, 99]² except ``held_out`` pairs kept for evaluation
    loss     −(1/|y|) Σ_t log π(y_t | x, y_<t) on the ANSWER tokens y = "c;" only (the prompt "a+b=" is not scored)
    steps    AdamW, constant lr then a linear decay to 0 over the last ``decay_frac`` of the steps, grad-norm clip

At the quick size (2 layers, d_model 64, 600 steps of 128) it reaches 0.939 exact match on the 1,000 held-out
pairs (the shipped weights; 0.90–0.96 over four seeds in a prototype of this loop).

Where the weights come from, in order (:func:`pretrained_lm`):

1. shipped in the package, ``labkit/data/weights/<name>.safetensors`` with a JSON sidecar (config, corpus hash,
   sha256 of the weights file, the held-out exact match), used when the sidecar's key equals the config's;
2. the cache, ``cache_dir`` or ``$LABKIT_CACHE`` or ``~/.cache/labkit``, under ``pretrained_lm/`` and keyed by a
   hash of the config and of the corpus text;
3. otherwise pretrained now (a progress bar; 1 CPU thread, deterministic given the config) and stored in the cache.

Files are safetensors (never pickle). A damaged file (sha256 mismatch, unreadable, missing or misshapen tensors,
non-finite values) is reported with a warning and rebuilt. Writers hold an exclusive ``fcntl.flock`` on
``<key>.lock`` and write a temporary file that ``os.replace`` swaps in, so two notebooks starting at once never
write half a file: the second waits for the first and loads its result.

Rebuild the shipped weights with one command (deterministic on one CPU thread)::

    python -m labkit.substrates.pretrained_lm --rebuild-shipped

``python -m labkit.substrates.pretrained_lm --verify`` loads them, checks the hash and re-measures the exact match.

Bring your own model: :func:`load_hf_causal_lm` wraps a local Hugging Face causal LM so it has TinyLM's interface
(``forward(tokens) -> logits (B, T, V)``, ``hidden``, ``max_len``, ``vocab_size``, ``d_model``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from labkit.data import arithmetic as ar
from labkit.models.tiny_lm import TinyLM, nll_loss

#: bump when the training loop or the file layout changes: every cached model is then rebuilt
FORMAT_VERSION = 1
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "data" / "weights"
CORPORA = {"addition": "a+b=c; for (a, b) in [0, high]², minus held-out pairs"}


class DamagedWeights(ValueError):
    """A weights file or its sidecar cannot be trusted (the message says why)."""


@dataclass(frozen=True)
class PretrainConfig:
    """Everything that decides the pretrained weights (``name`` only names the files and is not hashed)."""

    name: str = "addition-quick"
    # corpus: "addition" = every "a+b=c;" with a, b in [0, high], minus `held_out` pairs drawn with `corpus_seed`
    corpus: str = "addition"
    high: int = 99
    held_out: int = 1000
    corpus_seed: int = 0
    # model (labkit.models.tiny_lm.TinyLM)
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    max_len: int = 12
    # training: AdamW on the answer tokens, constant lr then linear decay over the last decay_frac of the steps
    steps: int = 600
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.0
    decay_frac: float = 0.2
    clip: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.corpus not in CORPORA:
            raise ValueError(f"unknown corpus {self.corpus!r}: choose one of {sorted(CORPORA)}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if not 0 < self.held_out < (self.high + 1) ** 2:
            raise ValueError(f"held_out={self.held_out} must leave pairs to train on in [0, {self.high}]²")
        prompt_len, answer_len = ar.operator_widths("+", ar.RULES["+"], self.high)
        if self.max_len < prompt_len + answer_len:
            raise ValueError(f"max_len={self.max_len} < {prompt_len + answer_len}, the longest example")
        if self.steps < 1 or self.batch_size < 1 or not self.lr > 0 or not 0 <= self.decay_frac <= 1:
            raise ValueError("steps and batch_size must be ≥ 1, lr > 0 and decay_frac in [0, 1]")

    def describe(self) -> str:
        """One line for people: the corpus and the model."""
        n_train = (self.high + 1) ** 2 - self.held_out
        return (
            f"TinyLM {self.n_layers}×d{self.d_model} pretrained {self.steps} steps × {self.batch_size} on "
            f"{n_train} strings a+b=c; (a, b ∈ [0, {self.high}], {self.held_out} pairs held out)"
        )


QUICK_CONFIG = PretrainConfig()
STANDARD_CONFIG = PretrainConfig(name="addition-standard", d_model=128, n_layers=4, steps=1000, lr=2e-3)


# --------------------------------------------------------------------------------------------- data and hashes


def pretraining_data(config: PretrainConfig = QUICK_CONFIG) -> tuple[ar.Task, ar.Task]:
    """(corpus, held_out): every pair of [0, high]² as an addition example, shuffled with ``corpus_seed``; the first
    ``held_out`` pairs are kept out of pretraining."""
    n = (config.high + 1) ** 2
    order = torch.randperm(n, generator=torch.Generator().manual_seed(config.corpus_seed))
    a, b = (order // (config.high + 1)).tolist(), (order % (config.high + 1)).tolist()
    task = ar.task_from_pairs(a, b, "+", high=config.high)
    return task[config.held_out :], task[: config.held_out]


@functools.lru_cache(maxsize=32)
def corpus_sha256(config: PretrainConfig = QUICK_CONFIG) -> str:
    """sha256 of the pretraining corpus as one text ("12+30=42;7+5=12;...", in training order)."""
    return hashlib.sha256("".join(pretraining_data(config)[0].texts).encode()).hexdigest()


@functools.lru_cache(maxsize=32)
def cache_key(config: PretrainConfig = QUICK_CONFIG) -> str:
    """sha256 of (format version, every config field but ``name``, the corpus hash): what the weights depend on."""
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k != "name"}
    blob = json.dumps({"format": FORMAT_VERSION, "config": fields, "corpus": corpus_sha256(config)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def new_model(config: PretrainConfig = QUICK_CONFIG) -> TinyLM:
    """An untrained TinyLM of the config's shape (the tokenizer's 14 symbols)."""
    return TinyLM(ar.TOKENIZER.vocab_size, config.max_len, config.d_model, config.n_layers, config.n_heads)


# --------------------------------------------------------------------------------------------- pretraining


@dataclass
class PretrainReport:
    """What pretraining measured: the loss per step, the wall time, the exact match on held-out pairs."""

    losses: list[float]
    seconds: float
    held_out_exact_match: float


def lr_factor(step: int, config: PretrainConfig) -> float:
    """1 for the first (1 − decay_frac)·steps steps, then linear to 0: lr_t = lr · min(1, (steps − t) / decay)."""
    decay = max(1, round(config.steps * config.decay_frac))
    return min(1.0, (config.steps - step) / decay)


def pretrain(config: PretrainConfig = QUICK_CONFIG, *, progress: bool = True) -> tuple[TinyLM, PretrainReport]:
    """Pretrain a TinyLM on the config's corpus: deterministic given the config (CPU, 1 thread, own RNG streams;
    the caller's global RNG is left as it was). Returns the model (eval mode) and a :class:`PretrainReport`."""
    from labkit.core import check_finite
    from labkit.core import progress as bar

    corpus, held_out = pretraining_data(config)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = new_model(config)
        batches = torch.Generator().manual_seed(config.seed)
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        model.train()
        losses, order, pos = [], torch.randperm(len(corpus), generator=batches), 0
        with bar(total=config.steps, desc=f"pretraining the tiny LM {config.name} (once, then cached)",
                 enabled=progress) as pbar:  # fmt: skip
            for step in range(config.steps):
                if pos + config.batch_size > len(corpus):
                    order, pos = torch.randperm(len(corpus), generator=batches), 0
                idx = order[pos : pos + config.batch_size]
                pos += config.batch_size
                loss = nll_loss(model, corpus.prompts[idx], corpus.answers[idx], corpus.mask[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if config.clip:
                    nn.utils.clip_grad_norm_(model.parameters(), config.clip)
                for group in opt.param_groups:
                    group["lr"] = config.lr * lr_factor(step, config)
                opt.step()
                losses.append(check_finite(loss, step + 1, "pretraining"))
                pbar.update(1)
                if step % 50 == 0:
                    pbar.set_postfix(loss=f"{losses[-1]:.3f}")
        model.eval()
        seconds = time.perf_counter() - start
        match = ar.exact_match(model, held_out.prompts, held_out.answers, held_out.mask)
    finally:
        torch.set_num_threads(threads)
    return model, PretrainReport(losses, seconds, match)


# --------------------------------------------------------------------------------------------- files


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, flush it to disk, then ``os.replace`` it over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp made it private (0600); the cache may be shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_weights(model: TinyLM, path: Path, config: PretrainConfig, held_out_exact_match: float) -> dict:
    """Write ``path`` (safetensors) and ``path.with_suffix('.json')`` (the sidecar), each atomically. The sidecar
    holds no time stamp, so a rebuild that reproduces the weights reproduces both files byte for byte."""
    from safetensors.torch import save

    key = cache_key(config)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    data = save(tensors, metadata={"labkit_key": key})  # ONE entry: safetensors writes a map's keys in any order
    sidecar = {
        "format": FORMAT_VERSION,
        "name": config.name,
        "key": key,
        "config": dataclasses.asdict(config),
        "corpus_sha256": corpus_sha256(config),
        "weights_file": path.name,
        "weights_sha256": _sha256(data),
        "weights_bytes": len(data),
        "held_out_exact_match": round(held_out_exact_match, 4),
        "torch_version": torch.__version__.split("+")[0],
        "rebuild": "python -m labkit.substrates.pretrained_lm --rebuild-shipped",
    }
    _write_atomic(path, data)
    _write_atomic(path.with_suffix(".json"), (json.dumps(sidecar, indent=1, sort_keys=True) + "\n").encode())
    return sidecar


def read_sidecar(path: Path) -> dict:
    """The JSON sidecar of a weights file (``DamagedWeights`` if it is missing or unreadable)."""
    try:
        return json.loads(path.with_suffix(".json").read_text())
    except (OSError, ValueError) as err:
        raise DamagedWeights(f"its sidecar {path.with_suffix('.json').name} is missing or unreadable ({err})") from None


def load_weights(path: Path, config: PretrainConfig) -> TinyLM:
    """A TinyLM with the weights of ``path``, after checking the sidecar's key and sha256, the tensor names and
    shapes and that every value is finite. Raises ``DamagedWeights`` saying what is wrong."""
    from safetensors.torch import load

    sidecar = read_sidecar(path)
    if sidecar.get("key") != cache_key(config):
        raise DamagedWeights("its sidecar was written for another config or corpus")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DamagedWeights(f"it cannot be read ({err})") from None
    if _sha256(data) != sidecar.get("weights_sha256"):
        raise DamagedWeights(f"its sha256 does not match the sidecar ({len(data)} bytes)")
    try:
        tensors = load(data)
    except Exception as err:  # safetensors raises its own error types on a bad header or short data
        raise DamagedWeights(f"it is not a readable safetensors file ({err})") from None
    model = new_model(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    if found != expected:
        wrong = sorted(set(expected.items()) ^ set(found.items()))[:4]
        raise DamagedWeights(f"its tensors do not fit the model (first differences: {wrong})")
    if not all(torch.isfinite(t).all() for t in tensors.values()):
        raise DamagedWeights("it holds NaN or infinite values")
    model.load_state_dict(tensors, strict=True)
    return model.eval()


def default_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$LABKIT_CACHE``, else ``~/.cache/labkit``; the models live in its ``pretrained_lm/``."""
    root = cache_dir or os.environ.get("LABKIT_CACHE") or Path.home() / ".cache" / "labkit"
    return Path(root).expanduser() / "pretrained_lm"


def cache_path(config: PretrainConfig = QUICK_CONFIG, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the config's weights live in the cache: ``<cache>/pretrained_lm/tinylm-<key[:16]>.safetensors``."""
    return default_cache_dir(cache_dir) / f"tinylm-{cache_key(config)[:16]}.safetensors"


def shipped_path(config: PretrainConfig = QUICK_CONFIG) -> Path | None:
    """The shipped weights file whose sidecar carries the config's key, or None."""
    key = cache_key(config)
    for sidecar in sorted(WEIGHTS_DIR.glob("*.json")):
        with contextlib.suppress(OSError, ValueError):
            if json.loads(sidecar.read_text()).get("key") == key:
                return sidecar.with_suffix(".safetensors")
    return None


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    """Hold an exclusive ``fcntl.flock`` on ``lock_path`` (blocks while another process holds it). Where fcntl does
    not exist (Windows) there is no lock; ``os.replace`` still keeps every file whole."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def pretrained_lm(
    config: PretrainConfig = QUICK_CONFIG, *, progress: bool = True, cache_dir: str | os.PathLike | None = None
) -> TinyLM:
    """A TinyLM with pretrained weights, on the CPU, in eval mode (parameters still trainable: freeze it with
    ``labkit.models.tiny_lm.frozen_copy`` or ``requires_grad_(False)``). Each call returns a new model.

    Looks in the package's shipped weights, then in the cache, and otherwise pretrains (a progress bar when
    ``progress``) and stores the result in the cache. A damaged file is warned about and rebuilt."""
    shipped = shipped_path(config)
    if shipped is not None:
        try:
            return load_weights(shipped, config)
        except DamagedWeights as err:
            warnings.warn(f"the shipped weights {shipped} are damaged: {err}; using the cache instead", stacklevel=2)
    path = cache_path(config, cache_dir)
    with contextlib.suppress(DamagedWeights):  # fast path, no lock: os.replace never shows half a file
        return load_weights(path, config)
    with contextlib.ExitStack() as stack:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            stack.enter_context(_exclusive(path.with_suffix(".lock")))
        except OSError as err:
            warnings.warn(
                f"cannot use the cache folder {path.parent} ({err}); pretraining without storing", stacklevel=2
            )
            return pretrain(config, progress=progress)[0]
        if path.exists() or path.with_suffix(".json").exists():
            try:  # another process may have written it while we waited for the lock
                return load_weights(path, config)
            except DamagedWeights as err:
                warnings.warn(f"the cached weights {path} are damaged: {err}; pretraining again", stacklevel=2)
        model, report = pretrain(config, progress=progress)
        try:
            save_weights(model, path, config, report.held_out_exact_match)
        except OSError as err:
            warnings.warn(f"cannot store the pretrained weights in {path.parent} ({err})", stacklevel=2)
    return model


# --------------------------------------------------------------------------------------------- bring your own model


class HFCausalLM(nn.Module):
    """A Hugging Face causal LM behind TinyLM's interface: ``forward(tokens) -> logits (B, T, V)``,
    ``hidden(tokens) -> (B, T, d)`` (the last hidden states, after the final norm), ``max_len``, ``vocab_size``,
    ``d_model``. The wrapped model is ``.model`` (put adapters on its layers there).

    With ``token_ids`` (the model's id for each kit token, e.g. ``[tok.convert_tokens_to_ids(c) for c in
    "0123456789+-=;"]``) kit tokens are mapped to the model's ids on the way in and the logits are restricted to
    those ids on the way out, so the kit's tasks run on a model with its own, larger vocabulary."""

    def __init__(self, model: nn.Module, token_ids: Sequence[int] | None = None):
        super().__init__()
        self.model = model
        cfg = model.config
        self.max_len = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        self.d_model = cfg.hidden_size
        if token_ids is None:
            self.register_buffer("token_ids", None)
            self.vocab_size = cfg.vocab_size
        else:
            ids = torch.as_tensor(list(token_ids), dtype=torch.long)
            if ids.numel() != len(set(ids.tolist())) or ids.min() < 0 or ids.max() >= cfg.vocab_size:
                raise ValueError(f"token_ids must be distinct ids in [0, {cfg.vocab_size})")
            self.register_buffer("token_ids", ids)
            self.vocab_size = ids.numel()

    def _input_ids(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.max_len is not None and tokens.shape[1] > self.max_len:
            raise ValueError(f"sequence of length {tokens.shape[1]} is longer than max_len={self.max_len}")
        return tokens if self.token_ids is None else self.token_ids[tokens]

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=self._input_ids(tokens), output_hidden_states=True, use_cache=False)
        return out.hidden_states[-1]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = self.model(input_ids=self._input_ids(tokens), use_cache=False).logits
        return logits if self.token_ids is None else logits[..., self.token_ids]


def load_hf_causal_lm(path: str | os.PathLike, *, token_ids: Sequence[int] | None = None) -> HFCausalLM:
    """``AutoModelForCausalLM.from_pretrained(path)`` from a LOCAL folder (never the hub: ``local_files_only``),
    in float32 and eval mode, wrapped in :class:`HFCausalLM`. Needs the optional ``transformers`` package."""
    try:
        from transformers import AutoModelForCausalLM
    except ImportError as err:
        raise ImportError(
            "load_hf_causal_lm needs the optional package `transformers` (pip install transformers)"
        ) from err
    model = AutoModelForCausalLM.from_pretrained(os.fspath(path), local_files_only=True, dtype=torch.float32)
    return HFCausalLM(model.eval(), token_ids).eval()


# --------------------------------------------------------------------------------------------- command line


def rebuild_shipped(config: PretrainConfig = QUICK_CONFIG, *, progress: bool = True) -> dict:
    """Pretrain ``config`` and write ``labkit/data/weights/<name>.safetensors`` and its sidecar. Returns a summary
    (sha256, bytes, exact match, seconds, and whether the bytes changed)."""
    path = WEIGHTS_DIR / f"{config.name}.safetensors"
    before = path.read_bytes() if path.exists() else None
    model, report = pretrain(config, progress=progress)
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    sidecar = save_weights(model, path, config, report.held_out_exact_match)
    return {
        "path": str(path),
        "sha256": sidecar["weights_sha256"],
        "bytes": sidecar["weights_bytes"],
        "held_out_exact_match": report.held_out_exact_match,
        "pretrain_seconds": round(report.seconds, 1),
        "same_bytes_as_before": None if before is None else before == path.read_bytes(),
    }


def verify_shipped(config: PretrainConfig = QUICK_CONFIG) -> dict:
    """Load the shipped weights (checking their hash) and re-measure the held-out exact match."""
    path = shipped_path(config)
    if path is None:
        raise FileNotFoundError(f"no shipped weights for {config.name} in {WEIGHTS_DIR}")
    start = time.perf_counter()
    model = load_weights(path, config)
    seconds = time.perf_counter() - start
    held_out = pretraining_data(config)[1]
    match = ar.exact_match(model, held_out.prompts, held_out.answers, held_out.mask)
    recorded = read_sidecar(path)["held_out_exact_match"]
    return {"path": str(path), "load_seconds": round(seconds, 4), "held_out_exact_match": match, "recorded": recorded}


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m labkit.substrates.pretrained_lm", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--rebuild-shipped", action="store_true", help="pretrain the quick config into labkit/data/weights"
    )
    parser.add_argument("--verify", action="store_true", help="load the shipped weights and re-measure them")
    parser.add_argument("--warm-cache", choices=["quick", "standard"], help="make sure a config is in the cache")
    args = parser.parse_args(argv)
    if args.rebuild_shipped:
        print(json.dumps(rebuild_shipped(QUICK_CONFIG), indent=1))
    if args.verify:
        print(json.dumps(verify_shipped(QUICK_CONFIG), indent=1))
    if args.warm_cache:
        config = QUICK_CONFIG if args.warm_cache == "quick" else STANDARD_CONFIG
        start = time.perf_counter()
        pretrained_lm(config)
        print(f"{config.name}: ready in {time.perf_counter() - start:.1f} s ({cache_path(config)})")
    if not (args.rebuild_shipped or args.verify or args.warm_cache):
        parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
