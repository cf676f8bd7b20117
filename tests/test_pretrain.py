"""Pretraining of the miniature models: objectives learn, folders load, the cache is reused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModel, HubertConfig, Wav2Vec2Config, WavLMConfig

import convexlab.pretrain as pretrain_module
from convexlab.objectives import (
    ContrastiveObjective,
    contrastive_loss_sum,
    cosine_kmeans,
    IGNORE_TARGET,
    MaskedPredictionObjective,
    mfcc_cluster_targets,
    mix_utterances,
    sample_time_mask,
)
from convexlab.pretrain import PretrainConfig, ensure_pretrained, pretrain, pretrained_path

TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(16,) * 7,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
)
TINY_CONFIGS = {
    "wav2vec2": lambda: Wav2Vec2Config(**TINY),
    "ccc-wav2vec2": lambda: Wav2Vec2Config(**TINY),
    "hubert": lambda: HubertConfig(**TINY),
    "wavlm": lambda: WavLMConfig(**TINY),
}
TINY_RUN = PretrainConfig(
    steps=60,
    batch_size=8,
    learning_rate=3e-3,
    num_negatives=10,
    codevector_dim=16,
    num_codevectors_per_group=16,
    n_clusters=12,
    projection_dim=16,
)


def tone_clips(n_clips: int, *, seed: int = 0, n_samples: int = 16_000) -> np.ndarray:
    """Clips ``(n_clips, n_samples)`` of four 250 ms tones from a small set: structure to learn."""
    rng = np.random.default_rng(seed)
    frequencies = np.array([220.0, 330.0, 550.0, 880.0, 1320.0, 2000.0])
    t = np.arange(n_samples // 4) / 16_000
    clips = []
    for _ in range(n_clips):
        tones = [np.sin(2 * np.pi * f * t) for f in rng.choice(frequencies, size=4)]
        clips.append(0.3 * np.concatenate(tones) + 0.01 * rng.standard_normal(n_samples))
    return np.asarray(clips, dtype=np.float32)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("family", sorted(TINY_CONFIGS))
def test_objective_loss_decreases(family):
    result = pretrain(family, seed=0, config=TINY_RUN, model_config=TINY_CONFIGS[family](), waveforms=tone_clips(64), progress=False)
    losses = np.array([entry["loss"] for entry in result.log])
    assert len(losses) == TINY_RUN.steps and np.isfinite(losses).all()
    first, last = losses[:10].mean(), losses[-10:].mean()
    assert last < first - 0.05 * abs(first), f"{family}: loss {first:.3f} -> {last:.3f} did not decrease by 5 %"


def test_pretraining_is_reproducible():
    kwargs = dict(config=TINY_RUN.replace(steps=3), model_config=TINY_CONFIGS["hubert"](), waveforms=tone_clips(16), progress=False)
    a, b = pretrain("hubert", seed=1, **kwargs), pretrain("hubert", seed=1, **kwargs)
    assert [e["loss"] for e in a.log] == [e["loss"] for e in b.log]
    c = pretrain("hubert", seed=2, **kwargs)
    assert [e["loss"] for e in a.log] != [e["loss"] for e in c.log]


def test_contrastive_loss_matches_huggingface():
    """Our InfoNCE (used by ccc-wav2vec 2.0) equals Wav2Vec2ForPreTraining's when nothing is down-weighted."""
    torch.manual_seed(0)
    np.random.seed(0)
    objective = ContrastiveObjective(Wav2Vec2Config(**TINY), num_negatives=5, codevector_dim=16, num_codevectors_per_group=16, mask_length=5)
    objective.eval()
    waveforms = torch.from_numpy(tone_clips(3))
    mask, negatives = objective._mask_and_negatives(waveforms)
    with torch.no_grad():
        out = objective.model(waveforms, mask_time_indices=mask, sampled_negative_indices=negatives)
        ours = contrastive_loss_sum(
            out.projected_states, out.projected_quantized_states, mask, negatives, temperature=objective.model.config.contrastive_logits_temperature
        )
        everything_scaled = contrastive_loss_sum(
            out.projected_states, out.projected_quantized_states, mask, negatives,
            temperature=objective.model.config.contrastive_logits_temperature,
            same_cluster=torch.ones(negatives.shape, dtype=torch.bool), scale_factor=0.0,
        )
    assert torch.allclose(ours, out.contrastive_loss, rtol=1e-5)
    # scaling every distractor logit to 0 changes the loss: the weighting is really applied
    assert not torch.allclose(everything_scaled, ours)


