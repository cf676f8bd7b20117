"""convexlab: where self-supervised speech models keep word and speaker information.

Graph convexity, layer by layer, and pruning at the most convex layer. The public API is
listed here; every name lives in a small module with one job.
"""

from convexlab.cache import cache_root
from convexlab.profiles import PROFILES, Profile, expect_result, get_profile

# -- data (convexlab.data, convexlab.synth) --
from convexlab.data import AudioDataset, corpus_root, load_task, speaker_task, speech_commands_root, word_task
from convexlab.synth import generate_corpus, synthetic_corpus
# -- models (convexlab.models) --
from convexlab.models import FAMILIES, CheckpointUnavailableError, ModelFamily, family_of, load_model, miniature_config
# -- extraction (convexlab.extract) --
from convexlab.extract import LayerEmbeddings, extract_layers, layer_embeddings
# -- convexity (convexlab.convexity) --
from convexlab.convexity import (
    ConvexityResult, LayerStructure, best_layer, graph_convexity, layer_structure, layerwise_convexity,
    plot_convexity_graph, pruning_depth, shortest_path_scores,
)
# -- pruning, finetuning, timing (convexlab.prune, convexlab.finetune, convexlab.timing) --
from convexlab.prune import count_parameters, prune
from convexlab.finetune import FinetuneResult, finetune, finetune_for_profile, finetuned_layer_embeddings
from convexlab.timing import CostSplit, InferenceTiming, TrainingTiming, compare_inference, measure_inference, split_cost
from convexlab.compare import PruneComparison, compare_pruned
# -- where to cut: the pruning frontier and layer-selection rules (convexlab.frontier) --
from convexlab.frontier import (
    RULES, Frontier, LayerRule, euclidean_convexity, linear_cka, oracle_depth, pick_depths, pruning_frontier,
    rule_report,
)
# -- pretraining of miniature models (convexlab.pretrain) --
from convexlab.pretrain import PretrainConfig, ensure_pretrained, recipe_configs
# -- plots (convexlab.plots) --
from convexlab.plots import CONCEPT_COLORS, MODEL_COLORS, miniature_label, plot_frontier, styled_table
# -- pipeline: the book's chapter glue, and the 2-D teaching toys (convexlab.pipeline, convexlab.toys) --
from convexlab import pipeline, toys

# The package's one version string: pyproject.toml reads it from here (dynamic = ["version"];
# setuptools reads the literal without importing the package).
__version__ = "0.1.0"

__all__ = [
    "__version__",
    "cache_root", "PROFILES", "Profile", "get_profile", "expect_result",
    "AudioDataset", "corpus_root", "load_task", "speaker_task", "speech_commands_root", "word_task",
    "generate_corpus", "synthetic_corpus",
    "FAMILIES", "CheckpointUnavailableError", "ModelFamily", "family_of", "load_model", "miniature_config",
    "LayerEmbeddings", "extract_layers", "layer_embeddings",
    "ConvexityResult", "LayerStructure", "best_layer", "graph_convexity", "layer_structure", "layerwise_convexity",
    "plot_convexity_graph", "pruning_depth", "shortest_path_scores",
    "count_parameters", "prune",
    "FinetuneResult", "finetune", "finetune_for_profile", "finetuned_layer_embeddings",
    "CostSplit", "InferenceTiming", "TrainingTiming", "compare_inference", "measure_inference", "split_cost",
    "PruneComparison", "compare_pruned",
    "RULES", "Frontier", "LayerRule", "euclidean_convexity", "linear_cka", "oracle_depth", "pick_depths",
    "pruning_frontier", "rule_report",
    "PretrainConfig", "ensure_pretrained", "recipe_configs",
    "CONCEPT_COLORS", "MODEL_COLORS", "miniature_label", "plot_frontier", "styled_table",
    "pipeline", "toys",
]
