"""The environment is one: pyproject.toml's ranges, requirements.lock's exact versions, and
environment.yml (conda, for JupyterHub/Binder) agree; torch and torchaudio load together."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
CONDA_TO_PYPI = {"pysoundfile": "soundfile", "pytorch": "torch"}
CONDA_ONLY = {"python", "pip", "nodejs"}  # the interpreter and build-time tools, not Python packages
ABI_PAIR = ("torch", "torchaudio")  # one compiled ABI: must be an exact, equal-release pair


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject_requirements() -> dict[str, SpecifierSet]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines.extend(extra)
    requirements = [Requirement(line) for line in lines]
    return {_normalise(r.name): r.specifier for r in requirements}


def environment_requirements() -> dict[str, SpecifierSet]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    found: dict[str, SpecifierSet] = {}
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            for line in entry["pip"]:
                if line.startswith("-e"):
                    continue
                requirement = Requirement(line)
                found[_normalise(requirement.name)] = requirement.specifier
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", entry.strip())
        name, spec = match.group(1), match.group(2).replace(" ", "")
        if name in CONDA_ONLY:
            continue
        found[_normalise(CONDA_TO_PYPI.get(name, name))] = SpecifierSet(spec)
    return found


def locked_versions() -> dict[str, list[Version]]:
    """Every ``name==version`` line of the lock (a universal lock may hold one per Python range)."""
    found: dict[str, list[Version]] = {}
    for line in LOCK.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", line)
        if match:
            found.setdefault(_normalise(match.group(1)), []).append(Version(match.group(2)))
    return found


def _exact(spec: SpecifierSet) -> Version | None:
    pins = [s for s in spec if s.operator == "=="]
    return Version(pins[0].version) if len(spec) == 1 and pins and "*" not in pins[0].version else None


def test_same_packages():
    pyproject, environment = pyproject_requirements(), environment_requirements()
    assert sorted(set(pyproject) - set(environment)) == [], "in pyproject.toml but not in environment.yml"
    assert sorted(set(environment) - set(pyproject)) == [], "in environment.yml but not in pyproject.toml"


def test_environment_takes_pyproject_range_or_locked_version():
    pyproject, environment, locked = pyproject_requirements(), environment_requirements(), locked_versions()
    mismatched = {}
    for name, spec in environment.items():
        pin = _exact(spec)
        if spec == pyproject.get(name) or (pin is not None and pin in locked.get(name, [])):
            continue
        mismatched[name] = (str(spec), str(pyproject.get(name)), [str(v) for v in locked.get(name, [])])
    assert mismatched == {}, "environment.yml spec is neither pyproject's range nor the lock's version"


def test_lock_holds_every_requirement_within_its_range():
    locked = locked_versions()
    missing = sorted(set(pyproject_requirements()) - set(locked))
    assert missing == [], f"not in requirements.lock (run `make lock`): {missing}"
    for source, requirements in [("pyproject.toml", pyproject_requirements()), ("environment.yml", environment_requirements())]:
        outside = {
            name: (str(spec), [str(v) for v in locked[name] if v not in spec])
            for name, spec in requirements.items()
            if any(v not in spec for v in locked[name])
        }
        assert outside == {}, f"requirements.lock has versions outside {source}'s ranges (run `make lock`)"


def test_lock_pins_every_line_with_hashes():
    text = LOCK.read_text()
    entries = re.findall(r"^([A-Za-z0-9_.\-]+)(==|\s@|>=|<=|~=|\s*$)", text, flags=re.M)
    assert entries and all(op == "==" for _, op in entries), "every locked package must be ==version"
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[-1])
    unhashed = [b.split()[0] for b in blocks if re.match(r"[A-Za-z0-9]", b) and "--hash=sha256:" not in b]
    assert unhashed == [], f"locked without hashes: {unhashed}"


def test_torch_and_torchaudio_are_an_exact_matched_pair():
    locked = locked_versions()
    for source, requirements in [("pyproject.toml", pyproject_requirements()), ("environment.yml", environment_requirements())]:
        pins = {name: _exact(requirements[name]) for name in ABI_PAIR}
        assert None not in pins.values(), f"{source}: torch and torchaudio must be pinned with =={pins}"
        assert pins["torch"].release == pins["torchaudio"].release, f"{source}: {pins} are not one release"
        for name in ABI_PAIR:
            assert locked[name] == [pins[name]], f"{source} pins {name}=={pins[name]}, the lock has {locked[name]}"


def test_required_pins():
    pyproject = pyproject_requirements()
    assert "5.17.0" in pyproject["transformers"] and "6.0" not in pyproject["transformers"]
    assert "1.0.4.post1" in pyproject["jupyter-book"] and "2.0.0" not in pyproject["jupyter-book"]
    for name in ["jupytext", "papermill", "nbval", "pytest", "scipy", "networkx", "seaborn", "soundfile", "tqdm", "espeakng-loader"]:
        assert name in pyproject, name


# transformers imports torchaudio where it is installed; a torchaudio built against another torch
# fails at that import with an undefined symbol, so this is what `import convexlab` would meet.
_ABI_PROBE = """
import importlib.metadata as md, sys
versions = {n: md.version(n) for n in ("torch", "torchaudio", "transformers")}
try:
    import torch, torchaudio
    import torchaudio.functional, torchaudio.compliance.kaldi
    from transformers import Wav2Vec2FeatureExtractor, AutoFeatureExtractor
    from transformers.audio_utils import mel_filter_bank, spectrogram
    torchaudio.functional.compute_deltas(torch.zeros(1, 4, 8))
except Exception as error:
    sys.exit(f"torch {versions['torch']} and torchaudio {versions['torchaudio']} (transformers "
             f"{versions['transformers']}) do not load together: {type(error).__name__}: {error}. "
             "Reinstall the matched pair from requirements.lock: make venv")
print(versions)
"""


def test_torchaudio_and_transformers_audio_load_in_a_fresh_interpreter():
    probe = subprocess.run([sys.executable, "-c", _ABI_PROBE], capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr[-2000:]


def test_abi_probe_names_both_versions_when_torchaudio_fails(tmp_path):
    """The probe's failure message is what a user sees: check it names both versions."""
    shadow = tmp_path / "torchaudio"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise OSError('libtorchaudio.so: undefined symbol: torch_exception_get_what')\n")
    probe = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n" + _ABI_PROBE],
        capture_output=True, text=True, timeout=120,
    )
    import importlib.metadata as metadata

    assert probe.returncode != 0
    assert f"torch {metadata.version('torch')}" in probe.stderr
    assert f"torchaudio {metadata.version('torchaudio')}" in probe.stderr
    assert "undefined symbol" in probe.stderr
