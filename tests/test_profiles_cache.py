"""Profiles (named presets with overrides) and the atomic cache helpers."""

from __future__ import annotations

import pytest

from convexlab.cache import atomic_dir, atomic_write, cache_root, load_json, save_json, stable_hash
from convexlab.profiles import PROFILES, Profile, expect_result, get_profile


def test_presets_exist_and_are_frozen():
    assert {"lite", "lite-synthetic", "paper", "large"} <= set(PROFILES)
    lite = get_profile("lite")
    assert lite.miniature and lite.corpus == "spoken" and lite.device == "cpu" and not lite.download
    synthetic = get_profile("lite-synthetic")
    assert synthetic.miniature and synthetic.corpus == "synthetic" and synthetic.device == "cpu" and not synthetic.download
    paper = get_profile("paper")
    assert not paper.miniature and paper.corpus == "speech_commands"
    assert "facebook/wav2vec2-base" in paper.models and "vasista22/ccc-wav2vec2-base" in paper.models
    with pytest.raises(Exception):
        lite.seed = 3  # frozen


def test_overrides_and_none_is_ignored():
    profile = get_profile("lite", seed=7, device=None, models=["mini-hubert"])
    assert profile.seed == 7 and profile.device == "cpu" and profile.models == ("mini-hubert",)
    assert get_profile(profile) is profile


def test_expect_result_asserts_in_a_real_run_and_reports_in_a_rehearsal(capsys):
    assert not any(preset.rehearsal for preset in PROFILES.values())  # only convexlab.rehearsal sets it
    real = get_profile("paper")
    assert expect_result(real, True, "beats chance") is True
    with pytest.raises(AssertionError, match="beats chance"):
        expect_result(real, False, "beats chance")
    assert capsys.readouterr().out == ""  # a real run prints nothing: lite notebooks stay as they were
    rehearsal = get_profile("paper", rehearsal=True)
    assert expect_result(rehearsal, False, "beats chance") is False
    assert expect_result(rehearsal, __import__("numpy").bool_(True), "rises") is True
    out = capsys.readouterr().out.splitlines()
    assert out == ["[rehearsal: random weights] result check NOT MET (not enforced): beats chance",
                   "[rehearsal: random weights] result check held: rises"]


def test_bad_names_are_explained():
    with pytest.raises(ValueError, match="lite"):
        get_profile("huge")
    with pytest.raises(TypeError, match="sead"):
        get_profile("lite", sead=1)
    with pytest.raises(ValueError, match="'lite-spoken' is now called 'lite'.*profile='lite'"):
        get_profile("lite-spoken")  # the spoken world became the default


