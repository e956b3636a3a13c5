from __future__ import annotations

from optimum_hierarchy.schema import ModuleInfo, ModuleTree
from optimum_hierarchy.scope import ScopeResolver, ScopeSpeller, scope_segments, unqualified_name


def tree_of(*paths: str) -> ModuleTree:
    return ModuleTree([ModuleInfo("", "Root"), *(ModuleInfo(p, "M") for p in paths)])


def test_scope_segments() -> None:
    assert scope_segments("/encoder/layer.0/attention/self/query/MatMul") == [
        "encoder",
        "layer.0",
        "attention",
        "self",
        "query",
    ]
    assert scope_segments("/Shape") == []
    assert scope_segments("/Gather_1") == []
    assert scope_segments("Constant_12") is None
    assert scope_segments("onnx::Add_3") is None
    assert scope_segments("") is None
    assert scope_segments("/a//MatMul") is None


def test_resolves_child_names_relative_to_enclosing_scope() -> None:
    tree = tree_of("encoder", "encoder.layer", "encoder.layer.0", "encoder.layer.0.query")
    resolver = ScopeResolver(tree)
    assert resolver.resolve("/encoder/layer.0/query/MatMul") == "encoder.layer.0.query"
    assert resolver.resolve("/encoder/Shape") == "encoder"
    assert resolver.resolve("/Shape") == ""


def test_repeated_container_level() -> None:
    # TorchScript names nested Sequential children by their full path: /layer1/layer1.0/conv1/Conv.
    tree = tree_of("layer1", "layer1.0", "layer1.0.conv1")
    assert ScopeResolver(tree).resolve("/layer1/layer1.0/conv1/Conv") == "layer1.0.conv1"


def test_call_suffix_dropped_only_when_needed() -> None:
    tree = tree_of("act", "block", "block.act_1")
    resolver = ScopeResolver(tree)
    assert resolver.resolve("/act_1/Relu") == "act"  # second call of `act`
    assert resolver.resolve("/block/act_1/Relu") == "block.act_1"  # a module really named act_1


def test_unknown_scope_is_not_guessed() -> None:
    resolver = ScopeResolver(tree_of("encoder"))
    assert resolver.resolve("/decoder/MatMul") is None
    assert resolver.resolve("/encoder/attention/MatMul") is None


def test_submodel_export_root() -> None:
    tree = tree_of("model", "model.encoder", "model.encoder.layers", "model.encoder.layers.0")
    resolver = ScopeResolver(tree, root="model.encoder")
    assert resolver.resolve("/layers.0/MatMul") == "model.encoder.layers.0"
    assert resolver.resolve("/Shape") == "model.encoder"


def test_unqualified_name_is_torchs() -> None:
    """torch.onnx's _unqualified_variable_name: from the last non-numeric atom on."""
    assert unqualified_name("encoder.layer.0") == "layer.0"
    assert unqualified_name("layer1.0") == "layer1.0"
    assert unqualified_name("a.b.0.1") == "b.0.1"
    assert unqualified_name("conv.parametrizations.weight") == "weight"


def test_called_container_below_the_root() -> None:
    """ResNet: `layer` (a called Sequential) inside `layers.0`; its children's scopes are `layer.0`, named from
    `layers.0`, not from `layer` (each scope is the module's path from its last non-numeric atom)."""
    paths = ["resnet", "resnet.encoder", "resnet.encoder.stages", "resnet.encoder.stages.0"]
    paths += ["resnet.encoder.stages.0.layers", "resnet.encoder.stages.0.layers.0"]
    paths += ["resnet.encoder.stages.0.layers.0.layer", "resnet.encoder.stages.0.layers.0.layer.0"]
    paths += ["resnet.encoder.stages.0.layers.0.layer.0.convolution"]
    resolver = ScopeResolver(tree_of(*paths))
    name = "/resnet/encoder/stages.0/layers.0/layer/layer.0/convolution/Conv"
    assert resolver.resolve(name) == "resnet.encoder.stages.0.layers.0.layer.0.convolution"


def test_parametrized_weight() -> None:
    """wav2vec2's weight norm: `conv.weight` runs `conv.parametrizations.weight` (scope `weight`) and its
    `weight.0`; the ModuleDict `parametrizations` runs nothing and names no scope."""
    paths = ["conv", "conv.parametrizations", "conv.parametrizations.weight", "conv.parametrizations.weight.0"]
    resolver = ScopeResolver(tree_of(*paths))
    assert resolver.resolve("/conv/weight/weight.0/ReduceL2") == "conv.parametrizations.weight.0"


def test_closest_module_wins_and_ties_are_not_guessed() -> None:
    paths = ["layer", "layer.0", "layer.0.attention", "layer.0.attention.output", "layer.0.output"]
    resolver = ScopeResolver(tree_of(*paths))
    assert resolver.resolve("/layer.0/output/Add") == "layer.0.output"
    assert resolver.resolve("/layer.0/attention/output/Add") == "layer.0.attention.output"
    twins = ScopeResolver(tree_of("a", "a.x", "a.x.out", "a.y", "a.y.out"))
    assert twins.resolve("/a/out/Add") is None  # a.x.out or a.y.out: not guessed


def test_shared_module_through_its_aliases() -> None:
    """T5 / Marian: one embedding at `shared`, also `encoder.embed_tokens` and `decoder.embed_tokens`."""
    tree = ModuleTree(
        [
            ModuleInfo("", "Root"),
            ModuleInfo("shared", "Embedding", aliases=("encoder.embed_tokens", "decoder.embed_tokens")),
            ModuleInfo("encoder", "Stack"),
            ModuleInfo("decoder", "Stack"),
        ]
    )
    # the encoder exported alone: its own named_modules() call the embedding `embed_tokens`
    assert ScopeResolver(tree, root="encoder").resolve("/embed_tokens/Gather") == "shared"
    # the full model: named_modules() finds it first as `shared`, called from the decoder
    assert ScopeResolver(tree).resolve("/decoder/shared/Gather") == "shared"


def test_speller_takes_the_files_spelling_else_torchs_rule() -> None:
    tree = tree_of(
        "encoder", "encoder.layer", "encoder.layer.0", "encoder.layer.0.attention", "encoder.layer.0.attention.self",
        "layer1", "layer1.0", "layer1.0.conv1", "layer1.0.conv2", "head",
    )  # fmt: skip
    speller = ScopeSpeller(ScopeResolver(tree))
    speller.observe_name("/layer1/layer1.0/conv1/Conv")  # a called Sequential repeats its level
    speller.observe_name("Attention_0")  # no scope: no evidence
    assert speller.spell("layer1.0.conv1") == ("layer1", "layer1.0", "conv1")
    assert speller.spell("layer1.0.conv2") == ("layer1", "layer1.0", "conv2")  # a spelled parent, then torch's rule
    assert speller.spell("encoder.layer.0.attention.self") == ("encoder", "layer.0", "attention", "self")
    assert speller.spell("encoder.layer") == ("encoder", "layer")
    assert speller.spell("") == ()
    speller.observe_call_stack(["", "head"])  # a dynamo node's name_scopes
    assert speller.spell("head") == ("head",)


def test_speller_prefers_the_most_seen_spelling_and_the_first_on_a_tie() -> None:
    speller = ScopeSpeller(ScopeResolver(tree_of("act", "block")))
    speller.observe_name("/act_1/Relu")  # the second call of `act`
    assert speller.spell("act") == ("act_1",)
    speller.observe_name("/act/Relu")
    assert speller.spell("act") == ("act_1",)
    speller.observe_name("/act/Relu")
    assert speller.spell("act") == ("act",)
