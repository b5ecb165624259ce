"""LLM-Adapters (22): placements as target sets, parameter counts by formula, the answer-only loss by hand, the loop
trains the modules only, the claims three ways, divergence, bad knobs, a Hugging Face model of your own, a quick run."""

import copy
import math
import re

import numpy as np
import pytest
import torch
from torch import nn

import labkit.core.params as params_module
from labkit.core import DivergenceError, Result, Verdict, torch_threads
from labkit.data import arithmetic as ar
from labkit.methods import llm_adapters as la
from labkit.models.adapters import LoRALinear, ParallelAdapter, SeriesAdapter, count_parameters
from labkit.models.tiny_lm import TinyLM, nll_loss


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: two threads on a 2-core machine are many times slower than one."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def base():
    return la.load_base(la.Knobs())


def tiny_lm(d=32, n_layers=3, seed=0):
    torch.manual_seed(seed)
    return TinyLM(vocab_size=14, max_len=12, d_model=d, n_layers=n_layers, n_heads=4)


def small_task(n_train=64, n_test=32, seed=0):
    task = ar.operator_task(n_train + n_test, torch.Generator().manual_seed(seed))
    return task.split(n_train)


SPECS = {s.arm.key: s for s in la.make_arms(la.Knobs(grid=True))}


# --- placements ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "family, placement, expected",
    [
        ("lora", "attention", ["attn.qkv", "attn.out"]),
        ("lora", "mlp", ["mlp.0", "mlp.2"]),
        ("lora", "both", ["attn.qkv", "attn.out", "mlp.0", "mlp.2"]),
        ("series", "mlp", ["mlp"]),
        ("parallel", "attention", ["attn"]),
        ("series", "both", ["attn", "mlp"]),
    ],
)
def test_placements_name_the_modules_of_every_block(family, placement, expected):
    model = tiny_lm(n_layers=2)
    names = [n for n, _ in model.named_modules()]
    patterns = la.placement_targets(la.SITES["tinylm"], family, placement)
    hit = sorted(n for n in names if any(re.fullmatch(t, n) for t in patterns))
    assert hit == sorted(f"blocks.{i}.{e}" for i in range(2) for e in expected)


