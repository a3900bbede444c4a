"""Speech synthesis in-process with the eSpeak NG library bundled in the `espeakng-loader` wheel (no apt package).

`synth(text, voice, rate, pitch)` -> (int16 mono samples at `sample_rate()` Hz, [(word, char_offset, start_sample)]).
The library keeps global state and is not thread-safe: one synthesizer per process (use processes to use both
cores). It is initialised lazily on the first call so that forked or spawned workers each get their own.
The bundled library's compiled-in data path does not exist on users' machines, so the wheel's data path is passed.
"""
import ctypes
import functools

import numpy as np

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_EVENT_LIST_TERMINATED, _EVENT_WORD = 0, 1
_PARAM_RATE, _PARAM_PITCH = 1, 3
_POS_CHARACTER, _CHARS_UTF8 = 1, 1


class _Event(ctypes.Structure):  # espeak_EVENT from speak_lib.h
  _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
              ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
              ("user_data", ctypes.c_void_p), ("id", ctypes.c_int64)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))
_chunks: list[np.ndarray] = []
_words: list[tuple[int, int, int]] = []


def _on_audio(wav, n, events):
  if n > 0:
    _chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
  i = 0
  while events[i].type != _EVENT_LIST_TERMINATED:
    if events[i].type == _EVENT_WORD:
      _words.append((events[i].text_position, events[i].length, events[i].sample))
    i += 1
  return 0


_callback = _CALLBACK(_on_audio)  # module-level reference: ctypes must not free the callback


@functools.cache
def _library() -> tuple[ctypes.CDLL, int]:
  import espeakng_loader  # pylint: disable=import-outside-toplevel
  lib = ctypes.CDLL(espeakng_loader.get_library_path())
  rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(),
                               _INITIALIZE_DONT_EXIT)
  if rate <= 0:
    raise RuntimeError("espeak_Initialize failed")
  lib.espeak_SetSynthCallback(_callback)
  lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                               ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
  return lib, rate


@functools.cache
def _libc() -> ctypes.CDLL:
  return ctypes.CDLL(None)


def sample_rate() -> int:
  return _library()[1]


def version() -> str:
  lib = _library()[0]
  lib.espeak_Info.restype = ctypes.c_char_p
  return lib.espeak_Info(None).decode()


def set_voice(name: str = "en-us", rate: int = 175, pitch: int = 50) -> None:
  """name: 'en-us', 'en' (British), 'en-gb-scotland', 'en-us+f3' (variant), ...; rate words/min; pitch 0-100."""
  lib = _library()[0]
  if lib.espeak_SetVoiceByName(name.encode()) != 0:
    raise ValueError(f"unknown eSpeak voice {name!r}")
  lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)
  lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)


def synth(text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50, seed: int = 0) -> tuple[np.ndarray, list]:
  """Speaks `text`; returns int16 samples and (word, character offset, start sample) of each word."""
  lib = _library()[0]
  set_voice(voice, rate, pitch)
  # eSpeak's voicing noise draws from its own generator and from libc rand(): fixed seeds make speech reproducible
  lib.espeak_ng_SetRandSeed(ctypes.c_long(seed))
  _libc().srand(ctypes.c_uint(seed))
  _chunks.clear()
  _words.clear()
  data = text.encode("utf-8") + b"\0"
  if lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None) != 0:
    raise RuntimeError("espeak_Synth failed")
  lib.espeak_Synchronize()
  audio = np.concatenate(_chunks) if _chunks else np.zeros(0, np.int16)
  words = [(text[p - 1:p - 1 + n], p - 1, s) for p, n, s in _words]  # text_position counts characters from 1
  return audio, words
