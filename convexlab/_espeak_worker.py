"""libespeak-ng through ctypes, and the worker process that speaks a corpus.

Run as a script (``python _espeak_worker.py LIBRARY DATA``) it is the worker of
:func:`convexlab.spoken.generate_corpus`: it reads one pickled list of jobs from stdin (each a
voice and its ``(word, rate, pitch, pitch_range, rand_seed)`` plan), then writes one pickled
``("ok", [int16 arrays at 22,050 Hz])`` or ``("error", message)`` per job to stdout. It imports
only numpy and ctypes (not convexlab, whose import pulls in torch), so it starts in a moment, and
each corpus gets a fresh engine (espeak-ng's state carries from one utterance to the next).
"""

from __future__ import annotations

import ctypes
import os
import pickle
import sys
from pathlib import Path

import numpy as np

__all__ = ["ESPEAK_RATE", "FIX", "EspeakError"]  # the worker itself runs as a script (_serve)

ESPEAK_RATE = 22_050  # libespeak-ng's output rate
FIX = "pip install espeakng-loader (or `make venv`, which installs it from requirements.lock)"


class EspeakError(RuntimeError):
    """espeak-ng is missing, or it failed to initialise or to speak."""


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_AUDIO_OUTPUT_SYNCHRONOUS = 0x02
_POS_CHARACTER = 1
_RATE, _PITCH, _RANGE = 1, 3, 4  # espeak_PARAMETER values


class _Engine:
    """One initialised libespeak-ng (a process holds one: the library is a singleton)."""

    def __init__(self, library: str, data: str):
        self.data = Path(data)
        try:
            self.lib = ctypes.CDLL(library)
        except OSError as error:
            raise EspeakError(f"could not load libespeak-ng from {library} ({error}); reinstall it: {FIX}") from error
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                          ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data).encode(), 0)
        if rate != ESPEAK_RATE:
            raise EspeakError(f"espeak_Initialize(data={data}) returned {rate}, expected the sample rate "
                              f"{ESPEAK_RATE}; reinstall espeakng-loader: {FIX}")
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # kept referenced: the library calls it
        self.lib.espeak_SetSynthCallback(self._callback)
        self._voice: str | None = None

    def _collect(self, wav, n_samples, events) -> int:
        if n_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
        return 0  # continue

    def speak(self, voice: str, text: str, *, rate: int, pitch: int, pitch_range: int, rand_seed: int) -> np.ndarray:
        """``text`` said by ``voice`` ("<accent>+<variant>"): int16 (T,) at 22,050 Hz."""
        if voice != self._voice:
            variant = voice.partition("+")[2]
            if variant and not (self.data / "voices" / "!v" / variant).is_file():
                # espeak-ng ignores an unknown variant silently; say so instead
                raise EspeakError(f"espeak-ng has no voice variant {variant!r} in {self.data / 'voices' / '!v'}")
            status = self.lib.espeak_SetVoiceByName(voice.encode())
            if status != 0:
                raise EspeakError(f"espeak_SetVoiceByName({voice!r}) failed (status {status}): no such voice in "
                                  f"{self.data}; use an English accent (en, en-us, ...) with a variant from voices/!v")
            self._voice = voice
        for parameter, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range)):
            status = self.lib.espeak_SetParameter(parameter, int(value), 0)
            if status != 0:
                raise EspeakError(f"espeak_SetParameter({parameter}, {value}) failed (status {status})")
        self.lib.espeak_ng_SetRandSeed(int(rand_seed))
        self._chunks = []
        encoded = text.encode() + b"\0"
        status = self.lib.espeak_Synth(encoded, len(encoded), 0, _POS_CHARACTER, 0, 0, None, None)
        if status != 0:
            raise EspeakError(f"espeak_Synth({text!r}) with voice {voice!r} failed (status {status})")
        status = self.lib.espeak_Synchronize()
        if status != 0 or not self._chunks:
            raise EspeakError(f"espeak-ng produced no audio for {text!r} with voice {voice!r} (status {status})")
        return np.concatenate(self._chunks)


def _serve(library: str, data: str) -> None:
    """The worker loop: jobs from stdin, results to stdout (fd 1 is pointed at stderr meanwhile)."""
    protocol = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything the library prints goes to stderr, not into the protocol
    jobs = pickle.load(sys.stdin.buffer)
    try:
        engine = _Engine(library, data)
    except EspeakError as error:
        pickle.dump(("error", str(error)), protocol)
        protocol.flush()
        return
    for voice, plan in jobs:
        try:
            result = ("ok", [engine.speak(voice, w, rate=r, pitch=p, pitch_range=pr, rand_seed=s)
                             for w, r, p, pr, s in plan])
        except EspeakError as error:
            result = ("error", str(error))
        pickle.dump(result, protocol, protocol=pickle.HIGHEST_PROTOCOL)
        protocol.flush()
        if result[0] == "error":
            return


if __name__ == "__main__":
    _serve(sys.argv[1], sys.argv[2])