def test_attach_wraps_the_right_modules_and_freezes_the_rest():
    model = tiny_lm(n_layers=2)
    la.attach(model, la.PEFTConfig("series", "mlp", 4))
    assert all(isinstance(b.mlp, SeriesAdapter) for b in model.blocks)
    assert not any(isinstance(m, (LoRALinear, ParallelAdapter)) for m in model.modules())
    model = tiny_lm(n_layers=2)
    la.attach(model, la.PEFTConfig("parallel", "attention", 4))
    assert all(isinstance(b.attn, ParallelAdapter) for b in model.blocks)
    model = tiny_lm(n_layers=2)
    la.attach(model, la.PEFTConfig("lora", "attention", 2, alpha=4))
    assert all(isinstance(b.attn.qkv, LoRALinear) and isinstance(b.attn.out, LoRALinear) for b in model.blocks)
    assert all(isinstance(b.mlp[0], nn.Linear) and not isinstance(b.mlp[0], LoRALinear) for b in model.blocks)
    trainable_names = {n.rsplit(".", 1)[-1] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable_names == {"lora_A", "lora_B"}
    with pytest.raises(ValueError, match="placement"):
        la.placement_targets(la.SITES["tinylm"], "lora", "embeddings")
    with pytest.raises(ValueError, match="family"):
        la.PEFTConfig("ia3", "mlp", 4)


@pytest.mark.parametrize("key", [k for k, s in SPECS.items() if s.trained and k != "prefix"])
def test_every_module_starts_as_the_identity(base, key):
    """zero_up bottlenecks and B = 0 LoRA: every arm but prefix computes exactly the frozen base at step 0."""
    test = small_task()[1]
    tokens = torch.cat([test.prompts[:4], test.answers[:4]], dim=1)
    model = la.build(base, SPECS[key])
    assert torch.allclose(model(tokens), base(tokens), atol=1e-6)


# --- parameter counts ----------------------------------------------------------------------------------------------

#: by hand, d = 64, 2 layers, d_ff = 256, qkv 64 → 192 (the quick base): series/parallel 2·d·r per sub-layer;
#: LoRA r·(d_in + d_out): qkv 4·256 = 1024, out 4·128 = 512, fc1 4·320 = 1280, fc2 4·320 = 1280; prefix 2·n_v·d
HAND_COUNTS = {
    "series_mlp": 2 * (2 * 64 * 16),
    "parallel_mlp": 2 * (2 * 64 * 16),
    "lora_both": 2 * (1024 + 512 + 1280 + 1280),
    "lora_attention": 2 * (1024 + 512),
    "prefix": 2 * (2 * 10 * 64),
    "series_attention": 4096,
    "series_both": 8192,
    "parallel_attention": 4096,
    "parallel_both": 8192,
    "lora_mlp": 2 * (1280 + 1280),
}


@pytest.mark.parametrize("key", sorted(HAND_COUNTS))
def test_trainable_parameters_by_formula_on_the_quick_base(base, key):
    model = la.build(base, SPECS[key])
    assert count_parameters(model) == HAND_COUNTS[key]
    assert la.formula_parameters(SPECS[key].peft, d=64, n_layers=2) == HAND_COUNTS[key]
    assert count_parameters(model, trainable_only=False) == 102_670 + HAND_COUNTS[key]


def test_full_and_frozen_parameter_counts(base):
    assert count_parameters(la.build(base, SPECS["full"])) == count_parameters(base, trainable_only=False) == 102_670
    assert count_parameters(la.build(base, SPECS["frozen"])) == 0


@pytest.mark.parametrize("family", ["series", "parallel", "lora", "prefix"])
@pytest.mark.parametrize("placement", ["attention", "mlp", "both"])
def test_formula_matches_the_modules_on_another_shape(family, placement):
    cfg = la.PEFTConfig(family, placement, 3, alpha=6.0)
    model = tiny_lm(d=32, n_layers=3)
    la.attach(model, cfg)
    assert count_parameters(model) == la.formula_parameters(cfg, d=32, n_layers=3)


def test_lora_placement_matches_peft_on_gpt2():
    """The same target set through PEFT's LoraConfig (GPT-2's Conv1D: fan_in_fan_out) trains as many parameters."""
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=14, n_positions=32, n_embd=32, n_layer=2, n_head=4)
    torch.manual_seed(0)
    ours = transformers.GPT2LMHeadModel(config)
    theirs = copy.deepcopy(ours)
    la.attach(ours, la.PEFTConfig("lora", "both", 4, alpha=8))
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True)
    theirs = peft.get_peft_model(theirs, lora)
    assert (
        count_parameters(ours) == count_parameters(theirs) == 2 * 4 * ((32 + 96) + (32 + 32) + (32 + 128) + (128 + 32))
    )
    # the same A and B (B random, so the adapters matter) in the same places: the same logits
    ours.eval(), theirs.eval()
    peft_layers = {n.removeprefix("base_model.model."): m for n, m in theirs.named_modules() if hasattr(m, "lora_A")}
    with torch.no_grad():
        for name, layer in ours.named_modules():
            if isinstance(layer, LoRALinear):
                layer.lora_B.normal_()
                peft_layers[name].lora_A["default"].weight.copy_(layer.lora_A)
                peft_layers[name].lora_B["default"].weight.copy_(layer.lora_B)
    assert len(peft_layers) == 8
    x = torch.randint(14, (2, 8))
    assert torch.allclose(ours(x).logits, theirs(x).logits, atol=1e-5)


# --- the loss: answer tokens only ----------------------------------------------------------------------------------


class Bigram(nn.Module):
    """A stub LM whose next-token logits depend on the current token only: logits[b, t] = table[tokens[b, t]]."""

    def __init__(self, probs):
        super().__init__()
        self.table = nn.Parameter(torch.log(torch.tensor(probs)))

    def forward(self, tokens):
        return self.table[tokens]


PROBS = [[0.5, 0.25, 0.25], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8]]  # row: current token, column: next token
PAD = 2


