"""Named pretraining recipes, and the committed pretrained miniatures made with them."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from transformers import AutoModel

import convexlab.pretrain as pretrain_module
from convexlab import recipes
from convexlab.cli import main
from convexlab.data import corpus_root
from convexlab.families import FAMILIES
from convexlab.models import miniature_config
from convexlab.pretrain import (
    COMMITTED_WEIGHTS,
    PretrainConfig,
    committed_pretrained,
    ensure_pretrained,
    export_pretrained,
    has_second_iteration,
    pretrained_path,
    recipe_configs,
)
from convexlab.profiles import Profile, get_profile
from convexlab.recipes import RECIPES, PretrainRecipe, recipe_spec

from test_pretrain import tone_clips

PRETRAIN_FIELDS = {f.name for f in dataclasses.fields(PretrainConfig)}
PROFILE_FIELDS = {f.name for f in dataclasses.fields(Profile)}
# the recipe whose seed-0 models are committed, because it is too slow to train in a cold `make book`
COMMITTED_RECIPE = "spoken-v12"
WEIGHTS_LIMIT_BYTES = 20_000_000  # the limit for all committed safetensors together (20 MB)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_names_real_fields(name):
    spec = recipe_spec(name)
    assert spec.name == name
    assert set(spec.common) <= PRETRAIN_FIELDS and set(spec.families) <= set(FAMILIES)
    for fields in spec.families.values():
        assert set(fields) <= PRETRAIN_FIELDS
    assert set(spec.model) <= {"conv_dim", "hidden_size", "num_layers"}
    assert set(spec.analysis) <= PROFILE_FIELDS
    if "n_words" in spec.common or "n_words" in spec.analysis:  # the pretraining corpus has the analysed words
        assert spec.common.get("n_words") == spec.analysis.get("n_words")
    for family in FAMILIES:
        config, model_config = recipe_configs(name, family)
        assert isinstance(config, PretrainConfig) and model_config.model_type == FAMILIES[family].model_type


def test_synthetic_v1_is_the_default_recipe():
    for family in FAMILIES:
        config, model_config = recipe_configs("synthetic-v1", family)
        assert config == PretrainConfig()
        assert model_config.to_dict() == miniature_config(family).to_dict()
        assert pretrained_path(family, config=config, model_config=model_config) == pretrained_path(family)


def _key(recipe: str, family: str) -> str:
    config, model_config = recipe_configs(recipe, family)
    return pretrained_path(family, config=config, model_config=model_config).name


def test_spoken_v1_per_family():
    for family, steps, normalisation in [("wav2vec2", 6000, "corpus"), ("ccc-wav2vec2", 6000, "corpus"),
                                         ("hubert", 3000, "utterance"), ("wavlm", 3000, "utterance")]:
        config, model_config = recipe_configs("spoken-v1", family)
        assert (config.steps, config.target_normalisation) == (steps, normalisation)
        assert (config.corpus, config.n_words, config.n_speakers, config.n_repetitions) == ("spoken", 35, 60, 2)
        assert config.target_silence_db == 30.0
        assert model_config.num_hidden_layers == 12 and model_config.hidden_size == 96
        assert model_config.intermediate_size == 288 and list(model_config.conv_dim) == [64] * 7
    # the families' models differ, so each has its own cache folder
    assert len({_key("spoken-v1", f) for f in FAMILIES}) == len(FAMILIES)


def test_spoken_v2_and_v3_change_one_lever_each():
    """spoken-v2 is spoken-v1 at width 64; spoken-v3 adds the second iteration to the masked-prediction
    families only, so its contrastive models are spoken-v1's, cache key for key (and committed weights)."""
    for family in FAMILIES:
        v1, v1_model = recipe_configs("spoken-v1", family)
        v2, v2_model = recipe_configs("spoken-v2", family)
        assert v2 == v1 and (v2_model.hidden_size, v2_model.intermediate_size, v2_model.num_hidden_layers) == (64, 192, 12)
        assert _key("spoken-v2", family) != _key("spoken-v1", family)
        v3, _ = recipe_configs("spoken-v3", family)
        if family in ("hubert", "wavlm"):
            assert v3 == v1.replace(iteration2_steps=3000) and v3.iteration2_clusters == 100
            assert _key("spoken-v3", family) != _key("spoken-v1", family)
        else:
            assert v3 == v1 and _key("spoken-v3", family) == _key("spoken-v1", family)


