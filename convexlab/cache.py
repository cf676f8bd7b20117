"""Where convexlab keeps what it computes, and how it writes it safely.

Every expensive step (synthetic corpus, pretrained miniature models, layer embeddings,
finetuning runs) is stored under one cache root, in a file or folder whose name is a hash
of everything that produced it. Files are written to a temporary name in the same folder
and renamed into place, so an interrupted run never leaves a half-written file that a later
run would mistake for a finished one.

Keys chain: every cached stage's key is :func:`stage_key` of the keys of what it consumed (a
corpus's content digest, a model's weights-and-config digest, an upstream run's key) plus its
own parameters. A stage declares the profile fields it reads as a tuple of names (e.g.
``convexlab.finetune.FINETUNE_FIELDS``) and :func:`profile_params` takes exactly those from a
profile, so no stage hand-picks fields and a changed input can never be answered from an old file.
Results are readable like the folders that hold them (the process umask applies, as for any file).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

__all__ = ["cache_root", "cache_path", "stable_hash", "stage_key", "profile_params", "file_digest", "atomic_write",
           "atomic_dir", "save_json", "load_json"]

ENV_VAR = "CONVEXLAB_CACHE"


def cache_root() -> Path:
    """The cache folder: ``$CONVEXLAB_CACHE`` if set, else ``~/.cache/convexlab``."""
    root = os.environ.get(ENV_VAR)
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "convexlab"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_path(*parts: str) -> Path:
    """A path inside the cache root (parent folders are created)."""
    path = cache_root().joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return _jsonable(value.to_dict())
    if hasattr(value, "__dataclass_fields__"):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def stable_hash(*values: Any, length: int = 16) -> str:
    """A short hex digest of JSON-serialisable values (dicts hashed with sorted keys)."""
    payload = json.dumps(_jsonable(list(values)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:length]


def stage_key(stage: str, version: int, *, inputs: Mapping[str, str] | None = None,
              params: Mapping[str, Any] | None = None, length: int = 16) -> str:
    """The cache key of one stage's result: the digests of what it consumed plus its own parameters.

    ``stage`` names the stage ("finetune", "convexity-table", ...); ``version`` is the stage's
    own version (bump it when its output changes meaning for the same inputs); ``inputs`` maps
    each consumed input to its key or content digest (``{"model": ..., "dataset": ...}``);
    ``params`` holds the stage's parameters (from :func:`profile_params` plus call arguments).
    Dict order does not matter; any changed value changes the key.
    """
    return stable_hash({"stage": stage, "version": int(version), "inputs": dict(inputs or {}),
                        "params": dict(params or {})}, length=length)


def profile_params(profile: Any, fields: Iterable[str]) -> dict[str, Any]:
    """``{field: profile.field}`` for the declared ``fields`` of a stage (unknown names raise)."""
    known = {f.name for f in dataclasses.fields(profile)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"Stage declares unknown profile field(s) {unknown}; known fields: {sorted(known)}")
    return {name: getattr(profile, name) for name in fields}


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | os.PathLike) -> str:
    """blake2b digest (32 hex digits) of a file's bytes, read in chunks.

    Memoised within the process by (absolute path, size, mtime_ns): a file rewritten in place gets
    a new mtime and is read again; repeated calls on an unchanged file cost one ``stat``.
    """
    path = Path(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist; cannot digest it") from None
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    cached = _DIGESTS.get(memo)
    if cached is None:
        digest = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        cached = _DIGESTS[memo] = digest.hexdigest()
    return cached


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private (0600); the result is an ordinary file
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, marker: str | None = None, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; move it onto ``path`` only on success.

    Several processes may build the same keyed result at once (two chapters, two ranks of a
    launcher): the first to finish publishes it, and a later one drops its own copy instead of
    deleting a folder that others may be reading. ``marker``: the file a complete result holds; a
    folder at ``path`` without it (left by hand or by an old version) is replaced. ``replace``:
    the last to finish wins instead, for an explicit rewrite (an export) rather than a cache.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the result is an ordinary folder
    try:
        yield tmp
        if path.exists() and (replace or (marker is not None and not (path / marker).exists())):
            stale = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".stale"))
            os.replace(path, stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(tmp, path)
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not path.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process published the same result first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_write(path, "w") as handle:
        json.dump(_jsonable(data), handle, indent=2, sort_keys=True)


def load_json(path: str | os.PathLike) -> Any:
    with open(path) as handle:
        return json.load(handle)