def test_answer_only_loss_by_hand():
    # prompt "· 0 1" (left pad = 2), answer "1 2" (2 is also EOS), both answer tokens scored
    lm = Bigram(PROBS)
    prompts, answers, mask = torch.tensor([[2, 0, 1]]), torch.tensor([[1, 2]]), torch.tensor([[True, True]])
    # answer only: targets 1 | 1 and 2 | 1:   −(log 0.6 + log 0.2) / 2
    loss = la.sequence_loss(lm, prompts, answers, mask, pad=PAD)
    assert loss.item() == pytest.approx(-(math.log(0.6) + math.log(0.2)) / 2, abs=1e-6)
    # train_on_inputs: also 1 | 0 (the prompt's first real token has no real context and is not scored)
    loss = la.sequence_loss(lm, prompts, answers, mask, pad=PAD, train_on_inputs=True)
    assert loss.item() == pytest.approx(-(math.log(0.25) + math.log(0.6) + math.log(0.2)) / 3, abs=1e-6)
    # the answer's padding after EOS is never scored: mask [True, False] → only 1 | 1
    loss = la.sequence_loss(lm, prompts, answers, torch.tensor([[True, False]]), pad=PAD)
    assert loss.item() == pytest.approx(-math.log(0.6), abs=1e-6)


def test_answer_only_loss_sends_no_gradient_to_the_prompt_predictions():
    lm = Bigram(PROBS)
    prompts, answers, mask = torch.tensor([[2, 0, 1]]), torch.tensor([[1, 2]]), torch.tensor([[True, True]])
    la.sequence_loss(lm, prompts, answers, mask, pad=PAD).backward()
    # the only contexts of scored targets are token 1 (twice): rows 0 and 2 of the table get no gradient
    assert lm.table.grad[0].abs().sum() == 0 and lm.table.grad[2].abs().sum() == 0
    assert lm.table.grad[1].abs().sum() > 0
    lm.table.grad = None
    la.sequence_loss(lm, prompts, answers, mask, pad=PAD, train_on_inputs=True).backward()
    assert lm.table.grad[0].abs().sum() > 0  # 1 | 0 is scored now


def test_scored_positions_mask_by_hand():
    prompts = torch.tensor([[2, 2, 0, 1], [0, 1, 0, 1]])
    answer_mask = torch.tensor([[True, False], [True, True]])
    got = la.scored_positions(prompts, answer_mask, pad=PAD)
    assert got.tolist() == [[False, False, False, True, False], [False, False, False, True, True]]
    got = la.scored_positions(prompts, answer_mask, pad=PAD, train_on_inputs=True)
    assert got.tolist() == [[False, False, True, True, False], [True, True, True, True, True]]


def test_answer_only_loss_equals_the_substrate_nll_on_a_tinylm():
    model = tiny_lm()
    train, _ = small_task()
    ours = la.sequence_loss(model, train.prompts, train.answers, train.mask, pad=ar.TOKENIZER.pad_id)
    assert ours.item() == pytest.approx(nll_loss(model, train.prompts, train.answers, train.mask).item(), abs=1e-6)


def test_linear_schedule_by_hand():
    # 10 steps, 2 warm-up: 1/2, 2/2, then (10 − t)/8 for t = 2 … 9
    got = [la.lr_factor(t, 10, 2) for t in range(10)]
    assert got == pytest.approx([0.5, 1.0, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8])
    assert la.lr_factor(0, 5, 0) == 1.0


# --- the loop trains the modules only ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["series_mlp", "parallel_both", "lora_both", "lora_attention", "prefix", "full"])
def test_the_loop_trains_only_the_modules(base, key):
    train, _ = small_task()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = la.build(base, SPECS[key])
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = la.finetune(
        model, train, n_steps=5, lr=SPECS[key].lr, batch_size=16, generator=torch.Generator().manual_seed(0), pad=13
    )
    assert len(losses) == 5 and all(math.isfinite(v) for v in losses)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), start[n])}
    grads = {n for n, p in model.named_parameters() if p.requires_grad}
    if key == "full":
        assert changed == grads == set(start)
    else:
        assert changed and changed <= grads  # only trainable tensors move ...
        frozen = {n for n in start if n not in grads}
        assert len(frozen) == len(before)  # ... and every base weight is frozen
        for n in frozen:
            assert torch.equal(dict(model.named_parameters())[n], start[n])
    # the cached base itself never changes (each arm is a deep copy)
    assert all(torch.equal(v, before[k]) for k, v in base.state_dict().items())


