"""labkit's adapters (LoRA, DoRA, series and parallel bottleneck adapters, prefix tuning) by hand and against the
libraries people use: PEFT for LoRA, DoRA and prefix tuning, the ``adapters`` package (AdapterHub) for the
bottleneck adapters, on tiny Hugging Face GPT-2 (``Conv1D`` layers, weights stored transposed) and Llama
(``nn.Linear``) models built from a config (random init, nothing downloaded).

Each comparison copies the SAME adapter weights into both implementations, set away from their initial values
(B ≠ 0, magnitudes ≠ ‖W‖, up-projections ≠ 0), and compares logits (≤ 1e-5) and the gradients of a fixed linear
function of the logits with respect to every adapter parameter. transformers, peft and adapters are test-only
dependencies: those tests skip without them; the hand-computed cases always run.
"""

import copy
import math
import os

import pytest
import torch
from torch import nn

from labkit.core import torch_threads
from labkit.models import tiny_lm as lm
from labkit.models.adapters import (
    Bottleneck,
    LayerPrefix,
    LoRALinear,
    ParallelAdapter,
    SeriesAdapter,
    add_prefix,
    count_parameters,
    inject_adapters,
    io_features,
    linear_weight,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
T = torch.tensor
VOCAB, SEQ = 23, 7


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def linear(weight, bias=None):
    """An nn.Linear with the given W (d_out, d_in) and b."""
    weight = T(weight, dtype=torch.float32)
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(T(bias, dtype=torch.float32))
    return layer


def set_branch(adapter, down, up, down_bias=None, up_bias=None):
    with torch.no_grad():
        adapter.down.weight.copy_(T(down))
        adapter.up.weight.copy_(T(up))
        if down_bias is not None:
            adapter.down.bias.copy_(T(down_bias))
            adapter.up.bias.copy_(T(up_bias))


def tiny_transformer(seed=0, d_model=16, n_layers=2, n_heads=4, vocab=11, max_len=8):
    """A TinyLM whose weights are pushed away from the small init, so that every path matters."""
    torch.manual_seed(seed)
    model = lm.TinyLM(vocab, max_len, d_model=d_model, n_layers=n_layers, n_heads=n_heads)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape))
    return model.eval()


# --- hand-computed cases --------------------------------------------------------------------------------------


def test_lora_two_by_two_by_hand():
    # W = [[1, 2], [3, 4]], b = [0.5, −1], r = 1, α = 2 → s = 2; A = [1, −1], B = [0.5, 2]ᵀ, x = [1, 3]
    # W x + b = [7.5, 14];  A x = −2;  s · B A x = 2 · [−1, −4] = [−2, −8]  →  y = [5.5, 6]
    layer = LoRALinear(linear([[1, 2], [3, 4]], [0.5, -1]), r=1, alpha=2)
    with torch.no_grad():
        layer.lora_A.copy_(T([[1.0, -1.0]]))
        layer.lora_B.copy_(T([[0.5], [2.0]]))
    assert torch.allclose(layer(T([[1.0, 3.0]])), T([[5.5, 6.0]]))
    assert torch.allclose(layer.delta_weight(), T([[1.0, -1.0], [4.0, -4.0]]))


def test_dora_two_by_two_by_hand():
    # W' = W + s B A = [[2, 1], [4, 3]] (s = 2, A = [1, −1], B = [0.5, 0.5]ᵀ), ‖W'‖_row = [√5, 5], m = [1, 2]
    # x = [1, 3]: W' x = [5, 13];  y = m ⊙ W' x / ‖W'‖_row + b = [5/√5 + 0.5, 2 · 13/5 − 1] = [√5 + 0.5, 4.2]
    layer = LoRALinear(linear([[1, 2], [3, 4]], [0.5, -1]), r=1, alpha=2, use_dora=True)
    assert torch.allclose(layer.magnitude, T([math.sqrt(5), 5.0]))  # ‖W‖_row at init
    with torch.no_grad():
        layer.lora_A.copy_(T([[1.0, -1.0]]))
        layer.lora_B.copy_(T([[0.5], [0.5]]))
        layer.magnitude.copy_(T([1.0, 2.0]))
    assert torch.allclose(layer(T([[1.0, 3.0]])), T([[math.sqrt(5) + 0.5, 4.2]]))