def test_cosine_kmeans_separates_clear_clusters():
    generator = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.eye(3, 8), dim=1)
    points = torch.nn.functional.normalize(centres.repeat_interleave(20, 0) + 0.05 * torch.randn(60, 8, generator=generator), dim=1)
    ids = cosine_kmeans(points, 3, generator=torch.Generator().manual_seed(1))
    for block in ids.view(3, 20):
        assert (block == block[0]).all()
    assert len(set(ids.view(3, 20)[:, 0].tolist())) == 3


@pytest.mark.parametrize("cluster_factor, expected", [(16, 2), (4, 2), (2, 3), (1, 6)])
def test_ccc_groups_follow_the_shortest_utterances_masked_frames(cluster_factor, expected):
    """max(2, masked frames of the batch's shortest utterance // cluster_factor), the authors' rule."""
    mask = torch.zeros(3, 49, dtype=torch.bool)
    mask[0, :6], mask[1, :15], mask[2, :30] = True, True, True
    objective = pretrain_module._build_objective(
        "ccc-wav2vec2", TINY_CONFIGS["ccc-wav2vec2"](), TINY_RUN.replace(cluster_factor=cluster_factor), 0)
    assert objective.n_clusters(mask) == expected


def test_mfcc_targets_align_with_model_frames():
    clips = tone_clips(6, seed=3)
    model = AutoModel.from_config(TINY_CONFIGS["hubert"]())
    n_frames = int(model._get_feat_extract_output_lengths(torch.tensor(clips.shape[1])))
    targets = mfcc_cluster_targets(clips, n_frames=n_frames, n_clusters=5, seed=0)
    assert targets.shape == (6, n_frames) and targets.dtype == np.int64
    assert set(np.unique(targets)) <= set(range(5)) and len(np.unique(targets)) > 1
    np.testing.assert_array_equal(targets, mfcc_cluster_targets(clips, n_frames=n_frames, n_clusters=5, seed=0))
    # a 250 ms tone covers frames ~0-11: its frames share a cluster more often than frames across tones
    same_within = np.mean(targets[:, 2:10] == targets[:, 3:11])
    same_across = np.mean(targets[:, 2:10] == targets[:, 27:35])
    assert same_within > same_across


def test_mix_utterances_energy_ratio():
    clips = torch.from_numpy(tone_clips(4, seed=5))
    assert torch.equal(mix_utterances(clips, probability=0.0), clips)
    mixed = mix_utterances(clips, probability=1.0, energy_ratio_db=(3.0, 3.0), generator=torch.Generator().manual_seed(0))
    for primary, mix in zip(clips, mixed):
        added = mix - primary
        region = added != 0
        assert region.any() and region.float().mean() <= 0.5 + 1e-6
        ratio_db = 10 * torch.log10(primary[region].pow(2).sum() / added[region].pow(2).sum())
        assert abs(float(ratio_db) - 3.0) < 0.1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_time_mask_spans(seed):
    np.random.seed(seed)
    mask = sample_time_mask(8, 49, mask_prob=0.65, mask_length=5)
    assert mask.shape == (8, 49) and mask.dtype == torch.bool
    assert (mask.sum(1) >= 5).all() and (mask.sum(1) <= int(0.65 * 49 / 5 + 1) * 5).all()
    with pytest.raises(ValueError, match="mask_length"):
        sample_time_mask(2, 4, mask_prob=0.5, mask_length=5)