def test_stable_hash_ignores_dict_order_and_sees_values():
    assert stable_hash({"a": 1, "b": 2}) == stable_hash({"b": 2, "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})
    assert stable_hash(Profile(name="x")) == stable_hash(Profile(name="x"))


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "result.json"
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as handle:
            handle.write("half")
            raise RuntimeError("interrupted")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    save_json(target, {"x": [1, 2]})
    assert load_json(target) == {"x": [1, 2]}


def test_atomic_dir_replaces_only_on_success(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "weights").write_text("v2")
            raise RuntimeError("interrupted")
    assert (target / "weights").read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_atomic_dir_keeps_a_result_another_process_published_first(tmp_path):
    """Two writers of one keyed result: the first to finish wins and the second never deletes it
    (a reader may be using it: two concurrent runs once lost clips this way)."""
    target = tmp_path / "corpus"
    with atomic_dir(target, marker="corpus.json") as slow:
        (slow / "clip.wav").write_text("slow")
        (slow / "corpus.json").write_text("{}")
        with atomic_dir(target, marker="corpus.json") as fast:  # finishes while the slow one still writes
            (fast / "clip.wav").write_text("fast")
            (fast / "corpus.json").write_text("{}")
        reader = open(target / "clip.wav")
    assert reader.read() == "fast" and (target / "clip.wav").read_text() == "fast"
    reader.close()
    assert [p.name for p in tmp_path.iterdir()] == ["corpus"]


def test_atomic_dir_replaces_an_incomplete_folder(tmp_path):
    target = tmp_path / "corpus"
    target.mkdir()
    (target / "half.wav").write_text("left by an old run")
    with atomic_dir(target, marker="corpus.json") as tmp:
        (tmp / "corpus.json").write_text("{}")
    assert sorted(p.name for p in target.iterdir()) == ["corpus.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["corpus"]


def test_atomic_dir_replace_lets_the_last_writer_win(tmp_path):
    target = tmp_path / "export"
    for version in ("v1", "v2"):
        with atomic_dir(target, marker="log", replace=True) as tmp:
            (tmp / "log").write_text(version)
    assert (target / "log").read_text() == "v2" and [p.name for p in tmp_path.iterdir()] == ["export"]
    with pytest.raises(RuntimeError):
        with atomic_dir(target, marker="log", replace=True) as tmp:
            (tmp / "log").write_text("v3")
            raise RuntimeError("interrupted")
    assert (target / "log").read_text() == "v2" and [p.name for p in tmp_path.iterdir()] == ["export"]


def test_cache_root_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVEXLAB_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c" and (tmp_path / "c").is_dir()


def test_atomic_results_are_readable_like_their_folder(tmp_path):
    """mkstemp/mkdtemp make private files; what atomic_write/atomic_dir leave follows the umask."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        save_json(tmp_path / "table.json", {"x": 1})
        with atomic_write(tmp_path / "blob.bin") as handle:
            handle.write(b"data")
        with atomic_dir(tmp_path / "model") as folder:
            save_json(folder / "config.json", {"a": 1})
    finally:
        os.umask(old)
    for path, expected in [(tmp_path / "table.json", 0o644), (tmp_path / "blob.bin", 0o644),
                           (tmp_path / "model", 0o755), (tmp_path / "model" / "config.json", 0o644)]:
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


def test_stage_key_sees_every_input_and_param_and_nothing_else():
    from convexlab.cache import stage_key

    base = stage_key("s", 1, inputs={"model": "m1", "dataset": "d1"}, params={"a": 1, "b": None})
    assert base == stage_key("s", 1, inputs={"dataset": "d1", "model": "m1"}, params={"b": None, "a": 1})
    changed = [stage_key("t", 1, inputs={"model": "m1", "dataset": "d1"}, params={"a": 1, "b": None}),
               stage_key("s", 2, inputs={"model": "m1", "dataset": "d1"}, params={"a": 1, "b": None}),
               stage_key("s", 1, inputs={"model": "m2", "dataset": "d1"}, params={"a": 1, "b": None}),
               stage_key("s", 1, inputs={"model": "m1", "dataset": "d1"}, params={"a": 2, "b": None}),
               stage_key("s", 1, inputs={"model": "m1", "dataset": "d1"}, params={"a": 1, "b": 0.5})]
    assert len({base, *changed}) == 6


def test_profile_params_takes_the_declared_fields():
    from convexlab.cache import profile_params

    lite = get_profile("lite")
    assert profile_params(lite, ("seed", "dtype")) == {"seed": 0, "dtype": "float32"}
    with pytest.raises(ValueError, match="sead"):
        profile_params(lite, ("sead",))


def test_file_digest_sees_content_and_is_memoised(tmp_path, monkeypatch):
    import os

    from convexlab import cache

    path = tmp_path / "clip.wav"
    path.write_bytes(b"a" * 1000)
    first = cache.file_digest(path)
    reads = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: reads.append(a[0]) or real_open(*a, **k))
    assert cache.file_digest(path) == first and reads == []  # memoised: no second read
    monkeypatch.undo()
    stat = path.stat()
    path.write_bytes(b"b" * 1000)  # same size ...
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # ... a later mtime
    assert cache.file_digest(path) != first