def test_the_loop_refuses_a_model_with_nothing_to_train(base):
    with pytest.raises(ValueError, match="no trainable"):
        la.finetune(la.build(base, SPECS["frozen"]), small_task()[0], n_steps=1, lr=1e-3, batch_size=8,
                    generator=torch.Generator(), pad=13)  # fmt: skip


@pytest.mark.parametrize("key", ["lora_both", "prefix", "full"])
def test_a_huge_learning_rate_diverges_and_names_the_arm(base, key):
    train, test = small_task()
    spec = SPECS[key]
    huge = la.ArmSpec(spec.arm, spec.peft, 1e12, spec.main)
    with pytest.raises(DivergenceError, match=rf"step \d+ in {re.escape(repr(spec.arm.label))}"):
        la.train_arm(base, huge, train, test, la.Knobs(n_steps=20, batch_size=16), seed=0)


def test_a_huge_learning_rate_stops_the_run_and_records_nothing(monkeypatch, tmp_path):
    from labkit.core.store import RunStore

    monkeypatch.setenv("LABKIT_STORE", str(tmp_path / "runs.sqlite"))
    # only the knob's range check is lifted (it refuses lr = 1e12 at every front end)
    monkeypatch.setattr(params_module, "check_value", lambda param, value: params_module._coerce(param, value))
    with pytest.raises(DivergenceError, match=r"at step \d+ in 'Series after MLP \(r=16\)'"):
        la.run(lr_adapter=1e12, n_seeds=1, n_steps=10, n_test=20, progress=False, record=True)
    assert len(RunStore(tmp_path / "runs.sqlite").runs()) == 0


# --- the claims ----------------------------------------------------------------------------------------------------


def test_headline_claim_three_ways():
    full = np.array([0.92, 0.93, 0.91])
    holds = la.lora_claim(full - 0.01, full, share=0.08)
    assert holds.verdict is Verdict.HOLDS and holds.headline and holds.margin == la.LORA_RATIO
    assert "8.0%" in holds.claim
    assert la.lora_claim(0.5 * full, full, 0.08).verdict is Verdict.DOES_NOT_HOLD
    assert la.lora_claim(full * np.array([0.5, 1.2, 1.0]), full, 0.08).verdict is Verdict.INCONCLUSIVE
    nan = la.lora_claim(full, np.array([0.9, 0.0, 0.9]), 0.08)  # full FT at 0: no ratio
    assert nan.verdict is Verdict.INCONCLUSIVE and "not finite" in nan.detail
    assert la.lora_claim([np.nan, 0.9, 0.9], full, 0.08).verdict is Verdict.INCONCLUSIVE


def test_bottleneck_claim_three_ways():
    full = np.array([0.9, 0.92, 0.91])
    assert la.bottleneck_claim("Series", 0.8 * full, full).verdict is Verdict.HOLDS
    assert la.bottleneck_claim("Series", 0.5 * full, full).verdict is Verdict.DOES_NOT_HOLD
    assert la.bottleneck_claim("Series", full * np.array([0.3, 1.0, 0.8]), full).verdict is Verdict.INCONCLUSIVE
    assert la.bottleneck_claim("Series", [np.nan] * 3, full).verdict is Verdict.INCONCLUSIVE
    assert not la.bottleneck_claim("Series", full, full).headline


def test_prefix_claim_three_ways():
    others = np.array([0.85, 0.86, 0.84])
    series, parallel, lora = others, others + 0.02, others + 0.05
    holds = la.prefix_claim(others - 0.3, series, parallel, lora)
    assert holds.verdict is Verdict.HOLDS and holds.values == pytest.approx((-0.3, -0.3, -0.3))
    assert la.prefix_claim(others - 0.02, series, parallel, lora).verdict is Verdict.DOES_NOT_HOLD
    wide = la.prefix_claim(others + np.array([-0.4, 0.1, -0.05]), series, parallel, lora)
    assert wide.verdict is Verdict.INCONCLUSIVE
    assert la.prefix_claim([0.1, np.nan, 0.1], series, parallel, lora).verdict is Verdict.INCONCLUSIVE
    # the minimum is taken per seed: a weak series on one seed lowers that seed's bar
    assert la.prefix_claim([0.5, 0.5, 0.5], [0.9, 0.6, 0.9], [0.9] * 3, [0.9] * 3).values == pytest.approx(
        (-0.4, -0.1, -0.4)
    )