def test_unknown_family_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown model family 'wav3vec'"):
        ensure_pretrained("wav3vec")


@pytest.fixture
def tiny_cache(tmp_path, monkeypatch):
    """A private cache and a tiny pretraining corpus, so nothing here touches the real cache."""
    monkeypatch.setenv("CONVEXLAB_CACHE", str(tmp_path))
    monkeypatch.setattr(pretrain_module, "pretraining_waveforms", lambda config: tone_clips(8, seed=config.corpus_seed % 1000))
    return tmp_path


@pytest.mark.parametrize("family", sorted(TINY_CONFIGS))
def test_saved_folder_loads_and_is_reused(tiny_cache, family, monkeypatch):
    config = TINY_RUN.replace(steps=2, batch_size=4)
    model_config = TINY_CONFIGS[family]()
    path = ensure_pretrained(family, seed=0, config=config, model_config=model_config, progress=False)
    assert path == pretrained_path(family, seed=0, config=config, model_config=model_config)
    assert path.is_relative_to(tiny_cache) and path.name.startswith(f"{family}-") and path.name.endswith("-seed0")
    log = json.loads((path / "training_log.json").read_text())
    assert [entry["step"] for entry in log["steps"]] == [0, 1] and log["family"] == family

    model = AutoModel.from_pretrained(path)
    assert model.config.model_type == model_config.model_type
    assert model.config.num_hidden_layers == model_config.num_hidden_layers
    with torch.no_grad():
        hidden = model(torch.from_numpy(tone_clips(2)), output_hidden_states=True).hidden_states
    assert len(hidden) == model_config.num_hidden_layers + 1

    weights = next(path.glob("*.safetensors"))
    mtime = weights.stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("ensure_pretrained retrained a cached model")

    monkeypatch.setattr(pretrain_module, "pretrain", no_training)
    assert ensure_pretrained(family, seed=0, config=config, model_config=model_config) == path
    assert weights.stat().st_mtime_ns == mtime
    # another seed is another model, so it is not served from this folder
    assert pretrained_path(family, seed=1, config=config, model_config=model_config) != path


def test_interrupted_save_leaves_no_folder(tiny_cache, monkeypatch):
    config = TINY_RUN.replace(steps=1, batch_size=4)
    model_config = TINY_CONFIGS["hubert"]()

    def failing_save(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(type(AutoModel.from_config(model_config)), "save_pretrained", failing_save)
    with pytest.raises(KeyboardInterrupt):
        ensure_pretrained("hubert", config=config, model_config=model_config, progress=False)
    path = pretrained_path("hubert", config=config, model_config=model_config)
    assert not path.exists()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}")]


def test_cli_pretrains_once_and_reports(tiny_cache, monkeypatch, capsys):
    from convexlab.__main__ import main

    calls = []
    real_pretrain = pretrain_module.pretrain

    def counting_pretrain(*args, **kwargs):
        calls.append(args)
        return real_pretrain(*args, **kwargs)

    monkeypatch.setattr(pretrain_module, "pretrain", counting_pretrain)
    assert main(["pretrain", "--family", "hubert", "--steps", "2", "--threads", "1"]) == 0
    assert main(["pretrain", "--family", "hubert", "--steps", "2", "--threads", "1"]) == 0
    assert len(calls) == 1, "the second CLI call should reuse the cached model"
    out = capsys.readouterr().out
    assert out.count("mini-hubert:") == 2 and "over 2 steps" in out


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(TINY_CONFIGS))
def test_miniature_objective_learns_on_synthetic_speech(family):
    """The real miniature architecture on real (synthetic) speech: a short run lowers the loss."""
    from convexlab.data import word_task
    from convexlab.synth import synthetic_corpus

    # the contrastive objectives plateau for a while before the codebook organises: give them time
    config = PretrainConfig(steps=150, batch_size=8, n_speakers=4, n_repetitions=1)
    root = synthetic_corpus(n_words=12, n_speakers=4, n_repetitions=1, seed=config.corpus_seed, speaker_prefix="pretrain")
    dataset = word_task(root)
    result = pretrain(family, seed=0, config=config, waveforms=dataset.batch(range(len(dataset))), progress=False)
    losses = np.array([entry["loss"] for entry in result.log])
    assert losses[-10:].mean() < losses[:10].mean() - 0.05 * abs(losses[:10].mean())