def test_spoken_v4_slows_the_words_of_both_corpora_only():
    """spoken-v4 is spoken-v1 with the speakers' rates drawn from 45-75 words per minute, in the
    pretraining corpus and the analysis corpus alike; everything else is spoken-v1's."""
    v1_spec, v4_spec = recipe_spec("spoken-v1"), recipe_spec("spoken-v4")
    assert v4_spec.analysis == {**v1_spec.analysis, "speaking_rate": (45, 75)}
    assert (v4_spec.model, v4_spec.families) == (v1_spec.model, v1_spec.families)
    assert get_profile("lite", **v4_spec.analysis).speaking_rate == (45, 75)
    for family in FAMILIES:
        v1, v1_model = recipe_configs("spoken-v1", family)
        v4, v4_model = recipe_configs("spoken-v4", family)
        assert v4 == v1.replace(speaking_rate=(45, 75)) and v4_model.to_dict() == v1_model.to_dict()
        assert _key("spoken-v4", family) != _key("spoken-v1", family)


@pytest.mark.parametrize("recipe, base, change", [
    ("spoken-v6", "spoken-v5", {"iteration2_layer": 4}),
    ("spoken-v7", "spoken-v5", {"iteration2_clusters": 500}),
    ("spoken-v8", "spoken-v5", {"iteration2_layer": 4, "iteration2_clusters": 500}),
    ("spoken-v9", "spoken-v6", {"n_other_words": 105}),
    ("spoken-v11", "spoken-v5", {"iteration2_layer": 2}),
])
def test_masked_prediction_variants_change_one_lever(recipe, base, change):
    """Each variant changes HuBERT's and WavLM's pretraining by ``change`` only; the contrastive
    families keep the base's models (spoken-v4's), key for key, and the analysis corpus is unchanged."""
    assert recipe_spec(recipe).analysis == recipe_spec(base).analysis
    for family in FAMILIES:
        before, before_model = recipe_configs(base, family)
        after, after_model = recipe_configs(recipe, family)
        assert after_model.to_dict() == before_model.to_dict()
        if family in ("hubert", "wavlm"):
            assert after == before.replace(**change) and _key(recipe, family) != _key(base, family)
        else:
            assert after == before and _key(recipe, family) == _key("spoken-v4", family)


def test_spoken_v10_broadens_every_familys_pretraining_words():
    for family in FAMILIES:
        v9, _ = recipe_configs("spoken-v9", family)
        v10, _ = recipe_configs("spoken-v10", family)
        assert v10 == v9.replace(n_other_words=105)
        assert (_key("spoken-v10", family) == _key("spoken-v9", family)) == (family in ("hubert", "wavlm"))


def test_spoken_v12_changes_only_ccc_wav2vec2s_cluster_factor():
    """spoken-v12 is spoken-v6 with cluster_factor 1 for ccc-wav2vec2; every other family keeps
    spoken-v6's models (HuBERT, WavLM) or spoken-v4's (wav2vec2), key for key."""
    assert recipe_spec("spoken-v12").analysis == recipe_spec("spoken-v6").analysis
    for family in FAMILIES:
        v6, v6_model = recipe_configs("spoken-v6", family)
        v12, v12_model = recipe_configs("spoken-v12", family)
        assert v12_model.to_dict() == v6_model.to_dict()
        if family == "ccc-wav2vec2":
            assert v6.cluster_factor == 16 and v12 == v6.replace(cluster_factor=1)
            assert _key("spoken-v12", family) != _key("spoken-v6", family)
        else:
            assert v12 == v6 and _key("spoken-v12", family) == _key("spoken-v6", family)


def test_a_family_field_overrides_a_common_one(monkeypatch):
    spec = dataclasses.replace(recipe_spec("spoken-v1"), name="override", families={"hubert": {"n_speakers": 7}})
    monkeypatch.setitem(RECIPES, "override", spec)
    assert recipe_configs("override", "hubert")[0].n_speakers == 7
    assert recipe_configs("override", "wavlm")[0].n_speakers == 60


def test_a_speaking_rate_on_the_synthetic_corpus_is_refused():
    profile = get_profile("lite-synthetic", speaking_rate=(45, 75))
    with pytest.raises(ValueError, match="only the spoken corpus"):
        corpus_root(profile)