def test_placement_claims_three_ways():
    assert la.lora_placement_claim([0.9, 0.92, 0.91], [0.8, 0.81, 0.8]).verdict is Verdict.HOLDS
    assert la.lora_placement_claim([0.7, 0.72, 0.71], [0.8, 0.81, 0.8]).verdict is Verdict.DOES_NOT_HOLD
    assert la.lora_placement_claim([0.9, 0.7, 0.85], [0.8, 0.8, 0.8]).verdict is Verdict.INCONCLUSIVE
    assert la.lora_placement_claim([np.nan, 0.9, 0.9], [0.8, 0.8, 0.8]).verdict is Verdict.INCONCLUSIVE
    acc = {"attention": (0.7, 0.71, 0.7), "mlp": (0.9, 0.91, 0.9), "both": (0.8, 0.8, 0.82)}
    holds = la.placement_claim("series", acc)  # the paper's series placement is the MLP
    assert holds.verdict is Verdict.HOLDS and holds.values == pytest.approx((0.1, 0.11, 0.08))
    assert la.placement_claim("lora", acc).verdict is Verdict.DOES_NOT_HOLD  # LoRA's is "both"
    assert la.placement_claim("parallel", {**acc, "mlp": (np.nan, 0.9, 0.9)}).verdict is Verdict.INCONCLUSIVE


def test_sanity_claims_three_ways():
    frozen, full = la.sanity_claims([0.05, 0.06, 0.07], [0.9, 0.92, 0.91])
    assert frozen.verdict is Verdict.HOLDS and full.verdict is Verdict.HOLDS and not frozen.higher_is_better
    frozen, full = la.sanity_claims([0.3, 0.35, 0.32], [0.5, 0.52, 0.51])
    assert frozen.verdict is Verdict.DOES_NOT_HOLD and full.verdict is Verdict.DOES_NOT_HOLD
    frozen, full = la.sanity_claims([0.0, 0.2, 0.1], [0.6, 1.0, 0.8])
    assert frozen.verdict is Verdict.INCONCLUSIVE and full.verdict is Verdict.INCONCLUSIVE
    assert la.sanity_claims([0.0] * 3, [np.nan, 0.9, 0.9])[1].verdict is Verdict.INCONCLUSIVE


# --- knobs ---------------------------------------------------------------------------------------------------------


def test_bad_knobs_are_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        la.run(n_train=32, batch_size=64)
    with pytest.raises(ValueError, match="distinct pairs"):
        la.run(n_train=9500, n_test=600)
    with pytest.raises(ValueError, match="config.json"):
        la.run(base_model=str(tmp_path))
    with pytest.raises(ValueError, match="adapter_init"):
        la.run(adapter_init="xavier")
    with pytest.raises(ValueError, match="unknown parameter"):
        la.run(rnak=4)


def test_arms_and_grid():
    keys = [s.arm.key for s in la.make_arms(la.Knobs())]
    assert keys == ["frozen", "full", "series_mlp", "parallel_mlp", "lora_both", "lora_attention", "prefix"]
    grid = la.make_arms(la.Knobs(grid=True))
    assert [s.arm.key for s in grid][:7] == keys and len(grid) == 12 and not any(s.main for s in grid[7:])
    assert len({s.arm.label for s in grid}) == 12
    lrs = {s.arm.key: s.lr for s in grid}
    assert lrs["full"] == 1e-3 and lrs["prefix"] == 0.1 and lrs["series_both"] == lrs["lora_mlp"] == 1e-2


# --- bring your own Hugging Face model -----------------------------------------------------------------------------


def save_tiny_hf(kind, folder):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if kind == "gpt2":
        config = transformers.GPT2Config(vocab_size=14, n_positions=32, n_embd=32, n_layer=2, n_head=4)
        model = transformers.GPT2LMHeadModel(config)
    else:
        config = transformers.LlamaConfig(
            vocab_size=14, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, max_position_embeddings=32,
        )  # fmt: skip
        model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(folder)
    return folder