def test_hidden_cluster_targets_label_every_frame_of_a_layer():
    from convexlab.objectives import hidden_cluster_targets

    encoder = AutoModel.from_config(TINY_CONFIGS["hubert"]()).eval()
    clips = tone_clips(12)
    n_frames = int(encoder._get_feat_extract_output_lengths(torch.tensor(clips.shape[1])))
    ids = hidden_cluster_targets(encoder, clips, layer=1, n_clusters=5, seed=0, batch_size=5)
    assert ids.shape == (12, n_frames) and ids.dtype == np.int64
    assert ids.min() >= 0 and ids.max() < 5 and len(np.unique(ids)) > 1
    assert np.array_equal(ids, hidden_cluster_targets(encoder, clips, layer=1, n_clusters=5, seed=0))
    with pytest.raises(ValueError, match="outside the encoder's hidden states 0..2"):
        hidden_cluster_targets(encoder, clips, layer=3, n_clusters=5)


@pytest.mark.parametrize("family", ["hubert", "wavlm"])
def test_second_iteration_trains_a_fresh_model_on_feature_clusters(family, monkeypatch):
    """Iteration 2 re-clusters iteration 1's middle layer and trains a new model on those ids."""
    import convexlab.pretrain as module

    seen = {}
    real = module.hidden_cluster_targets

    def spy(encoder, waveforms, *, layer, n_clusters, seed, **silence):
        seen.update(layer=layer, n_clusters=n_clusters, encoder=encoder)
        return real(encoder, waveforms, layer=layer, n_clusters=n_clusters, seed=seed, **silence)

    monkeypatch.setattr(module, "hidden_cluster_targets", spy)
    config = TINY_RUN.replace(steps=40, iteration2_steps=40, iteration2_clusters=7)
    result = pretrain(family, seed=0, config=config, model_config=TINY_CONFIGS[family](), waveforms=tone_clips(48), progress=False)
    assert seen["layer"] == 1 and seen["n_clusters"] == 7  # middle of 2 layers; the configured clusters
    assert result.encoder is not seen["encoder"]  # a fresh model, as in HuBERT
    iterations = [entry["iteration"] for entry in result.log]
    assert iterations == [1] * 40 + [2] * 40 and [e["step"] for e in result.log] == list(range(80))
    second = np.array([e["loss"] for e in result.log if e["iteration"] == 2])
    assert np.isfinite(second).all() and second[-8:].mean() < second[:8].mean(), "iteration 2 did not learn"


def test_second_iteration_is_ignored_by_contrastive_families_and_changes_the_key():
    config = TINY_RUN.replace(steps=4, iteration2_steps=4)
    result = pretrain("wav2vec2", seed=0, config=config, model_config=TINY_CONFIGS["wav2vec2"](),
                      waveforms=tone_clips(16), progress=False)
    assert [e["iteration"] for e in result.log] == [1] * 4
    assert pretrained_path("hubert", config=TINY_RUN) != pretrained_path("hubert", config=config)


@pytest.mark.parametrize("corpus, module_name, constant", [("synthetic", "synth", "SYNTH_VERSION"),
                                                           ("spoken", "spoken", "SPOKEN_VERSION")])
def test_a_regenerated_pretraining_corpus_gets_another_model_key(corpus, module_name, constant, monkeypatch):
    """Regression: the key held the corpus's spec but not its generator's version, so a model
    pretrained on the old audio answered for the new corpus."""
    import importlib

    config = PretrainConfig(corpus=corpus)
    before = pretrained_path("hubert", config=config)
    module = importlib.import_module(f"convexlab.{module_name}")
    monkeypatch.setattr(module, constant, getattr(module, constant) + 1)
    assert pretrained_path("hubert", config=config) != before