def test_miniature_overrides_resize_the_model():
    config = miniature_config("hubert", conv_dim=48, hidden_size=80, num_layers=3)
    assert list(config.conv_dim) == [48] * 7 and config.num_hidden_layers == 3
    assert (config.hidden_size, config.intermediate_size, config.classifier_proj_size) == (80, 240, 80)
    model = AutoModel.from_config(config)
    assert len(model.encoder.layers) == 3 and model.feature_extractor.conv_layers[0].conv.out_channels == 48


def test_unknown_recipe_and_conflicting_arguments():
    with pytest.raises(ValueError, match="spoken-v1"):
        recipe_spec("spoken-v0")
    with pytest.raises(ValueError, match="Unknown pretraining recipe"):
        recipe_configs("nope", "hubert")
    with pytest.raises(TypeError, match="either recipe"):
        ensure_pretrained("hubert", recipe="spoken-v1", config=PretrainConfig())


TINY_RECIPE = PretrainRecipe(
    name="tiny-test",
    description="a 2-step run of a 2-layer miniature, for tests",
    model={"conv_dim": 16, "hidden_size": 32, "num_layers": 2},
    common={"steps": 2, "batch_size": 4, "n_clusters": 6, "projection_dim": 16, "codevector_dim": 16,
            "num_codevectors_per_group": 16, "num_negatives": 5},
)