#: trainable parameters on the tiny HF models (d 32, 2 layers): bottleneck 2·d·r per sub-layer; LoRA r·(d_in + d_out)
HF_COUNTS = {
    "gpt2": {"series_mlp": 2 * 2 * 32 * 16, "lora_both": 2 * 4 * ((32 + 96) + (32 + 32) + (32 + 128) + (128 + 32))},
    "llama": {"series_mlp": 2 * 2 * 32 * 16, "lora_both": 2 * 4 * (4 * (32 + 32) + 3 * (32 + 64))},
}


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_the_same_arms_run_on_a_hugging_face_model_of_your_own(kind, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = save_tiny_hf(kind, tmp_path / kind)
    from labkit.substrates.pretrained_lm import load_hf_causal_lm

    p = la.Knobs(base_model=str(folder))
    hf = la.load_base(p)
    assert la.architecture_of(hf) == kind
    before = {k: v.clone() for k, v in hf.state_dict().items()}
    train, test = small_task()
    for key, spec in SPECS.items():
        if key == "prefix":
            pytest.importorskip("peft")
        model, losses = la.train_arm(
            hf, spec, train, test, la.Knobs(base_model=str(folder), n_steps=3, batch_size=16), 0
        )
        assert len(losses) == (3 if spec.trained else 0) and all(math.isfinite(v) for v in losses)
        if key in HF_COUNTS[kind]:
            assert count_parameters(model) == HF_COUNTS[kind][key]
        if key == "prefix":
            assert count_parameters(model) == 2 * 2 * 10 * 32  # PEFT's prefix: 2·n_layers·n_v·d
        assert 0.0 <= ar.exact_match(model, test.prompts, test.answers, test.mask) <= 1.0
    assert all(torch.equal(v, before[k]) for k, v in hf.state_dict().items())  # the base is never trained
    assert isinstance(load_hf_causal_lm(folder), nn.Module)


@pytest.mark.slow
def test_run_accepts_a_hugging_face_folder(tmp_path, monkeypatch):
    pytest.importorskip("peft")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = save_tiny_hf("gpt2", tmp_path / "gpt2")
    result = la.run(base_model=str(folder), n_seeds=3, n_steps=4, n_test=20, n_train=64, batch_size=16, progress=False)
    assert result.extras["architecture"] == "gpt2" and len(result.claims) == 7
    assert {o.arm.key: o.n_trainable for o in result.extras["arms"]}["series_mlp"] == 2048


# --- a quick-preset run --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_quick_run_has_a_headline_and_consistent_numbers():
    result = la.run(preset="quick", progress=False)
    arms = {o.arm.key: o for o in result.extras["arms"]}
    assert isinstance(result, Result) and result.headline is not None and len(result.claims) == 7
    assert [c.headline for c in result.claims] == [True] + [False] * 6
    assert all(math.isfinite(v) for v in result.metrics.values())
    assert {o.n_trainable for o in arms.values()} >= {0, 102_670, 4096, 8192, 3072, 2560}
    ratio = np.array(arms["lora_both"].accuracy) / np.array(arms["full"].accuracy)
    assert result.claims[0].values == pytest.approx(tuple(ratio), abs=1e-12)
    hist = result.history
    final = hist[(hist["metric"] == "test_acc") & (hist["step"] == la.Knobs().n_steps)]
    assert final.groupby("series")["value"].mean()[arms["prefix"].arm.label] == pytest.approx(arms["prefix"].mean)
    # every arm whose modules start as the identity starts at the frozen base's accuracy
    start = hist[(hist["metric"] == "test_acc") & (hist["step"] == 0)].set_index(["series", "seed"])["value"]
    for key in ("full", "series_mlp", "parallel_mlp", "lora_both", "lora_attention"):
        assert start[arms[key].arm.label].tolist() == pytest.approx(list(arms["frozen"].accuracy))
    assert {"params", "placement", "curves", "loss", "diagram"} <= set(result.figures)
    assert set(result.extras["seeds"]) == {0, 1, 2} and len(set(hist["seed"])) == 3