def test_utterance_normalised_targets_ignore_a_speakers_gain_and_colouring():
    clips = tone_clips(8, seed=5)
    n_frames = 49
    rng = np.random.default_rng(0)
    gains = rng.uniform(0.1, 1.0, size=(8, 1)).astype(np.float32)  # a microphone's level, one per utterance
    normalised = mfcc_cluster_targets(clips, n_frames=n_frames, n_clusters=6, seed=0, normalisation="utterance")
    np.testing.assert_array_equal(normalised, mfcc_cluster_targets(clips * gains, n_frames=n_frames, n_clusters=6,
                                                                    seed=0, normalisation="utterance"))
    corpus_wide = [mfcc_cluster_targets(c, n_frames=n_frames, n_clusters=6, seed=0) for c in (clips, clips * gains)]
    assert not np.array_equal(*corpus_wide)  # without CMVN the level moves frames to other clusters
    with pytest.raises(ValueError, match="utterance"):
        mfcc_cluster_targets(clips, n_frames=n_frames, normalisation="speaker")


def test_silent_frames_get_no_target_and_no_loss():
    clips = tone_clips(6, seed=1)
    clips[:, :8000] *= 1e-3  # the first half 60 dB down: background only
    targets = mfcc_cluster_targets(clips, n_frames=49, n_clusters=4, seed=0, silence_db=30.0)
    assert (targets[:, :23] == IGNORE_TARGET).all() and (targets[:, 26:] >= 0).all()
    assert set(np.unique(targets[targets >= 0])) <= set(range(4))

    torch.manual_seed(0)
    np.random.seed(0)
    objective = MaskedPredictionObjective(TINY_CONFIGS["hubert"](), n_clusters=4, mask_prob=0.8, mask_length=5,
                                          projection_dim=16)
    waves = torch.from_numpy(clips)
    ignored = torch.full((6, 49), IGNORE_TARGET)
    output = objective(waves, targets=ignored)
    assert float(output.loss.detach()) == 0.0
    output.loss.backward()  # a batch of silence still makes a (zero) gradient, not an error
    np.random.seed(0)
    scored = objective(waves, targets=torch.from_numpy(targets)).loss
    np.random.seed(0)
    relabelled = torch.from_numpy(np.where(targets == IGNORE_TARGET, 0, targets))
    assert float(scored) != float(objective(waves, targets=relabelled).loss)  # the ignored frames counted there


def test_utterance_normalisation_takes_its_statistics_from_speech_frames():
    from convexlab.objectives import mfcc_features, speech_frames

    speech = tone_clips(4, seed=4)
    twins = np.concatenate([speech, speech])  # the same words over a quiet and a loud background
    noise = np.random.default_rng(0).standard_normal((8, 10_000)).astype(np.float32)
    twins[:, :10_000] = np.array([3e-4] * 4 + [6e-3] * 4, dtype=np.float32)[:, None] * noise
    voiced = speech_frames(twins, n_frames=49, silence_db=30.0)
    assert not voiced[:, :31].any() and voiced[:, 32:].all()
    clear = np.zeros_like(voiced)
    clear[:, 36:] = True  # frames clear of the deltas' reach into the background
    by_speech = mfcc_features(twins, n_frames=49, normalisation="utterance", speech=clear)
    inner = slice(36, 49)
    np.testing.assert_allclose(by_speech[:4, inner], by_speech[4:, inner], atol=1e-3)
    by_all = mfcc_features(twins, n_frames=49, normalisation="utterance")
    assert np.abs(by_all[:4, inner] - by_all[4:, inner]).max() > 0.1  # the background moved every frame
    with pytest.raises(ValueError, match="samples"):
        speech_frames(twins[0], n_frames=49, silence_db=30.0)


