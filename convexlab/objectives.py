"""Self-supervised objectives for the miniature models, one per family.

Each objective is a ``torch.nn.Module`` that owns the family's Hugging Face *base* model (the
part that is saved and analysed later, reachable as ``objective.encoder``) plus the
pretraining-only heads, and maps a batch of waveforms ``(B, S)`` to a scalar loss:

- **wav2vec 2.0** (Baevski et al. 2020, arXiv 2006.11477): contrastive loss between the
  transformer output at masked frames and Gumbel-quantised targets, against distractors from
  other masked frames of the same utterance, plus the codebook diversity loss. Computed by
  ``transformers.Wav2Vec2ForPreTraining`` itself, with the mask and distractors drawn by
  HF's ``_compute_mask_indices`` and ``_sample_negative_indices``.
- **ccc-wav2vec 2.0** (Lodagala, Ghosh & Umesh 2023, arXiv 2210.02592): the same contrastive
  loss, but distractors that fall in the positive's k-means cluster (cosine k-means on the
  quantised targets of the batch, ``masked frames per utterance // cluster_factor`` clusters)
  have their similarity scaled by ``scale_factor``; plus the cross-contrastive losses between
  the original utterance and an augmented copy (context of one against the quantised targets of
  the other, weights 1, 0.5, 0.5 as in the authors' base config). Simplification: the
  augmentation is white noise and a synthetic reverb (the authors also add MUSAN noise, which
  is not available offline). Known weakness: in the lite profile's 300-step run the codebook
  collapses (perplexity ~12 of 128 codes) and the model learns much less than the other
  families; scaling the diversity loss by the number of contrastive terms prevented the
  collapse but left layer convexity at the random model's level, so the authors' weights stay.
- **HuBERT** (Hsu et al. 2021, arXiv 2106.07447): masked prediction of frame-level k-means
  cluster ids; first iteration, i.e. clusters of MFCC + delta + delta-delta features (see
  :func:`mfcc_cluster_targets`). Logits are cosine similarities between a projection of the
  transformer output and learned cluster embeddings, over a temperature 0.1; the loss is on
  masked frames only. Masking uses ``HubertModel``'s own ``mask_time_indices`` argument.
  The second iteration (:func:`hidden_cluster_targets`) re-clusters the first-iteration model's
  middle-layer features and trains a fresh model to predict those ids, as in the paper.
- **WavLM** (Chen et al. 2022, arXiv 2110.13900): the HuBERT objective on ``WavLMModel`` with
  utterance mixing: with some probability, a random crop (at most half the length) of another
  utterance of the batch is added at an energy ratio drawn from [-5, 5] dB; the targets stay
  those of the primary utterance, so the model learns to attend to the main speaker.

All losses are normalised per masked frame so that their scale does not depend on batch size.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2ForPreTraining, WavLMConfig, WavLMModel

from convexlab.families import SAMPLE_RATE
from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices, _sample_negative_indices

__all__ = [
    "ObjectiveOutput",
    "ContrastiveObjective",
    "ClusterContrastiveObjective",
    "MaskedPredictionObjective",
    "mfcc_cluster_targets",
    "mfcc_features",
    "IGNORE_TARGET",
    "TARGET_NORMALISATIONS",
    "speech_frames",
    "utterance_standardised",
    "speech_only_mask",
    "hidden_cluster_targets",
    "mix_utterances",
    "sample_time_mask",
]


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor  # scalar loss to minimise (per masked frame)
    parts: dict[str, float] = field(default_factory=dict)  # named components, for the training log


IGNORE_TARGET = -100  # a frame's target id meaning "no loss here" (torch's cross-entropy ignore_index)
TARGET_NORMALISATIONS = ("corpus", "utterance")  # how targets are standardised: over the corpus, or per utterance


def speech_only_mask(mask: torch.Tensor, waveforms: torch.Tensor, *, silence_db: float, min_masks: int = 2) -> torch.Tensor:
    """``mask`` bool ``(B, T)`` without the frames more than ``silence_db`` below each clip's loudest frame.

    The contrastive families' counterpart of masked prediction's untargeted silence: a masked
    background-noise frame (and a noise distractor) asks the model for the speaker's channel, not
    for speech. An utterance left with fewer than ``min_masks`` masked frames keeps its whole mask.
    """
    speech = speech_frames(waveforms.detach().cpu().numpy(), n_frames=mask.shape[1], silence_db=silence_db)
    kept = mask & torch.from_numpy(speech).to(mask.device)
    too_few = kept.sum(1) < min_masks
    kept[too_few] = mask[too_few]
    return kept


def sample_time_mask(
    batch_size: int, n_frames: int, *, mask_prob: float, mask_length: int, min_masks: int = 2
) -> torch.Tensor:
    """Span mask over model frames, as wav2vec 2.0/HuBERT draw it: bool ``(batch_size, n_frames)``.

    ``mask_prob * n_frames / mask_length`` span starts per utterance (spans may overlap), drawn
    with NumPy's global generator by HF's ``_compute_mask_indices``; seed it for reproducibility.
    """
    if not 0.0 < mask_prob <= 1.0:
        raise ValueError(f"mask_prob must be in (0, 1], got {mask_prob}; typical values are 0.5-0.8.")
    if mask_length >= n_frames:
        raise ValueError(
            f"mask_length={mask_length} is not shorter than the {n_frames} model frames of a clip; "
            "use a shorter mask_length."
        )
    mask = _compute_mask_indices((batch_size, n_frames), mask_prob=mask_prob, mask_length=mask_length, min_masks=min_masks)
    return torch.from_numpy(mask)


def _scalar(value: torch.Tensor | float) -> float:
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


def _frames_per_clip(model: nn.Module, n_samples: int) -> int:
    return int(model._get_feat_extract_output_lengths(torch.tensor(n_samples)).item())


@dataclass
class _ContrastiveView:
    predicted: torch.Tensor  # (B, T, P) projected transformer output
    targets: torch.Tensor  # (B, T, P) projected quantised feature-encoder frames
    perplexity: torch.Tensor  # scalar codebook perplexity over the masked frames


class ContrastiveObjective(nn.Module):
    """wav2vec 2.0's objective, computed by ``Wav2Vec2ForPreTraining``.

    The Gumbel temperature decays geometrically from ``gumbel_start`` to ``gumbel_end`` over the
    run (wav2vec 2.0 decays 2 -> 0.5 over its first ~280k updates).

    ``normalise_targets``: the quantiser's input (the feature encoder's frames) is standardised
    per utterance and dimension, with statistics over the speech frames when ``silence_db`` is
    set: the contrastive counterpart of CMVN on masked prediction's MFCC targets, so that what is
    constant over an utterance (a speaker's voice and channel) is not part of what the context
    must predict. The transformer's input is left as it is. Not in wav2vec 2.0; off by default.
    """

    def __init__(
        self,
        config: Wav2Vec2Config,
        *,
        mask_prob: float = 0.65,
        mask_length: int = 10,
        num_negatives: int = 100,
        codevector_dim: int = 256,
        num_codevector_groups: int = 2,
        num_codevectors_per_group: int = 320,
        diversity_weight: float = 0.1,
        logits_temperature: float = 0.1,
        gumbel_start: float = 2.0,
        gumbel_end: float = 0.5,
        silence_db: float | None = None,
        normalise_targets: bool = False,
    ) -> None:
        super().__init__()
        if codevector_dim % num_codevector_groups:
            raise ValueError(
                f"codevector_dim={codevector_dim} must be divisible by num_codevector_groups={num_codevector_groups}."
            )
        config = copy.deepcopy(config)
        # pretraining-only fields: they size the quantiser and projection heads, not the encoder
        config.num_negatives = num_negatives
        config.codevector_dim = codevector_dim
        config.proj_codevector_dim = codevector_dim
        config.num_codevector_groups = num_codevector_groups
        config.num_codevectors_per_group = num_codevectors_per_group
        config.diversity_loss_weight = diversity_weight
        config.contrastive_logits_temperature = logits_temperature
        self.model = Wav2Vec2ForPreTraining(config)
        self.mask_prob = mask_prob
        self.mask_length = mask_length
        self.num_negatives = num_negatives
        self.gumbel_start = gumbel_start
        self.gumbel_end = gumbel_end
        self.silence_db = silence_db
        self.normalise_targets = normalise_targets

    @property
    def encoder(self) -> nn.Module:
        """The ``Wav2Vec2Model`` being pretrained (what gets saved)."""
        return self.model.wav2vec2

    def gumbel_temperature(self, progress: float) -> float:
        return self.gumbel_start * (self.gumbel_end / self.gumbel_start) ** min(max(progress, 0.0), 1.0)

    def _mask_and_negatives(self, waveforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch_size, n_samples = waveforms.shape
        n_frames = _frames_per_clip(self.model, n_samples)
        mask = sample_time_mask(batch_size, n_frames, mask_prob=self.mask_prob, mask_length=self.mask_length)
        if self.silence_db is not None:
            mask = speech_only_mask(mask, waveforms, silence_db=self.silence_db)
        negatives = _sample_negative_indices((batch_size, n_frames), self.num_negatives, mask_time_indices=mask.numpy())
        return mask.to(waveforms.device), torch.from_numpy(negatives).long().to(waveforms.device)

    def _view(self, waveforms: torch.Tensor, mask: torch.Tensor, *, speech_of: torch.Tensor | None = None) -> _ContrastiveView:
        """Projected context and quantised targets ``(B, T, P)`` of ``waveforms`` ``(B, S)`` under ``mask``.

        ``speech_of``: the waveforms ``(B, S)`` whose speech frames give the normalisation's
        statistics (default ``waveforms``; an augmented copy uses its original's).
        """
        if not self.normalise_targets:
            out = self.model(waveforms, mask_time_indices=mask)
            return _ContrastiveView(out.projected_states, out.projected_quantized_states, out.codevector_perplexity)
        # Wav2Vec2ForPreTraining.forward, with the quantiser's input standardised per utterance
        out = self.model.wav2vec2(waveforms, mask_time_indices=mask)
        features = self.model.dropout_features(out.extract_features)  # (B, T, conv_dim[-1])
        reference = waveforms if speech_of is None else speech_of
        speech = speech_frames(reference.detach().cpu().numpy(), n_frames=features.shape[1], silence_db=self.silence_db)
        features = utterance_standardised(features, torch.from_numpy(speech))
        quantized, perplexity = self.model.quantizer(features, mask_time_indices=mask)
        return _ContrastiveView(self.model.project_hid(out.last_hidden_state), self.model.project_q(quantized), perplexity)

    def _diversity(self, perplexity: torch.Tensor) -> torch.Tensor:
        n_codevectors = self.model.config.num_codevectors_per_group * self.model.config.num_codevector_groups
        return (n_codevectors - perplexity) / n_codevectors

    def forward(self, waveforms: torch.Tensor, *, progress: float = 0.0) -> ObjectiveOutput:
        """``waveforms``: float ``(B, S)``; ``progress``: fraction of the run done, in [0, 1]."""
        self.model.set_gumbel_temperature(self.gumbel_temperature(progress))
        mask, negatives = self._mask_and_negatives(waveforms)
        n_masked = mask.sum()
        if not self.normalise_targets:  # the loss exactly as Wav2Vec2ForPreTraining computes it
            out = self.model(waveforms, mask_time_indices=mask, sampled_negative_indices=negatives)
            contrastive, perplexity, loss = out.contrastive_loss, out.codevector_perplexity, out.loss / n_masked
        else:
            view = self._view(waveforms, mask)
            contrastive = contrastive_loss_sum(view.predicted, view.targets, mask, negatives,
                                               temperature=self.model.config.contrastive_logits_temperature)
            perplexity = view.perplexity
            loss = contrastive / n_masked + self.model.config.diversity_loss_weight * self._diversity(perplexity)
        return ObjectiveOutput(
            loss=loss,
            parts={
                "contrastive": _scalar(contrastive / n_masked),
                "diversity": _scalar(self._diversity(perplexity)),
                "perplexity": _scalar(perplexity),
            },
        )


def cosine_kmeans(points: torch.Tensor, n_clusters: int, *, n_iter: int = 10, generator: torch.Generator | None = None) -> torch.Tensor:
    """Cluster ids ``(N,)`` of unit vectors ``points`` ``(N, D)`` by spherical k-means."""
    n_clusters = min(n_clusters, points.shape[0])
    start = torch.randperm(points.shape[0], generator=generator)[:n_clusters].to(points.device)
    centroids = points[start].clone()
    for _ in range(n_iter):
        assignment = (points @ centroids.T).argmax(dim=1)
        summed = torch.zeros_like(centroids).index_add_(0, assignment, points)
        # an emptied cluster keeps its old centroid rather than collapsing to zero
        centroids = torch.where(summed.norm(dim=1, keepdim=True) > 0, F.normalize(summed, dim=1), centroids)
    return (points @ centroids.T).argmax(dim=1)


def contrastive_loss_sum(
    predicted: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    negative_indices: torch.Tensor,
    *,
    temperature: float,
    same_cluster: torch.Tensor | None = None,
    scale_factor: float = 1.0,
) -> torch.Tensor:
    """Summed InfoNCE loss over masked frames, with optional down-weighting of distractors.

    ``predicted``, ``targets``: ``(B, T, P)`` projected context and quantised vectors;
    ``mask``: bool ``(B, T)``; ``negative_indices``: ``(B, T, K)`` flat indices into ``B*T``;
    ``same_cluster``: bool ``(B, T, K)``, distractors whose logit is multiplied by
    ``scale_factor`` (ccc-wav2vec 2.0). A distractor identical to the positive is ignored.
    """
    batch_size, n_frames, dim = targets.shape
    negatives = targets.reshape(-1, dim)[negative_indices.reshape(-1)].view(batch_size, n_frames, -1, dim)
    candidates = torch.cat([targets.unsqueeze(2), negatives], dim=2)  # (B, T, 1+K, P)
    logits = F.cosine_similarity(predicted.unsqueeze(2).float(), candidates.float(), dim=-1) / temperature
    distractor_logits = logits[..., 1:]
    if same_cluster is not None:
        distractor_logits = torch.where(same_cluster, distractor_logits * scale_factor, distractor_logits)
    neg_is_pos = (negatives == targets.unsqueeze(2)).all(-1)
    distractor_logits = distractor_logits.masked_fill(neg_is_pos, float("-inf"))
    logits = torch.cat([logits[..., :1], distractor_logits], dim=-1)[mask]  # (n_masked, 1+K)
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device), reduction="sum")


def augment_for_cross_contrast(waveforms: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """An augmented copy ``(B, S)``: white noise (p=0.6, 5-30 dB SNR) and a synthetic reverb (p=0.7).

    Stands in for the ccc-wav2vec 2.0 chain (noise, reverb, MUSAN background noise).
    """
    batch_size, n_samples = waveforms.shape
    out = waveforms.clone()
    power = waveforms.pow(2).mean(dim=1, keepdim=True).clamp_min(1e-8)
    snr_db = 5 + 25 * torch.rand(batch_size, 1, generator=generator)
    noise = torch.randn(waveforms.shape, generator=generator) * torch.sqrt(power / 10 ** (snr_db / 10))
    add_noise = torch.rand(batch_size, 1, generator=generator) < 0.6
    out = torch.where(add_noise.to(out.device), out + noise.to(out.device), out)
    # reverb: an exponentially decaying noise impulse response, RT60 of 0.1-0.5 s
    ir_len = 4000
    t = torch.arange(ir_len) / SAMPLE_RATE
    rt60 = 0.1 + 0.4 * torch.rand(batch_size, 1, generator=generator)
    ir = torch.randn(batch_size, ir_len, generator=generator) * torch.exp(-6.9 * t / rt60)
    ir[:, 0] = 1.0
    ir = ir / ir.norm(dim=1, keepdim=True)
    n_fft = 1 << math.ceil(math.log2(n_samples + ir_len))
    wet = torch.fft.irfft(torch.fft.rfft(out.cpu(), n_fft) * torch.fft.rfft(ir, n_fft), n_fft)[:, :n_samples].to(out.device)
    wet = wet * (out.norm(dim=1, keepdim=True) / wet.norm(dim=1, keepdim=True).clamp_min(1e-8))
    add_reverb = torch.rand(batch_size, 1, generator=generator) < 0.7
    return torch.where(add_reverb.to(out.device), wet, out)


class ClusterContrastiveObjective(ContrastiveObjective):
    """ccc-wav2vec 2.0: clustering-aided contrastive loss plus cross-contrastive losses.

    ``cross_weight`` weighs each of the two cross terms (0 switches the augmentation off and
    halves the cost); ``cluster_factor`` and ``scale_factor`` are the authors' (16, 0.3).
    """

    def __init__(
        self,
        config: Wav2Vec2Config,
        *,
        cluster_factor: int = 16,
        scale_factor: float = 0.3,
        cross_weight: float = 0.5,
        kmeans_iterations: int = 10,
        **contrastive_kwargs,
    ) -> None:
        super().__init__(config, **contrastive_kwargs)
        self.cluster_factor = cluster_factor
        self.scale_factor = scale_factor
        self.cross_weight = cross_weight
        self.kmeans_iterations = kmeans_iterations
        self.generator = torch.Generator().manual_seed(0)

    def n_clusters(self, mask: torch.Tensor) -> int:
        """The authors' group count for a batch's ``mask`` bool ``(B, T)``: masked frames per utterance
        (the batch's fewest: our masks differ in length) // ``cluster_factor``, at least 2."""
        return max(2, int(mask.sum(dim=1).min()) // self.cluster_factor)

    def _same_cluster(self, targets: list[torch.Tensor], mask: torch.Tensor, negatives: torch.Tensor) -> list[torch.Tensor]:
        """For each view's targets ``(B, T, P)``: bool ``(B, T, K)``, distractor in the positive's cluster."""
        with torch.no_grad():
            n_clusters = self.n_clusters(mask)
            # like the authors, the masked targets of both views are clustered together
            points = torch.cat([F.normalize(t[mask].float(), dim=-1) for t in targets])
            ids = cosine_kmeans(points, n_clusters, n_iter=self.kmeans_iterations, generator=self.generator)
            result = []
            for view_ids in ids.split(int(mask.sum())):
                frame_ids = torch.full(mask.shape, -1, dtype=torch.long, device=mask.device)
                frame_ids[mask] = view_ids
                result.append(frame_ids.unsqueeze(-1) == frame_ids.reshape(-1)[negatives])
            return result

    def forward(self, waveforms: torch.Tensor, *, progress: float = 0.0) -> ObjectiveOutput:
        self.model.set_gumbel_temperature(self.gumbel_temperature(progress))
        mask, negatives = self._mask_and_negatives(waveforms)
        temperature = self.model.config.contrastive_logits_temperature
        views = [self._view(waveforms, mask)]
        if self.cross_weight > 0:
            augmented = augment_for_cross_contrast(waveforms.detach(), generator=self.generator)
            views.append(self._view(augmented, mask, speech_of=waveforms))
        same_cluster = self._same_cluster([v.targets for v in views], mask, negatives)
        original = views[0]
        loss_kwargs = dict(temperature=temperature, scale_factor=self.scale_factor)
        contrastive = contrastive_loss_sum(
            original.predicted, original.targets, mask, negatives,
            same_cluster=same_cluster[0], **loss_kwargs,
        )
        cross = torch.zeros((), device=waveforms.device)
        if self.cross_weight > 0:
            augmented_view = views[1]
            cross = contrastive_loss_sum(  # context of the original against the augmentation's targets
                original.predicted, augmented_view.targets, mask, negatives,
                same_cluster=same_cluster[1], **loss_kwargs,
            ) + contrastive_loss_sum(  # and the other way round
                augmented_view.predicted, original.targets, mask, negatives,
                same_cluster=same_cluster[0], **loss_kwargs,
            )
        n_masked = mask.sum()
        diversity = self._diversity(original.perplexity)
        loss = (contrastive + self.cross_weight * cross) / n_masked + self.model.config.diversity_loss_weight * diversity
        return ObjectiveOutput(
            loss=loss,
            parts={
                "contrastive": _scalar(contrastive / n_masked),
                "cross_contrastive": _scalar(cross / n_masked),
                "diversity": _scalar(diversity),
                "perplexity": _scalar(original.perplexity),
            },
        )


def mfcc_cluster_targets(
    waveforms: np.ndarray,
    *,
    n_frames: int,
    n_clusters: int = 50,
    seed: int = 0,
    sample_rate: int = SAMPLE_RATE,
    normalisation: str = "corpus",
    silence_db: float | None = None,
    silence_class: bool = False,
) -> np.ndarray:
    """HuBERT's first-iteration targets: k-means ids of MFCC+deltas, int64 ``(N, n_frames)``.

    ``waveforms``: float32 ``(N, S)``. Kaldi MFCCs (13 coefficients, 25 ms window) are taken
    with a 20 ms shift, so that frame ``t`` lines up with the model's 20 ms frame ``t``;
    delta and delta-delta features are appended (39 dims), each dimension is standardised over
    the corpus, and MiniBatchKMeans fits ``n_clusters`` centroids.

    ``normalisation="utterance"`` first removes each utterance's mean and scales by its standard
    deviation per dimension (cepstral mean and variance normalisation), so that a speaker's
    microphone and room, constant over an utterance, do not decide the cluster; with
    ``silence_db`` those statistics are taken over the utterance's speech frames only. ``silence_db``:
    frames whose energy is more than this many dB below the utterance's loudest frame are not
    clustered and get :data:`IGNORE_TARGET` (no loss there): in one-second clips of one word half
    the frames are background noise, whose colour and level belong to the speaker's channel.
    ``silence_class``: those frames get the id ``n_clusters`` instead, one class for every
    speaker's background (the head then has ``n_clusters + 1`` outputs).
    """
    from sklearn.cluster import MiniBatchKMeans

    speech = speech_frames(waveforms, n_frames=n_frames, silence_db=silence_db)  # (N, n_frames)
    stacked = mfcc_features(waveforms, n_frames=n_frames, sample_rate=sample_rate, normalisation=normalisation,
                            speech=speech)
    flat = stacked[speech]
    mean, std = flat.mean(0), flat.std(0) + 1e-6
    kmeans = MiniBatchKMeans(n_clusters=n_clusters, random_state=seed, batch_size=4096, n_init=3)
    return _with_silence(kmeans.fit_predict((flat - mean) / std), speech, n_clusters=n_clusters,
                         silence_class=silence_class)


def mfcc_features(
    waveforms: np.ndarray,
    *,
    n_frames: int,
    sample_rate: int = SAMPLE_RATE,
    normalisation: str = "corpus",
    speech: np.ndarray | None = None,
) -> np.ndarray:
    """MFCC + deltas + delta-deltas of each clip, float32 ``(N, n_frames, 39)`` (see :func:`mfcc_cluster_targets`).

    ``normalisation="utterance"``: per-utterance CMVN, with statistics over the frames where the
    bool ``(N, n_frames)`` ``speech`` is True (all frames when None, or when a clip has < 2).
    """
    if normalisation not in TARGET_NORMALISATIONS:
        raise ValueError(f"normalisation={normalisation!r}; use 'corpus' or 'utterance' (per-utterance CMVN)")
    import torchaudio

    if waveforms.ndim != 2:
        raise ValueError(f"waveforms must be (N, samples), got shape {waveforms.shape}.")
    if speech is None:
        speech = np.ones((len(waveforms), n_frames), dtype=bool)
    features = []
    for wav, voiced in zip(torch.from_numpy(np.asarray(waveforms, dtype=np.float32)), torch.from_numpy(speech)):
        mfcc = torchaudio.compliance.kaldi.mfcc(
            wav[None], sample_frequency=sample_rate, frame_shift=20.0, frame_length=25.0, use_energy=False, dither=0.0
        )  # (frames, 13)
        deltas = torchaudio.functional.compute_deltas(mfcc.T)
        delta_deltas = torchaudio.functional.compute_deltas(deltas)
        frames = torch.cat([mfcc.T, deltas, delta_deltas]).T  # (frames, 39)
        if len(frames) < n_frames:  # pad by repeating the last frame (conv and MFCC edges differ by <= 1 frame)
            frames = torch.cat([frames, frames[-1:].expand(n_frames - len(frames), -1)])
        frames = frames[:n_frames]
        if normalisation == "utterance":  # statistics of the speech frames: background would swamp them
            frames = utterance_standardised(frames[None], voiced[None])[0]
        features.append(frames.numpy())
    return np.stack(features)


def utterance_standardised(frames: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``frames`` ``(B, T, D)`` standardised per utterance and dimension (CMVN), differentiably.

    Mean and (unbiased) standard deviation are taken over the frames where the bool ``(B, T)``
    ``reference`` is True; an utterance with fewer than 2 such frames uses all of its frames.
    """
    reference = reference.to(frames.device)
    standardised = []
    for clip, chosen in zip(frames, reference):  # (T, D), (T,)
        basis = clip[chosen] if int(chosen.sum()) > 1 else clip
        standardised.append((clip - basis.mean(0)) / (basis.std(0) + 1e-6))
    return torch.stack(standardised)


def speech_frames(waveforms: np.ndarray, *, n_frames: int, silence_db: float | None) -> np.ndarray:
    """bool ``(N, n_frames)``: frames within ``silence_db`` of each clip's loudest (all when None)."""
    if np.ndim(waveforms) != 2:
        raise ValueError(f"waveforms must be (N, samples), got shape {np.shape(waveforms)}.")
    if silence_db is None:
        return np.ones((len(waveforms), n_frames), dtype=bool)
    energy_db = _frame_energy_db(np.asarray(waveforms, dtype=np.float32), n_frames=n_frames)
    return energy_db > energy_db.max(1, keepdims=True) - silence_db


def _with_silence(speech_ids: np.ndarray, speech: np.ndarray, *, n_clusters: int, silence_class: bool) -> np.ndarray:
    """int64 ``(N, T)`` targets: ``speech_ids`` at the True frames of ``speech``, and at the others
    :data:`IGNORE_TARGET`, or the silence class ``n_clusters`` when ``silence_class``."""
    targets = np.full(speech.shape, n_clusters if silence_class else IGNORE_TARGET, dtype=np.int64)
    targets[speech] = speech_ids
    return targets


def _frame_energy_db(waveforms: np.ndarray, *, n_frames: int) -> np.ndarray:
    """Energy in dB of 25 ms frames every 20 ms (the MFCC frames), ``(N, n_frames)``."""
    window, shift = 400, 320
    starts = np.minimum(np.arange(n_frames) * shift, max(0, waveforms.shape[1] - window))
    frames = np.stack([waveforms[:, start : start + window] for start in starts], axis=1)  # (N, n_frames, 400)
    return 10 * np.log10((frames.astype(np.float64) ** 2).mean(-1) + 1e-12)


@torch.no_grad()
def hidden_cluster_targets(
    encoder: nn.Module,
    waveforms: np.ndarray,
    *,
    layer: int,
    n_clusters: int,
    seed: int = 0,
    batch_size: int = 32,
    max_fit_frames: int = 100_000,
    silence_db: float | None = None,
    silence_class: bool = False,
) -> np.ndarray:
    """HuBERT's second-iteration targets: k-means ids of an encoder's layer features, int64 ``(N, T)``.

    ``encoder``: a first-iteration ``HubertModel``/``WavLMModel`` (run in eval mode, no masking);
    ``waveforms``: float32 ``(N, S)``; ``layer`` indexes ``hidden_states`` (0 is the transformer's
    input). MiniBatchKMeans is fitted on at most ``max_fit_frames`` frames drawn with ``seed`` (the
    paper also fits on a subset) and then labels every frame. ``silence_db`` and ``silence_class``
    treat silent frames as :func:`mfcc_cluster_targets` does (left out of the fit; no target, or
    the id ``n_clusters``), so that the second iteration keeps the first one's rule.
    """
    from sklearn.cluster import MiniBatchKMeans

    if waveforms.ndim != 2:
        raise ValueError(f"waveforms must be (N, samples), got shape {waveforms.shape}.")
    n_states = encoder.config.num_hidden_layers + 1
    if not 0 <= layer < n_states:
        raise ValueError(f"layer {layer} is outside the encoder's hidden states 0..{n_states - 1}.")
    was_training = encoder.training
    encoder.eval()
    audio = torch.from_numpy(np.asarray(waveforms, dtype=np.float32))
    features = []
    for start in range(0, len(audio), batch_size):
        hidden = encoder(audio[start : start + batch_size], output_hidden_states=True).hidden_states[layer]
        features.append(hidden.float().numpy())  # (B, T, H)
    encoder.train(was_training)
    stacked = np.concatenate(features)  # (N, T, H)
    speech = speech_frames(waveforms, n_frames=stacked.shape[1], silence_db=silence_db)
    flat = stacked[speech]
    flat = (flat - flat.mean(0)) / (flat.std(0) + 1e-6)
    rng = np.random.default_rng(seed)
    fit = flat[rng.choice(len(flat), size=min(max_fit_frames, len(flat)), replace=False)]
    kmeans = MiniBatchKMeans(n_clusters=n_clusters, random_state=seed, batch_size=4096, n_init=3).fit(fit)
    return _with_silence(kmeans.predict(flat), speech, n_clusters=n_clusters, silence_class=silence_class)


def mix_utterances(
    waveforms: torch.Tensor,
    *,
    probability: float,
    max_fraction: float = 0.5,
    energy_ratio_db: tuple[float, float] = (-5.0, 5.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """WavLM's utterance mixing on a batch ``(B, S)``; returns the mixed batch ``(B, S)``.

    With ``probability`` per utterance, a crop of another utterance of the batch (length up to
    ``max_fraction`` of the clip) is added at a random position, scaled so that the primary
    utterance's energy over that region exceeds the secondary's by a ratio drawn uniformly from
    ``energy_ratio_db``.
    """
    batch_size, n_samples = waveforms.shape
    if batch_size < 2 or probability <= 0:
        return waveforms
    mixed = waveforms.clone()
    chosen = torch.rand(batch_size, generator=generator) < probability
    for i in torch.nonzero(chosen).flatten().tolist():
        other = (i + 1 + int(torch.randint(batch_size - 1, (1,), generator=generator))) % batch_size
        length = int(torch.randint(n_samples // 10, int(n_samples * max_fraction) + 1, (1,), generator=generator))
        src = int(torch.randint(n_samples - length + 1, (1,), generator=generator))
        dst = int(torch.randint(n_samples - length + 1, (1,), generator=generator))
        segment = waveforms[other, src : src + length]
        ratio_db = energy_ratio_db[0] + (energy_ratio_db[1] - energy_ratio_db[0]) * float(torch.rand(1, generator=generator))
        primary_energy = waveforms[i, dst : dst + length].pow(2).sum().clamp_min(1e-8)
        secondary_energy = segment.pow(2).sum().clamp_min(1e-8)
        scale = torch.sqrt(primary_energy / (secondary_energy * 10 ** (ratio_db / 10)))
        mixed[i, dst : dst + length] += scale * segment
    return mixed


class MaskedPredictionObjective(nn.Module):
    """HuBERT's masked prediction of cluster ids (with WavLM's utterance mixing if ``mix_probability > 0``).

    ``config``: a ``HubertConfig`` or ``WavLMConfig``. Targets come with each batch as int64
    ``(B, T)`` cluster ids of the *clean* primary utterances.
    """

    def __init__(
        self,
        config: HubertConfig | WavLMConfig,
        *,
        n_clusters: int,
        mask_prob: float = 0.8,
        mask_length: int = 10,
        projection_dim: int = 256,
        logits_temperature: float = 0.1,
        mix_probability: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        config = copy.deepcopy(config)
        if config.mask_time_prob <= 0:
            # the encoder owns its mask embedding only when SpecAugment is configured on
            config.mask_time_prob = 0.05
        self.model = WavLMModel(config) if isinstance(config, WavLMConfig) else HubertModel(config)
        self.projection = nn.Linear(config.hidden_size, projection_dim)
        self.cluster_embeddings = nn.Parameter(torch.randn(n_clusters, projection_dim) / math.sqrt(projection_dim))
        self.n_clusters = n_clusters
        self.mask_prob = mask_prob
        self.mask_length = mask_length
        self.logits_temperature = logits_temperature
        self.mix_probability = mix_probability
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def encoder(self) -> nn.Module:
        """The ``HubertModel`` or ``WavLMModel`` being pretrained (what gets saved)."""
        return self.model

    def forward(self, waveforms: torch.Tensor, *, targets: torch.Tensor, progress: float = 0.0) -> ObjectiveOutput:
        """``waveforms``: float ``(B, S)``; ``targets``: int64 ``(B, T)`` cluster ids."""
        batch_size, n_samples = waveforms.shape
        n_frames = _frames_per_clip(self.model, n_samples)
        if targets.shape != (batch_size, n_frames):
            raise ValueError(
                f"targets have shape {tuple(targets.shape)} but the model makes {n_frames} frames per clip; "
                "compute them with mfcc_cluster_targets(..., n_frames=...)."
            )
        if self.mix_probability > 0:
            waveforms = mix_utterances(waveforms, probability=self.mix_probability, generator=self.generator)
        mask = sample_time_mask(batch_size, n_frames, mask_prob=self.mask_prob, mask_length=self.mask_length).to(waveforms.device)
        hidden = self.model(waveforms, mask_time_indices=mask).last_hidden_state  # (B, T, H)
        scored = mask & (targets != IGNORE_TARGET)  # masked frames that have a target
        if not scored.any():  # every masked frame of the batch is silence: nothing to predict this step
            loss = hidden.sum() * 0.0
            return ObjectiveOutput(loss=loss, parts={"masked_prediction": 0.0, "accuracy": float("nan")})
        projected = F.normalize(self.projection(hidden[scored]), dim=-1)  # (n_scored, P)
        logits = projected @ F.normalize(self.cluster_embeddings, dim=-1).T / self.logits_temperature
        masked_targets = targets[scored]
        loss = F.cross_entropy(logits, masked_targets)
        accuracy = float((logits.argmax(-1) == masked_targets).float().mean())
        return ObjectiveOutput(loss=loss, parts={"masked_prediction": _scalar(loss), "accuracy": accuracy})
