"""The cached tiny pretrained LM (issue 10): the arithmetic language and tasks, exact match, the shipped weights,
the disk cache (fresh, damaged, two processes at once) and the Hugging Face bring-your-own-model wrapper."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from labkit.core import torch_threads
from labkit.data import arithmetic as ar
from labkit.models import tiny_lm as lm
from labkit.substrates import pretrained_lm as plm

ROOT = Path(__file__).resolve().parents[1]
# a model small enough to pretrain in a fraction of a second: for the cache tests, not for its accuracy
TINY = plm.PretrainConfig(name="test-tiny", d_model=16, n_layers=1, n_heads=2, steps=15, batch_size=32)


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def same_weights(m1: nn.Module, m2: nn.Module) -> bool:
    s1, s2 = m1.state_dict(), m2.state_dict()
    return s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)


# --- the language and the tasks ---------------------------------------------------------------------------


def test_tokenizer_round_trip_and_refusals():
    tok = ar.CharTokenizer()
    assert tok.vocab_size == 14 and tok.eos_id == tok.pad_id == 13
    text = "0123456789+-=;" + "98+7=105;"
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode("12+30=43;") == [1, 2, 10, 3, 0, 12, 4, 3, 13]
    with pytest.raises(ValueError, match="not in the alphabet"):
        tok.encode("1*2")
    assert tok.decode_answer(tok.encode("43;;7")) == "43;"
    with pytest.raises(ValueError, match="does not fit"):
        tok.pad_left(["1234567"], 6)


def test_new_operator_rule_by_hand():
    # the card's target task: "a-b=c;" means c = a + b + 1
    task = ar.task_from_pairs([12, 3], [30, 4], "-")
    assert task.texts == ["12-30=43;", "3-4=8;"]
    tok = ar.TOKENIZER
    assert [tok.decode(p) for p in task.prompts] == ["12-30=", ";;3-4="]  # left-padded with ';'
    assert [tok.decode(a) for a in task.answers] == ["43;;", "8;;;"]  # right-padded with ';'
    assert task.mask.tolist() == [[True, True, True, False], [True, True, False, False]]
    assert task.mask.tolist() == lm.response_mask(task.answers, tok.eos_id).tolist()
    # widths fit the whole grid: 99-99 = 199 → "199;" (4), prompt "99-99=" (6), 10 ≤ the context of 12
    assert task.prompts.shape == (2, 6) and task.answers.shape == (2, 4)


def test_operator_task_draws_distinct_pairs_that_follow_the_rule():
    task = ar.operator_task(300, torch.Generator().manual_seed(1))
    pairs = set()
    for text in task.texts:
        left, c = text.rstrip(";").split("=")
        a, b = map(int, left.split("-"))
        assert int(c) == a + b + 1 and 0 <= a <= 99 and 0 <= b <= 99
        pairs.add((a, b))
    assert len(pairs) == 300
    train, test = task.split(200)
    assert len(train) == 200 and len(test) == 100 and not set(train.texts) & set(test.texts)
    assert torch.equal(test.prompts, task.prompts[200:])
    same = ar.operator_task(300, torch.Generator().manual_seed(1))
    assert same.texts == task.texts
    # another templated task with its own rule; an unknown operator needs one
    times = ar.task_from_pairs([7], [8], "+", rule=lambda a, b: a * b)
    assert times.texts == ["7+8=56;"] and times.answers.shape == (1, 5)  # 99·99 = 9801 → "9801;"
    with pytest.raises(ValueError, match="no default rule"):
        ar.operator_task(5, torch.Generator(), op="=")
    with pytest.raises(ValueError, match="distinct pairs"):
        ar.operator_task(10_001, torch.Generator())


def test_addition_corpus():
    corpus = ar.addition_corpus(50, torch.Generator().manual_seed(0))
    assert len(corpus) == 50
    for text in corpus:
        left, c = text.rstrip(";").split("=")
        a, b = map(int, left.split("+"))
        assert text.endswith(";") and int(c) == a + b and 0 <= a <= 99 and 0 <= b <= 99


class Scripted(nn.Module):
    """Predicts ``script[t]`` at every position t ≥ P − 1, whatever the tokens (a hand-made model)."""

    def __init__(self, prompt_len: int, script: str):
        super().__init__()
        self.P, self.ids = prompt_len, ar.TOKENIZER.encode(script)
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, tokens):
        B, T = tokens.shape
        logits = torch.zeros(B, T, 14)
        for t in range(self.P - 1, T):
            logits[:, t, self.ids[t - self.P + 1]] = 1.0
        return logits


def test_exact_match_on_a_hand_made_model():
    task = ar.task_from_pairs([3, 4, 40], [4, 4, 40], "+")  # answers "7;", "8;", "80;"
    # says "7;" then junk: decoding stops at ';' so the junk never counts → only row 0 is right
    assert ar.exact_match(Scripted(6, "7;55"), task.prompts, task.answers, task.mask) == pytest.approx(1 / 3)
    assert ar.greedy_answers(Scripted(6, "7;55"), task.prompts, 4)[0].tolist() == ar.TOKENIZER.encode("7;;;")
    # "80;5": row 2 right; "8" with no ';' after it is NOT "8;" → row 1 wrong
    assert ar.exact_match(Scripted(6, "80;5"), task.prompts, task.answers) == pytest.approx(1 / 3)
    assert ar.exact_match(Scripted(6, "8555"), task.prompts, task.answers) == 0.0
    # batches give the same answer as one pass
    assert ar.exact_match(Scripted(6, "7;55"), task.prompts, task.answers, batch_size=2) == pytest.approx(1 / 3)


# --- the shipped weights ----------------------------------------------------------------------------------


def test_shipped_weights_match_their_sidecar_and_load_without_training(tmp_path, monkeypatch):
    path = plm.shipped_path(plm.QUICK_CONFIG)
    assert path is not None and path.parent == plm.WEIGHTS_DIR and path.name == "addition-quick.safetensors"
    sidecar = json.loads(path.with_suffix(".json").read_text())
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == sidecar["weights_sha256"] and len(data) == sidecar["weights_bytes"]
    assert len(data) < 5_000_000
    assert sidecar["key"] == plm.cache_key(plm.QUICK_CONFIG) and sidecar["corpus_sha256"] == plm.corpus_sha256()
    assert data[8:9] == b"{"  # safetensors: an 8-byte header length, then a JSON header (never a pickle)

    monkeypatch.setattr(plm, "pretrain", lambda *a, **k: pytest.fail("the shipped weights must not be retrained"))
    model = plm.pretrained_lm(cache_dir=tmp_path)
    assert isinstance(model, lm.TinyLM) and not model.training and not any(tmp_path.iterdir())
    assert all(p.requires_grad for p in model.parameters())  # trainable: full fine-tuning starts from it
    # the measured exact match on the held-out pairs is what the sidecar recorded (CPU kernels may flip a rare tie)
    held_out = plm.pretraining_data()[1]
    match = ar.exact_match(model, held_out.prompts, held_out.answers, held_out.mask)
    assert match == pytest.approx(sidecar["held_out_exact_match"], abs=0.01) and match >= 0.85


def test_held_out_pairs_never_appear_in_the_corpus():
    corpus, held_out = plm.pretraining_data()
    assert len(corpus) == 9000 and len(held_out) == 1000 and not set(corpus.texts) & set(held_out.texts)
    assert corpus.texts[0].count("+") == 1 and held_out.prompts.shape[1] + held_out.answers.shape[1] <= 12


def test_config_is_validated_and_the_key_ignores_only_the_name():
    with pytest.raises(ValueError, match="divisible"):
        plm.PretrainConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="max_len"):
        plm.PretrainConfig(max_len=8)
    with pytest.raises(ValueError, match="unknown corpus"):
        plm.PretrainConfig(corpus="shakespeare")
    import dataclasses

    renamed = dataclasses.replace(plm.QUICK_CONFIG, name="other")
    assert plm.cache_key(renamed) == plm.cache_key(plm.QUICK_CONFIG)
    assert plm.cache_key(dataclasses.replace(plm.QUICK_CONFIG, steps=601)) != plm.cache_key(plm.QUICK_CONFIG)
    assert plm.cache_key(dataclasses.replace(plm.QUICK_CONFIG, corpus_seed=1)) != plm.cache_key(plm.QUICK_CONFIG)


# --- the cache --------------------------------------------------------------------------------------------


def counting_pretrain(monkeypatch):
    calls = []
    real = plm.pretrain

    def wrapped(config, **kwargs):
        calls.append(config)
        return real(config, **kwargs)

    monkeypatch.setattr(plm, "pretrain", wrapped)
    return calls


def test_a_fresh_cache_trains_once_then_loads(tmp_path, monkeypatch):
    calls = counting_pretrain(monkeypatch)
    first = plm.pretrained_lm(TINY, progress=False, cache_dir=tmp_path)
    path = plm.cache_path(TINY, tmp_path)
    assert len(calls) == 1 and path.exists() and path.with_suffix(".json").exists()
    assert path.parent == tmp_path / "pretrained_lm" and not list(path.parent.glob("*.tmp"))
    assert path.stat().st_mode & 0o777 == 0o644  # readable by the other users of a shared cache
    second = plm.pretrained_lm(TINY, progress=False, cache_dir=tmp_path)
    assert len(calls) == 1 and same_weights(first, second) and second is not first
    # $LABKIT_CACHE is the default cache folder
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path))
    assert same_weights(plm.pretrained_lm(TINY, progress=False), first) and len(calls) == 1


def test_pretraining_is_deterministic_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    m1, r1 = plm.pretrain(TINY, progress=False)
    after = torch.rand(3)
    m2, r2 = plm.pretrain(TINY, progress=False)
    assert same_weights(m1, m2) and r1.losses == r2.losses and torch.equal(after, expected)


def damage_truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def damage_flip(path):
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))


def damage_shapes(path):
    # a well-formed file with a valid hash, but the tensors of another model
    from safetensors.torch import save

    other = plm.new_model(plm.PretrainConfig(d_model=8, n_layers=1, n_heads=2))
    data = save({k: v.contiguous() for k, v in other.state_dict().items()})
    path.write_bytes(data)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    sidecar["weights_sha256"] = hashlib.sha256(data).hexdigest()
    path.with_suffix(".json").write_text(json.dumps(sidecar))


def damage_sidecar(path):
    path.with_suffix(".json").write_text('{"key": ')


@pytest.mark.parametrize(
    "damage, reason",
    [
        (damage_truncate, "sha256"),
        (damage_flip, "sha256"),
        (damage_shapes, "do not fit"),
        (damage_sidecar, "sidecar"),
    ],
)
def test_a_damaged_cache_file_is_warned_about_and_rebuilt(tmp_path, monkeypatch, damage, reason):
    calls = counting_pretrain(monkeypatch)
    good = plm.pretrained_lm(TINY, progress=False, cache_dir=tmp_path)
    path = plm.cache_path(TINY, tmp_path)
    damage(path)
    with pytest.raises(plm.DamagedWeights, match=reason):
        plm.load_weights(path, TINY)
    with pytest.warns(UserWarning, match=f"damaged: .*{reason}"):
        rebuilt = plm.pretrained_lm(TINY, progress=False, cache_dir=tmp_path)
    assert len(calls) == 2 and same_weights(rebuilt, good)  # pretraining is deterministic
    assert same_weights(plm.load_weights(path, TINY), good)  # and the file is good again


def test_damaged_shipped_weights_fall_back_to_the_cache(tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.setattr(plm, "WEIGHTS_DIR", weights)
    model, report = plm.pretrain(TINY, progress=False)
    plm.save_weights(model, weights / "test-tiny.safetensors", TINY, report.held_out_exact_match)
    assert plm.shipped_path(TINY) == weights / "test-tiny.safetensors"
    damage_flip(weights / "test-tiny.safetensors")
    with pytest.warns(UserWarning, match="shipped weights .* are damaged"):
        loaded = plm.pretrained_lm(TINY, progress=False, cache_dir=tmp_path / "cache")
    assert same_weights(loaded, model) and plm.cache_path(TINY, tmp_path / "cache").exists()


def test_an_unusable_cache_folder_warns_and_still_gives_the_model(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    with pytest.warns(UserWarning, match="cannot use the cache folder"):
        model = plm.pretrained_lm(TINY, progress=False, cache_dir=not_a_folder)
    assert same_weights(model, plm.pretrain(TINY, progress=False)[0])


WORKER = textwrap.dedent(
    """
    import hashlib, json, sys, time
    from pathlib import Path
    import torch
    from labkit.substrates import pretrained_lm as plm
    config = plm.PretrainConfig(name="race", d_model=16, n_layers=1, n_heads=2, steps=150, batch_size=32)
    plm.cache_key(config)  # the corpus hash, before the start line
    trained = []
    real = plm.pretrain
    plm.pretrain = lambda c, **k: trained.append(1) or real(c, **k)
    print("ready", flush=True)
    while not Path(sys.argv[2]).exists():  # both start together
        time.sleep(0.005)
    model = plm.pretrained_lm(config, progress=False, cache_dir=sys.argv[1])
    digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in model.state_dict().values())).hexdigest()
    print(json.dumps({"trained": len(trained), "digest": digest}))
    """
)


@pytest.mark.slow
def test_two_processes_starting_at_once_write_one_good_file(tmp_path):
    env = {**os.environ, "LABKIT_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    go = tmp_path / "go"
    cmd = [sys.executable, "-c", WORKER, str(tmp_path), str(go)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        assert [p.stdout.readline().strip() for p in procs] == ["ready", "ready"]
        go.touch()
        outs = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(p.returncode == 0 for p in procs)
    assert sorted(o["trained"] for o in outs) == [0, 1]  # one trained, the other waited and loaded
    assert outs[0]["digest"] == outs[1]["digest"]
    folder = tmp_path / "pretrained_lm"
    assert len(list(folder.glob("*.safetensors"))) == 1 and len(list(folder.glob("*.json"))) == 1
    assert not list(folder.glob(".*.tmp"))
    config = plm.PretrainConfig(name="race", d_model=16, n_layers=1, n_heads=2, steps=150, batch_size=32)
    plm.load_weights(plm.cache_path(config, tmp_path), config)  # the one file is whole and checks out


# --- bring your own model: a local Hugging Face causal LM ---------------------------------------------------


def tiny_hf(kind: str, vocab_size: int = 14):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if kind == "gpt2":
        config = transformers.GPT2Config(vocab_size=vocab_size, n_positions=12, n_embd=32, n_layer=2, n_head=2)
        return transformers.GPT2LMHeadModel(config).eval()
    config = transformers.LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=12,
    )
    return transformers.LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_a_local_hf_model_works_like_a_tiny_lm(tmp_path, monkeypatch, kind):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    original = tiny_hf(kind)
    original.save_pretrained(tmp_path)
    model = plm.load_hf_causal_lm(tmp_path)
    assert model.vocab_size == 14 and model.max_len == 12 and model.d_model == 32 and not model.training
    task = ar.operator_task(8, torch.Generator().manual_seed(0))
    tokens = torch.cat([task.prompts, task.answers], 1)
    logits = model(tokens)
    assert logits.shape == (8, 10, 14)
    with torch.no_grad():
        assert torch.allclose(logits, original(tokens).logits, atol=1e-6)  # the weights came back from disk
    assert model.hidden(tokens).shape == (8, 10, 32)
    # the kit's log-probs, decoding and exact match run on it; gradients reach its weights (adapters can train)
    assert 0.0 <= ar.exact_match(model, task.prompts, task.answers, task.mask) <= 1.0
    assert lm.greedy(model, task.prompts, 4).shape == (8, 4)
    lm.nll_loss(model, task.prompts, task.answers, task.mask).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="max_len"):
        model(torch.zeros(1, 13, dtype=torch.long))
    # the kit's adapters go onto the wrapped model's own layers (GPT-2's Conv1D c_attn, LLaMA's q/v projections)
    from labkit.models import adapters

    layers = adapters.inject_lora(model, r".*c_attn" if kind == "gpt2" else r".*\.(q_proj|v_proj)", r=2, alpha=4)
    assert len(layers) == (2 if kind == "gpt2" else 4)  # per block: c_attn, or q_proj and v_proj
    assert adapters.count_parameters(model) < adapters.count_parameters(model, False) / 5
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(5):
        loss = lm.nll_loss(model, task.prompts, task.answers, task.mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_the_kits_adapters_fit_the_pretrained_model():
    from labkit.models import adapters

    model = plm.pretrained_lm()
    layers = adapters.inject_lora(model, [r"blocks\.\d+\.attn\.(qkv|out)", r"blocks\.\d+\.mlp\.[02]"], r=4, alpha=8)
    assert len(layers) == 8  # 2 blocks × (qkv, out, MLP up, MLP down)
    held_out = plm.pretraining_data()[1][:200]
    # B = 0 at init: the adapted model still adds as well as the pretrained one
    assert ar.exact_match(model, held_out.prompts, held_out.answers) == ar.exact_match(
        plm.pretrained_lm(), held_out.prompts, held_out.answers
    )


def test_an_hf_model_with_its_own_vocabulary_maps_the_kit_tokens(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    original = tiny_hf("gpt2", vocab_size=40)
    original.save_pretrained(tmp_path)
    ids = [39 - 2 * i for i in range(14)]  # where the model keeps each of the kit's 14 symbols
    model = plm.load_hf_causal_lm(tmp_path, token_ids=ids)
    tokens = torch.tensor([[1, 2, 10, 3, 0, 12]])
    with torch.no_grad():
        expected = original(torch.tensor([[ids[t] for t in tokens[0].tolist()]])).logits[..., ids]
        assert model.vocab_size == 14 and torch.allclose(model(tokens), expected, atol=1e-6)
    with pytest.raises(ValueError, match="distinct ids"):
        plm.HFCausalLM(original, token_ids=[0, 0, 1])


def test_a_missing_transformers_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match="optional package `transformers`"):
        plm.load_hf_causal_lm(tmp_path)