def test_silence_can_be_one_class_of_its_own_in_both_iterations():
    from convexlab.objectives import hidden_cluster_targets

    clips = tone_clips(6, seed=1)
    clips[:, :8000] *= 1e-3
    ignored = mfcc_cluster_targets(clips, n_frames=49, n_clusters=4, seed=0, silence_db=30.0)
    classed = mfcc_cluster_targets(clips, n_frames=49, n_clusters=4, seed=0, silence_db=30.0, silence_class=True)
    assert (classed[ignored == IGNORE_TARGET] == 4).all()  # every silent frame: the one extra id
    np.testing.assert_array_equal(classed[ignored >= 0], ignored[ignored >= 0])  # speech clustered as before

    encoder = AutoModel.from_config(TINY_CONFIGS["hubert"]()).eval()
    second = hidden_cluster_targets(encoder, clips, layer=1, n_clusters=3, seed=0, silence_db=30.0)
    assert (second[:, :23] == IGNORE_TARGET).all() and (second[:, 26:] >= 0).all()
    second_classed = hidden_cluster_targets(encoder, clips, layer=1, n_clusters=3, seed=0, silence_db=30.0,
                                            silence_class=True)
    assert (second_classed[second == IGNORE_TARGET] == 3).all() and set(np.unique(second_classed)) <= {0, 1, 2, 3}

    config = TINY_RUN.replace(steps=3, target_silence_db=30.0, silence_target="class")
    result = pretrain("hubert", seed=0, config=config, model_config=TINY_CONFIGS["hubert"](), waveforms=clips,
                      progress=False)
    assert result.encoder is not None and len(result.log) == 3
    objective = pretrain_module._build_objective("hubert", TINY_CONFIGS["hubert"](), config, 0)
    assert objective.cluster_embeddings.shape[0] == config.n_clusters + 1  # the clusters, then silence
    ignoring = pretrain_module._build_objective("hubert", TINY_CONFIGS["hubert"](), config.replace(silence_target="ignore"), 0)
    assert ignoring.cluster_embeddings.shape[0] == config.n_clusters
    with pytest.raises(ValueError, match="silence_target"):
        pretrain("hubert", seed=0, config=config.replace(silence_target="drop"), model_config=TINY_CONFIGS["hubert"](),
                 waveforms=clips, progress=False)


def test_new_target_fields_key_only_when_set():
    default = pretrain_module._key_dict(PretrainConfig())
    assert "target_normalisation" not in default and "target_silence_db" not in default
    assert "silence_target" not in default
    assert pretrained_path("hubert", config=PretrainConfig(target_silence_db=30.0)) != pretrained_path(
        "hubert", config=PretrainConfig(target_silence_db=30.0, silence_target="class"))
    assert pretrained_path("hubert", config=PretrainConfig()) != pretrained_path(
        "hubert", config=PretrainConfig(target_silence_db=30.0))
    assert pretrained_path("hubert", config=PretrainConfig()) != pretrained_path(
        "hubert", config=PretrainConfig(target_normalisation="utterance"))


def test_contrastive_masks_only_speech_frames_when_asked():
    from convexlab.objectives import speech_only_mask

    clips = tone_clips(4, seed=2)
    clips[:, :8000] *= 1e-3
    waves = torch.from_numpy(clips)
    mask = sample_time_mask(4, 49, mask_prob=0.9, mask_length=5)
    kept = speech_only_mask(mask, waves, silence_db=30.0)
    assert not kept[:, :23].any() and (kept <= mask).all() and kept[:, 26:].any()
    silent = torch.from_numpy(np.full((4, 16_000), 1e-4, dtype=np.float32))
    silent[:, 100] = 1.0  # one loud click: every other frame is "silence", too few left to mask
    assert torch.equal(speech_only_mask(mask, silent, silence_db=30.0), mask)

    objective = ContrastiveObjective(TINY_CONFIGS["wav2vec2"](), mask_prob=0.9, mask_length=5, num_negatives=5,
                                     codevector_dim=16, num_codevectors_per_group=16, silence_db=30.0)
    np.random.seed(0)
    masked, negatives = objective._mask_and_negatives(waves)
    assert not masked[:, :23].any()
    assert torch.isfinite(objective(waves).loss)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_utterance_standardised_matches_a_per_clip_reference(seed):
    from convexlab.objectives import utterance_standardised

    rng = np.random.default_rng(seed)
    frames = rng.normal(3.0, 2.0, size=(4, 20, 5)).astype(np.float32)
    reference = rng.random((4, 20)) < 0.5
    reference[3] = False
    reference[3, 7] = True  # one reference frame only: that clip falls back to all of its frames
    ours = utterance_standardised(torch.from_numpy(frames), torch.from_numpy(reference)).numpy()
    for clip, chosen, result in zip(frames, reference, ours):
        basis = clip[chosen] if chosen.sum() > 1 else clip
        expected = (clip - basis.mean(0)) / (basis.std(0, ddof=1) + 1e-6)
        np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-5)


