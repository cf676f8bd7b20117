"""Keys chain: a stage's key changes with every profile field it declares and with its inputs,
and with nothing else (convexlab.cache.stage_key, the stages' *_FIELDS declarations)."""

from __future__ import annotations

import dataclasses
import importlib

import pytest

from convexlab import pipeline
from convexlab.profiles import Profile, get_profile

# the modules, not the functions of the same name that convexlab's __init__ exports
finetune = importlib.import_module("convexlab.finetune")
compare = importlib.import_module("convexlab.compare")


def _other(value):
    """A different value of the same kind (an int for a None field)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 0.5
    if value is None:
        return 7
    if isinstance(value, str):
        return value + "-other"
    if isinstance(value, tuple):
        return value + ("other",)
    if isinstance(value, dict):
        return {**value, "other": 1}
    raise TypeError(f"no other value for {value!r}")


@pytest.fixture()
def fixed_inputs(monkeypatch):
    """Upstream keys held fixed, so that only the stage's own reading of the profile can move its key."""

    class _Data:
        def content_hash(self):
            return "dataset-digest"

    monkeypatch.setattr(finetune, "training_dataset", lambda task, profile: _Data())
    monkeypatch.setattr(finetune, "model_key", lambda name, *, pretrained=True, seed=0, recipe=None:
                        f"model-key-{pretrained}-{recipe}")
    monkeypatch.setattr("convexlab.models.model_key", lambda name, *, pretrained=True, seed=0, recipe=None:
                        f"model-key-{recipe}")


def _finetune_key(profile):
    return finetune.finetune_run_key("mini-hubert", "word", profile)


def _table_key(stage):
    def key(profile):
        weights = pipeline._weights_key("mini-hubert", "word", stage, profile)
        return pipeline._convexity_key(model=weights, dataset="clips", task="word", concept="word", stage=stage,
                                       profile=profile)
    return key


def _compare_key(profile):
    return compare._compare_key("full-run", "pruned-run", profile)


STAGES = {
    "finetune": (_finetune_key, set(finetune.FINETUNE_FIELDS)),
    "convexity-pretrained": (_table_key("pretrained"), set(pipeline.CONVEXITY_FIELDS)),
    "convexity-finetuned": (_table_key("finetuned"), set(pipeline.CONVEXITY_FIELDS) | set(finetune.FINETUNE_FIELDS)),
    "compare": (_compare_key, set(compare.COMPARE_FIELDS)),
}
FIELDS = [f.name for f in dataclasses.fields(Profile)]


@pytest.mark.parametrize("preset", ["lite", "paper"])
@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_stage_key_moves_with_the_fields_it_reads_and_only_those(stage, preset, fixed_inputs):
    key_of, declared = STAGES[stage]
    base = get_profile(preset)
    before = key_of(base)
    assert key_of(base) == before  # deterministic
    moved = {name for name in FIELDS if key_of(base.replace(**{name: _other(getattr(base, name))})) != before}
    assert moved == declared, f"read but undeclared: {sorted(moved - declared)}; declared but unread: {sorted(declared - moved)}"


def test_the_lite_profiles_non_default_finetuning_fields_are_read():
    """Regression: head learning rate and SpecAugment (both non-default in lite) were left out of the
    finetuned table's key, so a table from another finetuning run was returned."""
    assert {"finetune_head_learning_rate", "finetune_spec_augment"} <= set(finetune.FINETUNE_FIELDS)
    lite = get_profile("lite")
    arguments = finetune.profile_arguments(lite)
    assert arguments["head_learning_rate"] == 1e-2 and arguments["spec_augment"] is False


def test_stage_keys_move_with_their_inputs(monkeypatch):
    profile = get_profile("lite")
    table = dict(dataset="clips", task="word", concept="word", stage="pretrained", profile=profile)
    assert pipeline._convexity_key(model="a", **table) != pipeline._convexity_key(model="b", **table)
    assert pipeline._convexity_key(model="a", **table) != pipeline._convexity_key(model="a", **{**table, "dataset": "x"})
    assert compare._compare_key("f", "p", profile) != compare._compare_key("f", "q", profile)
    assert compare._compare_key("f", "p", profile) != compare._compare_key("g", "p", profile)


def test_declared_fields_are_profile_fields():
    for fields in (finetune.FINETUNE_FIELDS, pipeline.CONVEXITY_FIELDS, compare.COMPARE_FIELDS):
        assert set(fields) <= set(FIELDS)


def test_miniature_key_follows_the_pretraining_recipe_not_the_name(monkeypatch, tmp_path):
    """Regression: a miniature was keyed by its name and seed, so a changed pretraining recipe
    (objective version, PretrainConfig) served tables of the old model."""
    from convexlab import pretrain
    from convexlab.models import model_key

    monkeypatch.setenv("CONVEXLAB_CACHE", str(tmp_path))
    before = model_key("mini-hubert")
    assert model_key("mini-hubert") == before and model_key("mini-hubert", seed=1) != before
    assert model_key("mini-hubert", pretrained=False) != before
    monkeypatch.setattr(pretrain, "OBJECTIVE_VERSION", pretrain.OBJECTIVE_VERSION + 1)
    assert model_key("mini-hubert") != before
    monkeypatch.undo()
    monkeypatch.setenv("CONVEXLAB_CACHE", str(tmp_path))
    monkeypatch.setattr(pretrain.PretrainConfig, "__init__", _with_default(pretrain.PretrainConfig.__init__))
    assert model_key("mini-hubert") != before


def _with_default(init):
    def patched(self, *args, **kwargs):
        init(self, *args, **kwargs)
        field = dataclasses.fields(self)[0]
        object.__setattr__(self, field.name, _other(getattr(self, field.name)))
    return patched


def test_local_folder_key_is_its_weights_and_config_not_its_name(tmp_path):
    from convexlab.models import load_model, model_key

    first, second = tmp_path / "a", tmp_path / "b"
    load_model("mini-hubert", pretrained=False, seed=0).save_pretrained(first)
    load_model("mini-hubert", pretrained=False, seed=0).save_pretrained(second)
    assert model_key(first) == model_key(second)  # same weights in another folder: same key
    key = model_key(first)
    load_model("mini-hubert", pretrained=False, seed=1).save_pretrained(first)  # other weights, same path
    assert model_key(first) != key


def _profile_reads(*functions) -> set[str]:
    """Every ``profile.<name>`` the functions' source reads (a static guard: a new read must be declared)."""
    import ast
    import inspect
    import textwrap

    names = set()
    for function in functions:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
        names |= {node.attr for node in ast.walk(tree)
                  if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "profile"}
    return names


def test_what_the_stages_read_of_the_profile_is_declared():
    fields = set(FIELDS)
    # fields read only to build an input whose own digest enters the key (the training set's clips)
    finetune_reads = _profile_reads(finetune.finetune_for_profile, finetune.finetune_run_key, finetune.training_dataset)
    assert (finetune_reads & fields) - set(finetune.FINETUNE_FIELDS) <= {"max_train_per_class", "seed"}
    # device and batch_size say where and in what chunks the same embeddings are computed
    table_reads = _profile_reads(pipeline.convexity_by_layer, pipeline.analysis_dataset, pipeline.model_embeddings,
                                 pipeline._weights_key)
    assert (table_reads & fields) - set(pipeline.CONVEXITY_FIELDS) <= {"device", "batch_size"}
    # the profile's name is a label recorded beside the result
    compare_reads = _profile_reads(compare.compare_pruned, compare._compare_key)
    assert (compare_reads & fields) - set(compare.COMPARE_FIELDS) <= {"name"}