def test_series_adapter_two_by_two_by_hand():
    # f(x) = W x with W = [[1, 2], [3, 4]]; D = [1, 1], U = [2, −1]ᵀ, s = 0.5, σ = tanh; x = [1, 0]
    # y = [1, 3];  D y = 4;  y' = y + 0.5 · tanh(4) · [2, −1] = [1 + tanh 4, 3 − 0.5 tanh 4]
    layer = SeriesAdapter(linear([[1, 2], [3, 4]]), r=1, scaling=0.5)
    set_branch(layer.adapter, [[1.0, 1.0]], [[2.0], [-1.0]])
    t4 = math.tanh(4)
    assert torch.allclose(layer(T([[1.0, 0.0]])), T([[1 + t4, 3 - 0.5 * t4]]))


def test_parallel_adapter_two_by_two_by_hand_with_biases():
    # y = W x + s · (U σ(D x + b_D) + b_U);  D = [1, 1], b_D = −0.5, U = [2, −1]ᵀ, b_U = [0, 1], s = 0.5; x = [1, 0]
    # W x = [1, 3];  D x + b_D = 0.5;  y = [1, 3] + 0.5 · ([2, −1] tanh 0.5 + [0, 1])
    layer = ParallelAdapter(linear([[1, 2], [3, 4]]), r=1, scaling=0.5, bias=True)
    set_branch(layer.adapter, [[1.0, 1.0]], [[2.0], [-1.0]], [-0.5], [0.0, 1.0])
    t = math.tanh(0.5)
    assert torch.allclose(layer(T([[1.0, 0.0]])), T([[1 + t, 3 + 0.5 * (1 - t)]]))


def test_bottleneck_activation_and_relu_case():
    branch = Bottleneck(2, 2, r=1, activation="relu", scaling=2.0)
    set_branch(branch, [[1.0, -1.0]], [[1.0], [3.0]])
    # D z = −1 for z = [0, 1] → relu 0 → 0; D z = 2 for z = [2, 0] → 2 · [2, 6]
    assert torch.equal(branch(T([[0.0, 1.0], [2.0, 0.0]])), T([[0.0, 0.0], [4.0, 12.0]]))


def test_prefix_attention_by_hand():
    # one head, d = 2: q = k = v = h (qkv = [I; I; I]), out = I; prefix p_k = [1, 0], p_v = [0, 2]; h = [1, 1]
    # scores = [q·p_k, q·k]/√2 = [1/√2, √2];  a = softmax;  out = a_0 · [0, 2] + a_1 · [1, 1]
    attn = lm.CausalSelfAttention(2, 1)
    with torch.no_grad():
        attn.qkv.weight.copy_(torch.eye(2).repeat(3, 1))
        attn.qkv.bias.zero_()
        attn.out.weight.copy_(torch.eye(2))
        attn.out.bias.zero_()
    attn.prefix = LayerPrefix(1, 2)
    with torch.no_grad():
        attn.prefix.key.copy_(T([[1.0, 0.0]]))
        attn.prefix.value.copy_(T([[0.0, 2.0]]))
    a = torch.softmax(T([1 / math.sqrt(2), math.sqrt(2)]), 0)
    expected = a[0] * T([0.0, 2.0]) + a[1] * T([1.0, 1.0])
    assert torch.allclose(attn(T([[[1.0, 1.0]]])), expected.view(1, 1, 2))