@pytest.fixture
def tiny_world(tmp_path, monkeypatch):
    """A private cache, an empty committed-weights folder, a tone corpus and the tiny recipe."""
    monkeypatch.setenv("CONVEXLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(pretrain_module, "COMMITTED_WEIGHTS", tmp_path / "weights")
    monkeypatch.setattr(pretrain_module, "pretraining_waveforms", lambda config: tone_clips(8))
    monkeypatch.setitem(recipes.RECIPES, TINY_RECIPE.name, TINY_RECIPE)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path
    torch.set_num_threads(threads)


@pytest.mark.parametrize("family", ["hubert", "wav2vec2"])
def test_committed_copy_is_served_without_training(tiny_world, monkeypatch, family):
    trained = ensure_pretrained(family, recipe="tiny-test", progress=False)
    assert trained.is_relative_to(tiny_world / "cache")
    committed = export_pretrained(trained, tiny_world / "weights", recipe="tiny-test")
    assert committed.name == trained.name
    assert sorted(p.name for p in committed.iterdir()) == [
        "config.json", "model.safetensors", "provenance.json", "training_log.json"]
    provenance = json.loads((committed / "provenance.json").read_text())
    assert provenance["recipe"] == "tiny-test" and provenance["seed"] == 0 and provenance["family"] == family
    assert provenance["command"] == (f"python -m convexlab pretrain --recipe tiny-test --family {family} --seed 0 "
                                     "--threads 1 --export")

    def no_training(*args, **kwargs):
        raise AssertionError("trained although a committed copy exists")

    monkeypatch.setattr(pretrain_module, "pretrain", no_training)
    for folder in (tiny_world / "cache").rglob(trained.name):
        for file in folder.iterdir():
            file.unlink()
        folder.rmdir()
    assert ensure_pretrained(family, recipe="tiny-test") == committed
    config, model_config = recipe_configs("tiny-test", family)
    assert committed_pretrained(family, config=config, model_config=model_config) == committed
    # another seed, or any changed field, is another model: never answered by the committed copy
    assert committed_pretrained(family, seed=1, config=config, model_config=model_config) is None
    assert committed_pretrained(family, config=config.replace(steps=3), model_config=model_config) is None
    with pytest.raises(AssertionError, match="committed copy"):
        ensure_pretrained(family, seed=1, recipe="tiny-test")


def test_re_export_under_another_recipe_of_the_same_key_rewrites_the_provenance(tiny_world, monkeypatch):
    """Two recipe names with the same fields make the same model; exporting it again under the second
    name (even from the committed copy that ensure_pretrained now serves) must say so in provenance.json."""
    monkeypatch.setitem(recipes.RECIPES, "tiny-test-2", dataclasses.replace(TINY_RECIPE, name="tiny-test-2"))
    trained = ensure_pretrained("hubert", recipe="tiny-test", progress=False)
    committed = export_pretrained(trained, tiny_world / "weights", recipe="tiny-test")
    weights = (committed / "model.safetensors").read_bytes()
    assert ensure_pretrained("hubert", recipe="tiny-test-2", progress=False) == committed  # same key
    again = export_pretrained(committed, tiny_world / "weights", recipe="tiny-test-2")
    assert again == committed and (again / "model.safetensors").read_bytes() == weights
    provenance = json.loads((again / "provenance.json").read_text())
    assert provenance["recipe"] == "tiny-test-2" and "--recipe tiny-test-2 " in provenance["command"]
    assert sorted(p.name for p in (tiny_world / "weights").iterdir()) == [committed.name]  # no leftovers


def test_export_checks_its_input(tiny_world):
    trained = ensure_pretrained("hubert", recipe="tiny-test", progress=False)
    with pytest.raises(ValueError, match="not made by recipe 'spoken-v1'"):
        export_pretrained(trained, tiny_world / "weights", recipe="spoken-v1")
    (trained / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        export_pretrained(trained, tiny_world / "weights", recipe="tiny-test")
    assert not (tiny_world / "weights").exists() or not any((tiny_world / "weights").iterdir())


def test_pretrain_command_exports(tiny_world, capsys):
    assert main(["pretrain", "--recipe", "tiny-test", "--family", "wavlm", "--threads", "1",
                 "--export", str(tiny_world / "exported")]) == 0
    (folder,) = (tiny_world / "exported").iterdir()
    assert folder.name.startswith("wavlm-") and (folder / "provenance.json").is_file()
    assert str(folder) in capsys.readouterr().out


def _committed_folders() -> list:
    return sorted(p for p in COMMITTED_WEIGHTS.iterdir() if p.is_dir()) if COMMITTED_WEIGHTS.is_dir() else []


def test_committed_weights_are_the_current_recipe():
    """The committed folders are exactly the committed recipe's seed-0 models under today's keys: a changed
    recipe, objective version, corpus generator or espeak-ng leaves them behind, and this fails."""
    expected = {pretrained_path(f, seed=0, config=recipe_configs(COMMITTED_RECIPE, f)[0],
                                model_config=recipe_configs(COMMITTED_RECIPE, f)[1]).name for f in FAMILIES}
    assert {p.name for p in _committed_folders()} == expected
    assert sum(f.stat().st_size for p in _committed_folders() for f in p.glob("*.safetensors")) <= WEIGHTS_LIMIT_BYTES


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_committed_weights_load_and_match_their_config(family):
    config, model_config = recipe_configs(COMMITTED_RECIPE, family)
    folder = committed_pretrained(family, seed=0, config=config, model_config=model_config)
    assert folder is not None, f"no committed mini-{family} of {COMMITTED_RECIPE}; run its provenance command"
    provenance = json.loads((folder / "provenance.json").read_text())
    log = json.loads((folder / "training_log.json").read_text())
    assert (provenance["recipe"], provenance["family"], provenance["seed"]) == (COMMITTED_RECIPE, family, 0)
    # fields added since they were trained are absent from the log and at their defaults in the recipe
    assert set(log["config"]) <= {f.name for f in dataclasses.fields(PretrainConfig)}
    # a second iteration logs its steps after the first iteration's
    steps = config.steps + (config.iteration2_steps if has_second_iteration(family, config) else 0)
    assert PretrainConfig(**log["config"]) == config and len(log["steps"]) == steps
    assert ensure_pretrained(family, recipe=COMMITTED_RECIPE) == folder

    model = AutoModel.from_pretrained(folder).eval()
    loaded, wanted = (json.loads(json.dumps(c.to_dict())) for c in (model.config, model_config))  # tuples as lists
    volatile = {"transformers_version", "_name_or_path", "architectures", "torch_dtype", "dtype"}
    assert {k: v for k, v in loaded.items() if k not in volatile} == {k: v for k, v in wanted.items() if k not in volatile}
    with torch.no_grad():
        hidden = model(torch.from_numpy(tone_clips(2)), output_hidden_states=True).hidden_states
    assert len(hidden) == model_config.num_hidden_layers + 1 and hidden[-1].shape == (2, 49, model_config.hidden_size)
    assert all(torch.isfinite(h).all() for h in hidden)
    # pretrained, not random: the weights differ from a fresh initialisation of the same config
    torch.manual_seed(0)
    fresh = AutoModel.from_config(model_config)
    assert not torch.equal(model.encoder.layers[0].attention.q_proj.weight, fresh.encoder.layers[0].attention.q_proj.weight)


# --- the recipe threads from the profile to every key and load -------------------------------------


def test_recipe_is_part_of_the_model_key():
    from convexlab.models import model_key

    for pretrained in (True, False):
        default = model_key("mini-hubert", pretrained=pretrained)
        assert model_key("mini-hubert", pretrained=pretrained, recipe="synthetic-v1") == default
        assert model_key("mini-hubert", pretrained=pretrained, recipe="spoken-v1") != default


def test_random_miniature_has_the_recipe_size():
    from convexlab.models import load_model

    default = load_model("mini-wavlm", pretrained=False)
    spoken = load_model("mini-wavlm", pretrained=False, recipe="spoken-v1")
    _, spoken_config = recipe_configs("spoken-v1", "wavlm")
    assert default.config.num_hidden_layers == miniature_config("wavlm").num_hidden_layers
    assert spoken.config.num_hidden_layers == spoken_config.num_hidden_layers == 12
    assert spoken.config.hidden_size == spoken_config.hidden_size == 96
    # the same seed gives the same random weights under one recipe
    again = load_model("mini-wavlm", pretrained=False, recipe="spoken-v1")
    first = next(iter(spoken.state_dict().values()))
    assert torch.equal(first, next(iter(again.state_dict().values())))


def test_profile_recipe_reaches_finetuning_and_its_key():
    from convexlab.finetune import finetune_run_key, profile_arguments
    from convexlab.profiles import get_profile

    lite = get_profile("lite")
    assert profile_arguments(lite)["recipe"] == lite.pretrain_recipe
    other = "spoken-v1" if lite.pretrain_recipe != "spoken-v1" else "synthetic-v1"
    changed = lite.replace(pretrain_recipe=other)
    assert profile_arguments(changed)["recipe"] == other
    key = finetune_run_key("mini-hubert", "word", lite)
    assert finetune_run_key("mini-hubert", "word", changed) != key
    assert finetune_run_key("mini-hubert", "word", lite) == key  # deterministic


def test_every_profile_names_a_known_recipe():
    from convexlab.profiles import PROFILES

    for profile in PROFILES.values():
        assert recipe_spec(profile.pretrain_recipe).name == profile.pretrain_recipe


def test_lite_is_lite_synthetic_in_the_committed_recipes_world():
    """lite (the default) changes only the world of lite-synthetic (the recipe's analysis corpus and
    the recipe) and the finetuning learning rate, clips and dropout; its seed is the one whose
    weights are committed, so it never pretrains."""
    from convexlab.profiles import get_profile

    lite, spoken = get_profile("lite-synthetic"), get_profile("lite")
    spec = recipe_spec(spoken.pretrain_recipe)
    assert spoken.pretrain_recipe == COMMITTED_RECIPE
    assert {k: getattr(spoken, k) for k in spec.analysis} == spec.analysis
    changed = {k for k, v in spoken.to_dict().items() if lite.to_dict()[k] != v}
    assert {"name", "corpus", "pretrain_recipe"} <= changed <= {"name", "pretrain_recipe", "learning_rate", "max_train_per_class",
                                                          "finetune_dropout"} | set(spec.analysis)
    for family in FAMILIES:
        config, model_config = recipe_configs(spoken.pretrain_recipe, family)
        assert committed_pretrained(family, seed=spoken.seed, config=config, model_config=model_config) is not None


def test_world_description_follows_the_profile():
    from convexlab import pipeline
    from convexlab.profiles import get_profile

    lite = pipeline.world_description("lite-synthetic")
    assert "synthetic" in lite and f"{miniature_config('hubert').num_hidden_layers} layers" in lite
    spoken = pipeline.world_description("lite")
    assert "espeak-ng" in spoken and "12 layers x width 96" in spoken and f"'{COMMITTED_RECIPE}'" in spoken
    assert "35 words x 24 speakers x 3 repetitions, 45-75 words per minute" in pipeline.corpus_description("lite")
    assert "per minute" not in pipeline.corpus_description("lite-synthetic")  # synthetic words have no speaking rate
    paper = pipeline.world_description("paper")
    assert paper.startswith("Speech Commands v0.02") and "facebook/wav2vec2-base" in paper
    assert "7 words" in pipeline.corpus_description(get_profile("lite-synthetic", n_words=7))