def test_contrastive_normalised_targets_reimplement_huggingface_and_remove_an_utterance_offset(monkeypatch):
    """With the standardisation replaced by the identity, the normalised path is exactly
    Wav2Vec2ForPreTraining's loss; with it, a constant offset of a clip's feature frames no longer
    changes the quantiser's input."""
    import convexlab.objectives as objectives

    def build(normalise):
        torch.manual_seed(0)
        return ContrastiveObjective(TINY_CONFIGS["wav2vec2"](), mask_length=5, num_negatives=5, codevector_dim=16,
                                    num_codevectors_per_group=16, silence_db=30.0, normalise_targets=normalise)

    waves = torch.from_numpy(tone_clips(3, seed=4))
    losses = {}
    for normalise in (False, True):
        objective = build(normalise)
        np.random.seed(1)
        torch.manual_seed(1)
        with monkeypatch.context() as patch:
            patch.setattr(objectives, "utterance_standardised", lambda frames, reference: frames)
            losses[normalise] = objective(waves)
    assert torch.allclose(losses[False].loss, losses[True].loss, rtol=1e-5)
    assert losses[False].parts["perplexity"] == pytest.approx(losses[True].parts["perplexity"], rel=1e-5)

    objective = build(True)
    seen = []
    objective.model.quantizer.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    shift = torch.linspace(-2, 2, objective.model.config.conv_dim[-1])
    np.random.seed(1)
    mask, _ = objective._mask_and_negatives(waves)
    objective.eval()
    with torch.no_grad():
        objective._view(waves, mask)
        extract = objective.model.wav2vec2(waves).extract_features
        monkeypatch.setattr(objective.model.wav2vec2, "forward", lambda *a, **k: type(
            "Out", (), {"extract_features": extract * 3.0 + shift, "last_hidden_state": torch.zeros(3, extract.shape[1], objective.model.config.hidden_size)})())
        objective._view(waves, mask)
    torch.testing.assert_close(seen[0], seen[1], rtol=1e-4, atol=1e-4)
    assert torch.isfinite(build(True)(waves).loss)


def test_target_normalisation_reaches_the_contrastive_objective_and_is_checked():
    on = pretrain_module._build_objective("wav2vec2", TINY_CONFIGS["wav2vec2"](), TINY_RUN.replace(target_normalisation="utterance"), 0)
    off = pretrain_module._build_objective("ccc-wav2vec2", TINY_CONFIGS["ccc-wav2vec2"](), TINY_RUN, 0)
    assert on.normalise_targets and not off.normalise_targets
    ccc = pretrain_module._build_objective("ccc-wav2vec2", TINY_CONFIGS["ccc-wav2vec2"](),
                                           TINY_RUN.replace(target_normalisation="utterance", target_silence_db=30.0), 0)
    np.random.seed(0)
    out = ccc(torch.from_numpy(tone_clips(4, seed=5)))
    assert ccc.normalise_targets and torch.isfinite(out.loss) and out.parts["cross_contrastive"] > 0
    assert pretrained_path("wav2vec2", config=PretrainConfig()) != pretrained_path(
        "wav2vec2", config=PretrainConfig(target_normalisation="utterance"))
    with pytest.raises(ValueError, match="target_normalisation='speaker'"):
        PretrainConfig(target_normalisation="speaker")