def test_prefix_attention_equals_sdpa_with_the_prefix_visible_and_the_future_masked():
    """With a prefix, TinyLM's attention is SDPA over [P_k; K], [P_v; V] with the mask [visible | causal]."""
    torch.manual_seed(3)
    B, T_, D, H, n_v = 2, 5, 8, 2, 3
    attn = lm.CausalSelfAttention(D, H)
    attn.prefix = LayerPrefix(n_v, D)
    h = torch.randn(B, T_, D)
    q, k, v = attn.qkv(h).view(B, T_, 3, H, D // H).permute(2, 0, 3, 1, 4)
    p_k, p_v = (p.view(n_v, H, D // H).transpose(0, 1).expand(B, H, n_v, D // H) for p in attn.prefix())
    allowed = torch.cat([torch.ones(T_, n_v, dtype=torch.bool), torch.ones(T_, T_, dtype=torch.bool).tril()], 1)
    ref = nn.functional.scaled_dot_product_attention(
        q, torch.cat([p_k, k], 2), torch.cat([p_v, v], 2), attn_mask=allowed
    )
    assert torch.allclose(attn(h), attn.out(ref.transpose(1, 2).reshape(B, T_, D)), atol=1e-6)
    # causality survives: changing the last token changes no earlier output
    h2 = h.clone()
    h2[:, -1] += 1.0
    assert torch.equal(attn(h)[:, :-1], attn(h2)[:, :-1])


# --- identity at init, trainable parameters ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["lora", "dora", "series", "parallel"])
def test_identity_at_init_on_tiny_lm(kind):
    model = tiny_transformer()
    tokens = torch.randint(0, 11, (3, 8))
    before = model(tokens)
    targets = r"blocks\.\d+\.mlp" if kind == "parallel" else r"blocks\.\d+\.(attn\.qkv|mlp\.2)"
    inject_adapters(model, kind, targets, r=2, **({"alpha": 4} if kind in ("lora", "dora") else {}))
    assert torch.equal(model(tokens), before)


def test_bert_init_is_near_but_not_exactly_identity():
    """The official LLM-Adapters default: D, U ~ N(0, 0.02²), so the adapter moves the output a little at step 0."""
    torch.manual_seed(0)
    layer = SeriesAdapter(nn.Linear(8, 8), r=4, init="bert")
    x = torch.randn(5, 8)
    gap = (layer(x) - layer.base(x)).abs().max().item()
    assert 0 < gap < 0.01
    assert abs(layer.adapter.down.weight.std().item() - 0.02) < 0.01


def test_trainable_parameters_are_the_adapters_and_their_count():
    d, L, r, n_v = 16, 2, 3, 4
    cases = {
        # LoRA on qkv (d → 3d), out (d → d), MLP (d → 4d → d): r·(d_in + d_out) per layer
        ("lora", r"blocks\.\d+\.(attn\.(qkv|out)|mlp\.(0|2))"): L * r * ((d + 3 * d) + 2 * d + (d + 4 * d) * 2),
        # DoRA adds the magnitude m (d_out,)
        ("dora", r"blocks\.\d+\.attn\.qkv"): L * (r * (d + 3 * d) + 3 * d),
        # series after the MLP's last linear: D (r, d) and U (d, r)
        ("series", r"blocks\.\d+\.mlp\.2"): L * 2 * d * r,
        # parallel beside the whole MLP (d → d)
        ("parallel", r"blocks\.\d+\.mlp"): L * 2 * d * r,
    }
    for (kind, targets), expected in cases.items():
        model = tiny_transformer()
        layers = inject_adapters(model, kind, targets, r=r)
        assert len(layers) == L * (4 if targets.endswith("(0|2))") else 1)
        assert count_parameters(model) == sum(count_parameters(m) for m in layers) == expected, kind
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        assert all(("lora_" in n or "magnitude" in n or ".adapter." in n) for n in names), names
    model = tiny_transformer()
    with_bias = inject_adapters(model, "series", r"blocks\.\d+\.mlp\.2", r=r, bias=True)
    assert count_parameters(model) == L * (2 * d * r + r + d) == sum(count_parameters(m) for m in with_bias)
    model = tiny_transformer()
    prefix = add_prefix(model, n_v)
    assert count_parameters(model) == count_parameters(prefix) == 2 * L * n_v * d
    assert all(".prefix." in n for n, p in model.named_parameters() if p.requires_grad)


def test_only_the_adapter_moves_when_training():
    model = tiny_transformer()
    frozen = {n: p.clone() for n, p in model.named_parameters()}
    inject_adapters(model, "series", r"blocks\.\d+\.mlp\.2", r=2)
    prompts, responses = torch.randint(0, 11, (32, 4)), torch.randint(0, 11, (32, 4))
    lm.train_nll(model, prompts, responses, steps=3, lr=1e-2, batch_size=16, generator=torch.Generator().manual_seed(0))
    for name, p in model.named_parameters():
        old = frozen.get(name.replace("mlp.2.base.", "mlp.2."))
        if old is not None:
            assert torch.equal(p, old), name
        else:
            assert ".adapter." in name
    assert any(
        not torch.equal(layer.adapter.up.weight, torch.zeros_like(layer.adapter.up.weight))
        for layer in [model.blocks[0].mlp[2], model.blocks[1].mlp[2]]
    )


def test_prefix_trains_and_decoding_helpers_work():
    model = tiny_transformer()
    base = copy.deepcopy(model)
    prefix = add_prefix(model, 3)
    start = [p.clone() for p in prefix.parameters()]
    prompts, responses = torch.randint(0, 11, (32, 4)), torch.randint(0, 11, (32, 4))
    losses = lm.train_nll(model, prompts, responses, steps=5, lr=0.1, batch_size=16)
    assert losses[-1] < losses[0]
    assert all(not torch.equal(a, b) for a, b in zip(start, prefix.parameters()))
    for (name, p), q in zip(base.named_parameters(), [q for n, q in model.named_parameters() if "prefix" not in n]):
        assert torch.equal(p, q), name
    assert lm.greedy(model, prompts[:5], 4).shape == (5, 4)
    assert lm.sample(model, prompts[:5], 4, generator=torch.Generator().manual_seed(0)).shape == (5, 4)
    # prefix tuning is not the identity: the prefix changes the outputs (unlike zero-initialised adapters)
    assert not torch.allclose(model(prompts), base(prompts))
    with pytest.raises(ValueError, match="already has a prefix"):
        add_prefix(model, 2)


def test_bad_configurations_are_refused():
    model = tiny_transformer()
    with pytest.raises(ValueError, match="unknown adapter kind"):
        inject_adapters(model, "prompt", r"blocks\.0\.mlp", r=2)
    with pytest.raises(ValueError, match="no module"):
        inject_adapters(model, "series", r"blocks\.9\.mlp", r=2)
    with pytest.raises(ValueError, match="nested"):
        inject_adapters(model, "series", [r"blocks\.0\.mlp", r"blocks\.0\.mlp\.2"], r=2)
    with pytest.raises(ValueError, match="activation"):
        Bottleneck(4, 4, r=2, activation="softmax")
    with pytest.raises(ValueError, match="init"):
        Bottleneck(4, 4, r=2, init="kaiming")
    with pytest.raises(ValueError, match="r must be"):
        Bottleneck(4, 4, r=0)
    with pytest.raises(ValueError, match="no linear layer"):
        SeriesAdapter(nn.Tanh(), r=2)
    with pytest.raises(TypeError, match="CausalSelfAttention"):
        add_prefix(nn.Sequential(nn.Linear(2, 2)), 2)
    with pytest.raises(TypeError, match="LoRALinear wraps"):
        LoRALinear(nn.Tanh(), r=2)


# --- Hugging Face models: Conv1D, bring your own model ---------------------------------------------------------


def tiny_gpt2(seed=0):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        n_layer=2, n_embd=16, n_head=4, vocab_size=VOCAB, n_positions=16, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0
    )
    return transformers.GPT2LMHeadModel(config).eval()


def tiny_llama(seed=0):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=16,
    )
    return transformers.LlamaForCausalLM(config).eval()


# target modules, as regexes for labkit and as names for PEFT
HF = {
    "gpt2": (
        tiny_gpt2,
        r"transformer\.h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)",
        ["c_attn", "c_proj", "c_fc"],
    ),
    "llama": (
        tiny_llama,
        r"model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(up|down)_proj)",
        ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"],
    ),
}


def test_lora_on_conv1d_equals_lora_on_the_equivalent_linear():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    conv = transformers.pytorch_utils.Conv1D(6, 4)  # d_in 4 → d_out 6, weight stored (4, 6)
    nn.init.normal_(conv.weight)
    nn.init.normal_(conv.bias)
    dense = linear(conv.weight.detach().T.tolist(), conv.bias.detach().tolist())
    assert io_features(conv) == (4, 6) and torch.equal(linear_weight(conv), dense.weight)
    for dora in (False, True):
        a, b = LoRALinear(conv, r=2, alpha=3, use_dora=dora), LoRALinear(dense, r=2, alpha=3, use_dora=dora)
        with torch.no_grad():
            b.lora_A.copy_(a.lora_A)
            a.lora_B.normal_()
            b.lora_B.copy_(a.lora_B)
        x = torch.randn(5, 4)
        assert torch.allclose(a(x), b(x), atol=1e-6)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_bring_your_own_model_saved_to_disk(arch, tmp_path):
    """A local HF causal LM (built from a config, saved, loaded by AutoModelForCausalLM) takes every adapter kind."""
    transformers = pytest.importorskip("transformers")
    build, lora_targets, _ = HF[arch]
    build().save_pretrained(tmp_path)
    tokens = torch.randint(0, VOCAB, (2, SEQ))
    mlp_out = r"transformer\.h\.\d+\.mlp\.c_proj" if arch == "gpt2" else r"model\.layers\.\d+\.mlp\.down_proj"
    mlp = r"transformer\.h\.\d+\.mlp" if arch == "gpt2" else r"model\.layers\.\d+\.mlp"
    attn = r"transformer\.h\.\d+\.attn" if arch == "gpt2" else r"model\.layers\.\d+\.self_attn"
    for kind, targets in [("lora", lora_targets), ("dora", lora_targets), ("series", mlp_out), ("parallel", mlp),
                          ("parallel", attn)]:  # fmt: skip
        model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
        before = model(tokens).logits
        layers = inject_adapters(model, kind, targets, r=2)
        assert torch.equal(model(tokens).logits, before), (kind, targets)  # exactly the base model at init
        with torch.no_grad():
            for layer in layers:
                (layer.lora_B if kind in ("lora", "dora") else layer.adapter.up.weight).normal_()
        logits = model(tokens).logits
        assert not torch.allclose(logits, before)
        logits.sum().backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
        assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


# --- against PEFT: LoRA and DoRA -------------------------------------------------------------------------------


def max_grad_gap(pairs):
    """max |g_labkit − g_ref| and max |g_ref| over (labkit parameter, reference parameter) pairs."""
    gap = max((a.grad - b.grad).abs().max().item() for a, b in pairs)
    return gap, max(b.grad.abs().max().item() for _, b in pairs)


@pytest.mark.parametrize("dora", [False, True], ids=["lora", "dora"])
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_lora_and_dora_equal_peft(arch, dora):
    """Same base weights, same A, B (B ≠ 0) and m (≠ ‖W‖); r = 4, α = 7 (s = 1.75), no dropout.

    GPT-2 exercises the Conv1D path (PEFT: ``fan_in_fan_out=True``), Llama nn.Linear with grouped-query attention.
    """
    peft = pytest.importorskip("peft")
    build, targets, names = HF[arch]
    base = build()
    ours = copy.deepcopy(base)
    inject_adapters(ours, "dora" if dora else "lora", targets, r=4, alpha=7)
    layers = {n: m for n, m in ours.named_modules() if isinstance(m, LoRALinear)}
    config = peft.LoraConfig(r=4, lora_alpha=7, target_modules=names, lora_dropout=0.0, use_dora=dora,
                             fan_in_fan_out=arch == "gpt2")  # fmt: skip
    ref = peft.get_peft_model(copy.deepcopy(base), config).eval()
    assert count_parameters(ours) == count_parameters(ref)
    g = torch.Generator().manual_seed(1)
    pairs = []
    with torch.no_grad():
        for name, layer in layers.items():
            theirs = ref.base_model.model.get_submodule(name)
            a, b = theirs.lora_A["default"].weight, theirs.lora_B["default"].weight
            a.copy_(0.3 * torch.randn(a.shape, generator=g))
            b.copy_(0.3 * torch.randn(b.shape, generator=g))
            layer.lora_A.copy_(a)
            layer.lora_B.copy_(b)
            pairs += [(layer.lora_A, a), (layer.lora_B, b)]
            if dora:
                m = theirs.lora_magnitude_vector["default"].weight
                m.mul_(1 + 0.5 * torch.rand(m.shape, generator=g))
                layer.magnitude.copy_(m)
                pairs.append((layer.magnitude, m))
    tokens = torch.randint(0, VOCAB, (3, SEQ), generator=g)
    ours_logits, ref_logits = ours(tokens).logits, ref(tokens).logits
    assert (ours_logits - base(tokens).logits).abs().max() > 0.05  # the adapters really change the model
    assert (ours_logits - ref_logits).abs().max() <= 1e-5
    probe = torch.randn(ours_logits.shape, generator=g)
    (ours_logits * probe).sum().backward()
    (ref_logits * probe).sum().backward()
    gap, scale = max_grad_gap(pairs)
    assert gap <= 1e-5 * max(scale, 1.0)


# --- against the adapters package: series and parallel bottleneck adapters --------------------------------------


def adapters_reference(base, kind, r, scaling):
    """The same model with an AdapterHub bottleneck adapter after / beside the MLP, bert init (biases on)."""
    adapters = pytest.importorskip("adapters")
    ref = copy.deepcopy(base)
    adapters.init(ref)
    d = base.config.hidden_size
    if kind == "series":
        # SeqBnConfig is Pfeiffer's adapter: its input is the residual stream after the MLP's residual add
        # (original_ln_before=True). With original_ln_before=False (Houlsby's placement) its input is the MLP's
        # output y and its own residual is y: y' = y + s·U σ(D y), then the block's residual add: labkit's series.
        config = adapters.SeqBnConfig(
            original_ln_before=False, non_linearity="tanh", reduction_factor=d / r, scaling=scaling, init_weights="bert"
        )
    else:
        config = adapters.ParBnConfig(
            non_linearity="tanh", reduction_factor=d / r, scaling=scaling, init_weights="bert"
        )
    ref.add_adapter("adapter", config=config)
    ref.train_adapter("adapter")
    return ref.eval()


def blocks_of(model):
    return model.transformer.h if hasattr(model, "transformer") else model.model.layers


@pytest.mark.parametrize("kind", ["series", "parallel"])
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_bottleneck_adapters_equal_the_adapters_package(arch, kind):
    """labkit's SeriesAdapter / ParallelAdapter against AdapterHub's SeqBnConfig / ParBnConfig, same weights.

    The placements, made equal:
    - series: labkit's adapter on the MLP's last linear (GPT-2 ``mlp.c_proj``, a Conv1D; Llama ``mlp.down_proj``),
      so y' = y + s·U σ(D y) with y the MLP output, before the block's residual add. AdapterHub's SeqBnConfig
      defaults (Pfeiffer) feed the adapter the residual stream AFTER that add (``original_ln_before=True``);
      ``original_ln_before=False`` gives exactly labkit's placement (``residual_before_ln=True``, no new layer
      norms, ``original_ln_after=True`` only re-adds the block's residual since GPT-2/Llama pass no layer norm).
    - parallel: AdapterHub's parallel branch reads the block's residual stream BEFORE the MLP's pre-LayerNorm
      (``ln_2`` / ``post_attention_layernorm``) and adds s·U σ(D h) to the MLP output. labkit's ParallelAdapter
      reads the input of the module it wraps, so here it wraps ``Sequential(ln_2, mlp)`` (and ln_2 becomes the
      identity): then the two are equal. injected on ``mlp`` alone (the LLM-Adapters official placement, whose
      branch reads the MLP's input, i.e. the layer-normed stream) it is a different model: asserted below.
    Both: tanh, bert init, scaling s = 0.7, biases on in labkit (``bias=True``; AdapterHub always has them; the
    official LLM-Adapters code has none, labkit's default), dropout 0 (AdapterHub drops the branch's output,
    labkit and LLM-Adapters its input: equal only without dropout, i.e. in eval).
    """
    build, _, _ = HF[arch]
    base = build()
    r, scaling = 4, 0.7
    ref = adapters_reference(base, kind, r, scaling)
    ours = copy.deepcopy(base)
    for p in ours.parameters():
        p.requires_grad_(False)
    cfg = {"r": r, "scaling": scaling, "init": "bert", "bias": True}
    if kind == "series":
        last = r"transformer\.h\.\d+\.mlp\.c_proj" if arch == "gpt2" else r"model\.layers\.\d+\.mlp\.down_proj"
        layers = inject_adapters(ours, "series", last, **cfg)
    else:
        layers = []
        for block in blocks_of(ours):
            ln = "ln_2" if arch == "gpt2" else "post_attention_layernorm"
            block.mlp = ParallelAdapter(nn.Sequential(getattr(block, ln), block.mlp), **cfg)
            setattr(block, ln, nn.Identity())
            layers.append(block.mlp)
    g = torch.Generator().manual_seed(1)
    pairs = []
    with torch.no_grad():
        for layer, block in zip(layers, blocks_of(ref)):
            theirs = block.output_adapters.adapters["adapter"]
            mine = layer.adapter
            down, up = theirs.adapter_down[0], theirs.adapter_up
            for a, b in [(mine.down.weight, down.weight), (mine.down.bias, down.bias),
                         (mine.up.weight, up.weight), (mine.up.bias, up.bias)]:  # fmt: skip
                b.copy_(0.5 * torch.randn(b.shape, generator=g))
                a.copy_(b)
                pairs.append((a, b))
    d = base.config.hidden_size
    assert count_parameters(ours) == count_parameters(ref) == len(layers) * (2 * d * r + r + d)
    tokens = torch.randint(0, VOCAB, (3, SEQ), generator=g)
    ours_logits, ref_logits = ours(tokens).logits, ref(tokens).logits
    assert (ours_logits - base(tokens).logits).abs().max() > 0.05
    assert (ours_logits - ref_logits).abs().max() <= 1e-5
    probe = torch.randn(ours_logits.shape, generator=g)
    (ours_logits * probe).sum().backward()
    (ref_logits * probe).sum().backward()
    gap, scale = max_grad_gap(pairs)
    assert gap <= 1e-5 * max(scale, 1.0)
    if kind == "parallel":
        # the placement matters: the same branch beside the MLP alone reads the layer-normed stream instead
        beside_mlp = copy.deepcopy(base)
        mlp = r"transformer\.h\.\d+\.mlp" if arch == "gpt2" else r"model\.layers\.\d+\.mlp"
        for layer, new in zip(layers, inject_adapters(beside_mlp, "parallel", mlp, **cfg)):
            new.adapter.load_state_dict(layer.adapter.state_dict())
        assert (beside_mlp(tokens).logits - ref_logits).abs().max() > 1e-3


# --- against PEFT: prefix tuning ---------------------------------------------------------------------------------


def gpt2_copy_of(tiny, n_virtual):
    """A Hugging Face GPT-2 computing exactly what ``tiny`` (a TinyLM) computes, for tokens at positions ≥ n_v.

    Same pre-LN block (exact GELU: ``activation_function="gelu"``, ε = 1e-5, no dropout), Conv1D weights = the
    Linear weights transposed, untied head. TinyLM's head has a bias GPT-2 lacks: it is set to zero. The position
    table is shifted by n_v (``wpe[n_v + t] = pos[t]``) because PEFT's prefix goes through the key/value cache,
    so GPT-2 numbers the real tokens n_v, n_v + 1, ... (the prefix takes positions 0..n_v−1), while labkit's
    prefix takes no position.
    """
    transformers = pytest.importorskip("transformers")
    d = tiny.d_model
    config = transformers.GPT2Config(
        vocab_size=tiny.vocab_size,
        n_positions=n_virtual + tiny.max_len,
        n_embd=d,
        n_layer=len(tiny.blocks),
        n_head=tiny.blocks[0].attn.n_heads,
        n_inner=4 * d,
        activation_function="gelu",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        tie_word_embeddings=False,
    )
    hf = transformers.GPT2LMHeadModel(config).eval()

    def same(dst, src, transpose=False):
        dst.weight.copy_(src.weight.T if transpose else src.weight)
        dst.bias.copy_(src.bias)

    with torch.no_grad():
        tiny.head.bias.zero_()
        hf.transformer.wte.weight.copy_(tiny.tok.weight)
        hf.transformer.wpe.weight[n_virtual:].copy_(tiny.pos.weight)
        for theirs, mine in zip(hf.transformer.h, tiny.blocks):
            same(theirs.ln_1, mine.ln1)
            same(theirs.ln_2, mine.ln2)
            same(theirs.attn.c_attn, mine.attn.qkv, transpose=True)
            same(theirs.attn.c_proj, mine.attn.out, transpose=True)
            same(theirs.mlp.c_fc, mine.mlp[0], transpose=True)
            same(theirs.mlp.c_proj, mine.mlp[2], transpose=True)
        same(hf.transformer.ln_f, tiny.ln_f)
        hf.lm_head.weight.copy_(tiny.head.weight)
    return hf


def test_prefix_tuning_equals_peft_prefix_on_the_same_transformer():
    """labkit's prefix on a TinyLM against PEFT's ``PrefixTuningConfig`` on a GPT-2 holding the TinyLM's weights.

    PEFT's prefix (``prefix_projection=False``) is one embedding ``(n_v, n_layers · 2 · d)``; row j, columns
    [2ℓd, (2ℓ+1)d) are layer ℓ's key of virtual token j and [(2ℓ+1)d, (2ℓ+2)d) its value, split into heads the
    same way labkit splits them; they reach GPT-2 as past keys/values. Equal logits (≤ 1e-5), equal gradients,
    and equal greedy decoding (labkit's ``greedy`` against PEFT's ``generate``).
    """
    peft = pytest.importorskip("peft")
    n_v = 3
    tiny = tiny_transformer(seed=2)
    hf = gpt2_copy_of(tiny, n_v)
    tokens = torch.randint(0, tiny.vocab_size, (3, tiny.max_len), generator=torch.Generator().manual_seed(0))
    shifted = torch.arange(tiny.max_len).unsqueeze(0) + n_v
    before = tiny(tokens)
    assert (before - hf(tokens, position_ids=shifted).logits).abs().max() <= 1e-5  # the copy is exact
    ref = peft.get_peft_model(hf, peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n_v)).eval()
    prefix = add_prefix(tiny, n_v)
    table = ref.prompt_encoder["default"].embedding.weight  # (n_v, n_layers · 2 · d)
    assert count_parameters(tiny) == count_parameters(ref) == table.numel()
    d = tiny.d_model
    with torch.no_grad():
        for i, layer in enumerate(prefix.layers):
            layer.key.copy_(table[:, 2 * i * d : (2 * i + 1) * d])
            layer.value.copy_(table[:, (2 * i + 1) * d : (2 * i + 2) * d])
    ours_logits, ref_logits = tiny(tokens), ref(input_ids=tokens).logits
    assert (ours_logits - ref_logits).abs().max() <= 1e-5
    assert (ours_logits - before).abs().max() > 0.05  # the prefix really changes the model
    probe = torch.randn(ours_logits.shape, generator=torch.Generator().manual_seed(1))
    (ours_logits * probe).sum().backward()
    (ref_logits * probe).sum().backward()
    ours_grad = torch.cat([torch.cat([layer.key.grad, layer.value.grad], 1) for layer in prefix.layers], 1)
    assert (ours_grad - table.grad).abs().max() <= 1e-5 * max(table.grad.abs().max().item(), 1.0)
    prompts = tokens[:, :3]
    generated = ref.generate(
        input_ids=prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=5, do_sample=False, pad_token_id=0
    )
    assert torch.equal(lm.greedy(tiny, prompts, 5), generated[:, 3:])
