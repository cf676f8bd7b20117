"""benchmarks/finetune_sizing.py: its settings and arguments parse (it trains nothing here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from convexlab.profiles import get_profile

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "finetune_sizing.py"


@pytest.fixture(scope="module")
def sizing():
    spec = importlib.util.spec_from_file_location("benchmark_finetune_sizing", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_custom_settings_parse_to_profile_overrides(sizing):
    args = sizing.build_parser().parse_args(
        ["--settings", "today", "--setting", "mine", "max_train_per_class=None", "finetune_epochs=12",
         "learning_rate=3e-4", "--seeds", "0", "1"])
    chosen = sizing.chosen_settings(args)
    assert chosen == {"today": {}, "mine": {"max_train_per_class": None, "finetune_epochs": 12,
                                            "learning_rate": 3e-4}}
    assert args.seeds == [0, 1] and args.seed_mode == "profile" and args.threads == 1
    profile = get_profile("lite").replace(**chosen["mine"])
    assert profile.max_train_per_class is None and profile.finetune_epochs == 12


def test_every_builtin_setting_names_profile_fields(sizing):
    lite = get_profile("lite")
    for overrides in sizing.SETTINGS.values():
        lite.replace(**overrides)  # unknown fields raise TypeError


def test_bad_setting_is_refused(sizing):
    with pytest.raises(SystemExit):
        sizing.chosen_settings(sizing.build_parser().parse_args(["--settings", "no-such-setting"]))
    with pytest.raises(Exception):
        sizing.parse_setting(["mine", "finetune_epochs"])