@pytest.fixture
def one_thread():
    """One torch thread (bitwise comparisons need one reduction order), restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("family", ["hubert", "wavlm"])
def test_second_iteration_continues_from_the_cached_first_iteration(tiny_cache, one_thread, family, monkeypatch):
    """A recipe with a second iteration trains its first iteration into that recipe's own cache folder
    (the recipe without the second iteration) and gives bitwise the model pretrain() gives in one go."""
    model_config = TINY_CONFIGS[family]()
    config = TINY_RUN.replace(steps=6, batch_size=4, iteration2_steps=5, iteration2_clusters=5)
    first_config = pretrain_module.first_iteration_config(config)
    assert first_config == TINY_RUN.replace(steps=6, batch_size=4)  # only the iteration-2 fields reset

    path = ensure_pretrained(family, seed=0, config=config, model_config=model_config, progress=False)
    first = pretrained_path(family, seed=0, config=first_config, model_config=model_config)
    assert (first / "training_log.json").is_file() and first != path
    log = json.loads((path / "training_log.json").read_text())
    assert log["first_iteration"] == first.name
    assert [e["iteration"] for e in log["steps"]] == [1] * 6 + [2] * 5 and [e["step"] for e in log["steps"]] == list(range(11))
    first_log = json.loads((first / "training_log.json").read_text())
    assert log["steps"][:6] == first_log["steps"] and log["seconds"] > first_log["seconds"]

    direct = pretrain(family, seed=0, config=config, model_config=model_config,
                      waveforms=pretrain_module.pretraining_waveforms(config), progress=False)
    chained = AutoModel.from_pretrained(path).state_dict()
    for name, tensor in direct.encoder.state_dict().items():
        assert torch.equal(tensor, chained[name]), f"{name} differs between pretrain() and the chained cache"
    assert [e["loss"] for e in direct.log] == [e["loss"] for e in log["steps"]]

    # another second iteration on the same first one does not train the first iteration again
    iterations = []
    real = pretrain_module._optimise
    monkeypatch.setattr(pretrain_module, "_optimise", lambda *a, **k: iterations.append(k["iteration"]) or real(*a, **k))
    other = ensure_pretrained(family, seed=0, config=config.replace(iteration2_steps=3), model_config=model_config,
                              progress=False)
    assert other != path and iterations == [2]


def test_only_models_with_a_second_iteration_carry_its_version_in_the_key(monkeypatch):
    """The committed first-iteration recipes keep their keys; a reseeded second iteration moves only its own."""
    plain, second = PretrainConfig(), PretrainConfig(iteration2_steps=10)
    assert "iteration2_version" not in pretrain_module._key_dict(plain)
    assert pretrain_module._key_dict(second)["iteration2_version"] == pretrain_module.ITERATION2_VERSION
    before = (pretrained_path("hubert", config=plain), pretrained_path("hubert", config=second))
    monkeypatch.setattr(pretrain_module, "ITERATION2_VERSION", pretrain_module.ITERATION2_VERSION + 1)
    assert pretrained_path("hubert", config=plain) == before[0]
    assert pretrained_path("hubert", config=second) != before[1]


def test_loss_trend_per_iteration():
    log = {"steps": [{"iteration": 1, "loss": float(v)} for v in range(10, 0, -1)]
                    + [{"iteration": 2, "loss": float(v)} for v in (5.0, 4.0, 3.0, 2.0, 1.0)]}
    assert pretrain_module.loss_trend(log, iteration=1) == (10.0, 1.0, 10)
    assert pretrain_module.loss_trend(log, iteration=2) == (5.0, 1.0, 5)
    assert pretrain_module.loss_trend(log)[2] == 15
    with pytest.raises(ValueError, match="no steps of iteration 2"):
        pretrain_module.loss_trend({"steps": log["steps"][:10]}, iteration=2)
