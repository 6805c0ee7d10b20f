"""Speaker embeddings to tell the agent from the customer on mono recordings: resemblyzer 0.1.4's voice encoder
(GE2E, Apache-2.0) redone in numpy, so that the appliance needs no torch.

Only the package's weights file is used, pinned by sha256 and read by a pickle reader that knows just the globals a
torch state dict names; resemblyzer's own code (torch, librosa, webrtcvad) is never imported.
"""

from __future__ import annotations

import collections
import functools
import importlib.util
import logging
import pickle
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from aftercall.core.audio import upsample_2x
from aftercall.core.errors import AudioFormatError, ModelIntegrityError
from aftercall.core.modelpkg import PinnedModel

logger = logging.getLogger(__name__)

# resemblyzer==0.1.4 `resemblyzer/pretrained.pt`. Installed with --no-deps: we read this file, never its code.
PRETRAINED_SHA256 = "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"
EMBEDDING_SIZE = 256

# resemblyzer's hparams.py and the librosa defaults its mel spectrogram relies on.
SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 40
PARTIAL_FRAMES = 160  # 1.6 s
PARTIAL_RATE = 1.3  # partials per second
MIN_COVERAGE = 0.75
TARGET_DBFS = -30.0
# Wider batches gain little and cost memory: the LSTM holds 5 KiB of activations per partial and frame.
PARTIALS_PER_BATCH = 64

# -- the legacy (pre-zip) torch serialisation --------------------------------------------------------------------------
# torch.save wrote: magic number, protocol version, sys info, the object (tensors as persistent storage ids), the list
# of storage keys, then per key an int64 element count and the raw little-endian elements.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16, "LongStorage": np.int64,
    "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


class _Storage:
    """Declared by the object pickle, filled from the bytes that follow it."""

    def __init__(self, dtype: np.dtype, numel: int):
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None


@dataclass(frozen=True)
class _PendingTensor:
    """A tensor whose storage is not read yet (the object pickle comes before the storages' bytes)."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]

    def materialise(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise ModelIntegrityError("a tensor refers to a storage that the file never wrote")
        dims = [(int(n), int(s)) for n, s in zip(self.shape, self.strides, strict=True)]
        offset = int(self.offset)
        if offset < 0 or any(n < 0 or s < 0 for n, s in dims):
            raise ModelIntegrityError("a tensor has a negative offset, size or stride")
        # as_strided does not check bounds: a view past the storage would read foreign memory.
        if any(n == 0 for n, _ in dims):
            return np.zeros([n for n, _ in dims], dtype=data.dtype)
        if offset + sum((n - 1) * s for n, s in dims) >= len(data):
            raise ModelIntegrityError("a tensor reaches past the end of its storage")
        view = np.lib.stride_tricks.as_strided(data[offset:], shape=[n for n, _ in dims],
                                               strides=[s * data.itemsize for _, s in dims], writeable=False)
        return view.copy()


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None) -> _PendingTensor:
    if not isinstance(storage, _Storage):
        raise ModelIntegrityError("a tensor is built on something that is not a storage")
    return _PendingTensor(storage, storage_offset, tuple(size), tuple(stride))


class _StateDictUnpickler(pickle.Unpickler):
    """Resolves only the globals a torch state dict names, to harmless stand-ins: a tampered file runs no code."""

    def __init__(self, handle: BinaryIO, storages: dict[str, _Storage]):
        super().__init__(handle)
        self._storages = storages

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(np.dtype(_STORAGE_DTYPES[name]))
        raise ModelIntegrityError(f"the weights file names the global {module}.{name}, which a torch state dict "
                                  "never needs: refusing to load it")

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, numel[, view metadata]); location is where it was saved from.
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and isinstance(pid[4], int)):
            raise ModelIntegrityError(f"unexpected persistent id in the weights file: {pid!r:.80}")
        if len(pid) == 6 and pid[5] is not None:
            raise ModelIntegrityError("the weights file uses storage views (torch < 0.4), which are not supported")
        _, storage_type, key, _location, numel = pid[:5]
        storage = self._storages.setdefault(key, _Storage(storage_type.dtype, numel))
        if storage.dtype != storage_type.dtype or storage.numel != numel:
            raise ModelIntegrityError(f"storage {key} is declared twice, differently")
        return storage


def read_model_state(path: Path) -> dict[str, np.ndarray]:
    """The `model_state` of a legacy torch checkpoint: parameter name -> float32 array. Raises ModelIntegrityError on
    anything but a plain state dict (including any global it does not expect)."""
    storages: dict[str, _Storage] = {}
    try:
        with path.open("rb") as handle:
            def load():
                return _StateDictUnpickler(handle, storages).load()

            if load() != _LEGACY_MAGIC:
                raise ModelIntegrityError(f"{path} is not a legacy torch file (wrong magic number)")
            if load() != _LEGACY_PROTOCOL:
                raise ModelIntegrityError(f"{path}: unsupported torch serialisation protocol")
            sys_info = load()
            if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
                raise ModelIntegrityError(f"{path} was not written on a little-endian machine")
            checkpoint = load()
            keys = load()
            if not isinstance(keys, list) or set(keys) != set(storages):
                raise ModelIntegrityError(f"{path}: the storage list does not match the storages its tensors use")
            for key in keys:
                storage = storages[key]
                if int.from_bytes(handle.read(8), "little") != storage.numel:
                    raise ModelIntegrityError(f"{path}: storage {key} has another size than its tensors declared")
                raw = handle.read(storage.numel * storage.dtype.itemsize)
                if len(raw) != storage.numel * storage.dtype.itemsize:
                    raise ModelIntegrityError(f"{path}: storage {key} is truncated")
                storage.data = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"))
        state = checkpoint.get("model_state") if isinstance(checkpoint, dict) else None
        if not isinstance(state, dict) or not all(isinstance(v, _PendingTensor) for v in state.values()):
            raise ModelIntegrityError(f"{path} holds no model_state of tensors")
        return {name: tensor.materialise().astype(np.float32) for name, tensor in state.items()}
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise ModelIntegrityError(f"{path} is not a readable torch checkpoint: {error}") from error


def default_weights() -> Path:
    # find_spec locates the package without executing it (its __init__ imports torch).
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise ModelIntegrityError("resemblyzer==0.1.4 is not installed (pip install --no-deps resemblyzer==0.1.4)")
    return Path(spec.submodule_search_locations[0]) / "pretrained.pt"


# -- features ----------------------------------------------------------------------------------------------------------
def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    # Slaney's scale (librosa's htk=False): linear below 1 kHz, logarithmic above.
    hz = np.asarray(hz, dtype=np.float64)
    return np.where(hz >= 1000, 15 + np.log(np.maximum(hz, 1000) / 1000) * 27 / np.log(6.4), hz * 3 / 200)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return np.where(mel >= 15, 1000 * np.exp((mel - 15) * np.log(6.4) / 27), mel * 200 / 3)


def _mel_filters() -> np.ndarray:
    """librosa.filters.mel(sr=16000, n_fft=400, n_mels=40) with its defaults: Slaney scale, Slaney area norm."""
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), N_MELS + 2))
    bins = np.fft.rfftfreq(N_FFT, 1 / SAMPLE_RATE)
    widths = np.diff(edges)
    ramps = edges[:, None] - bins[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(rising, falling))
    weights *= (2 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


_MEL_FILTERS = _mel_filters()
# The periodic Hann window (scipy's get_window("hann", fftbins=True)), as librosa uses.
_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)


def mel_frames(wav: np.ndarray) -> np.ndarray:
    """Power mel spectrogram, (frames, 40): librosa.feature.melspectrogram's defaults (center, zero padding)."""
    padded = np.pad(wav, N_FFT // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    spectrum = np.fft.rfft(frames * _WINDOW, axis=1)
    power = (spectrum.real ** 2 + spectrum.imag ** 2).astype(np.float32)
    return power @ _MEL_FILTERS.T


def partial_starts(n_samples: int) -> np.ndarray:
    """First mel frame of each 1.6 s partial, as resemblyzer's compute_partial_slices(n, 1.3, 0.75)."""
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    frame_step = int(np.round(SAMPLE_RATE / PARTIAL_RATE / HOP))
    starts = np.arange(0, max(1, n_frames - PARTIAL_FRAMES + frame_step + 1), frame_step)
    coverage = (n_samples - starts[-1] * HOP) / (PARTIAL_FRAMES * HOP)
    if coverage < MIN_COVERAGE and len(starts) > 1:
        starts = starts[:-1]
    return starts


def preprocess(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """float32 at 16 kHz, raised to -30 dBFS if quieter (resemblyzer's preprocess_wav without its silence trimming:
    callers pass speech segments). `samples`: int16 PCM or floats in [-1, 1]."""
    if len(samples) == 0:
        raise AudioFormatError("an empty clip has no voice to embed")
    if np.issubdtype(samples.dtype, np.integer):
        wav = samples.astype(np.float32) / 32768.0
    else:
        wav = samples.astype(np.float32)
    if sample_rate == 8000:
        wav = upsample_2x(wav)
    elif sample_rate != SAMPLE_RATE:
        raise AudioFormatError(f"unsupported: sample rate {sample_rate} Hz (the voice encoder takes 8000 or 16000)")
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64))))
    # Digital silence has no level to raise (resemblyzer would divide by zero).
    if rms > 0:
        gain_db = TARGET_DBFS - 20 * np.log10(rms)
        if gain_db > 0:
            wav = wav * np.float32(10 ** (gain_db / 20))
    return wav


@dataclass(frozen=True)
class _Network:
    """The 3-layer LSTM and the linear projection. Features run down the rows and partials across the columns:
    OpenBLAS multiplies a (4H, H) matrix by a few columns faster than a few rows by its transpose."""

    input_weights: tuple[np.ndarray, ...]  # per layer (inputs, 4H), for rows of inputs
    recurrent_weights: tuple[np.ndarray, ...]  # per layer (4H, H)
    biases: tuple[np.ndarray, ...]  # per layer bias_ih + bias_hh, (4H,)
    linear_weight: np.ndarray  # (H, 256), for rows
    linear_bias: np.ndarray

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> _Network:
        try:
            hidden = state["lstm.weight_hh_l0"].shape[1]
            # PyTorch's gates (i, f, g, o) reordered to (i, f, o, g) and negated, g twice over, so that one exp gives
            # them all: sigmoid(x) = 1 / (1 + exp(-x)), tanh(x) = 2 sigmoid(2x) - 1. numpy's float32 exp is
            # vectorised and its tanh is not (three times slower).
            order = np.r_[0:2 * hidden, 3 * hidden:4 * hidden, 2 * hidden:3 * hidden]
            scale = np.r_[np.full(3 * hidden, -1.0), np.full(hidden, -2.0)].astype(np.float32)[:, None]
            layers = range(3)
            w_ih = [state[f"lstm.weight_ih_l{k}"][order] * scale for k in layers]
            w_hh = [state[f"lstm.weight_hh_l{k}"][order] * scale for k in layers]
            bias = [(state[f"lstm.bias_ih_l{k}"] + state[f"lstm.bias_hh_l{k}"])[order] * scale[:, 0] for k in layers]
            return cls(tuple(np.ascontiguousarray(w.T) for w in w_ih), tuple(np.ascontiguousarray(w) for w in w_hh),
                       tuple(bias), np.ascontiguousarray(state["linear.weight"].T), state["linear.bias"])
        except KeyError as missing:
            raise ModelIntegrityError(f"the voice encoder weights lack {missing}") from None

    def partial_embeddings(self, mels: np.ndarray) -> np.ndarray:
        """(partials, frames, 40) -> (partials, 256), each L2-normalised."""
        batch, steps, _ = mels.shape
        layer_input = mels.reshape(batch * steps, -1)
        for w_input, w_recurrent, bias in zip(self.input_weights, self.recurrent_weights, self.biases, strict=True):
            hidden = w_recurrent.shape[1]
            # A layer's input projection for every step at once; only the recurrence goes step by step.
            projected = (layer_input @ w_input + bias).reshape(batch, steps, -1).transpose(1, 2, 0).copy()
            outputs = np.empty((steps, hidden, batch), dtype=np.float32)
            h = np.zeros((hidden, batch), dtype=np.float32)
            c = np.zeros((hidden, batch), dtype=np.float32)
            gates = np.empty((4 * hidden, batch), dtype=np.float32)
            scratch = np.empty((hidden, batch), dtype=np.float32)
            i, f, o, g = (gates[k * hidden:(k + 1) * hidden] for k in range(4))  # views, refilled every step
            # exp(-x) overflows to inf for a saturated gate, and 1 / (1 + inf) is the right 0.
            with np.errstate(over="ignore"):
                for t in range(steps):
                    np.matmul(w_recurrent, h, out=gates)
                    gates += projected[t]
                    np.exp(gates, out=gates)
                    gates += 1
                    np.reciprocal(gates, out=gates)
                    g *= 2
                    g -= 1
                    c *= f
                    i *= g
                    c += i
                    # h = o * tanh(c) = 2 o / (1 + exp(-2c)) - o
                    np.multiply(c, -2, out=scratch)
                    np.exp(scratch, out=scratch)
                    scratch += 1
                    np.divide(o, scratch, out=scratch)
                    scratch *= 2
                    h = outputs[t]
                    np.subtract(scratch, o, out=h)
            layer_input = outputs.transpose(2, 0, 1).reshape(batch * steps, hidden)
        embeddings = np.maximum(h.T @ self.linear_weight + self.linear_bias, 0)
        return embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)


class VoiceEncoder:
    """resemblyzer's embed_utterance(preprocess_wav(wav, sr)) in numpy, without the VAD trimming. Thread-safe: the
    weights are verified and loaded once, under a lock, on first use."""

    def __init__(self, weights: Path | None = None):
        path = weights or default_weights()
        self._pinned = PinnedModel("resemblyzer-voice-encoder", path.parent, {path.name: PRETRAINED_SHA256})
        self._path = path
        self._network: _Network | None = None
        self._lock = threading.Lock()

    def _load(self) -> _Network:
        with self._lock:
            if self._network is None:
                self._pinned.verify()
                self._network = _Network.from_state(read_model_state(self._path))
                logger.debug("voice encoder loaded from %s", self._path)
            return self._network

    def embed(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        """One utterance (int16 or float samples at 8 or 16 kHz) -> its L2-normalised 256-dim float32 embedding."""
        return self.embed_many([(samples, sample_rate)])[0]

    def embed_many(self, clips: list[tuple[np.ndarray, int]]) -> np.ndarray:
        """(samples, sample_rate) per utterance -> (utterances, 256); all partials of all clips go through the LSTM
        as one batch, which is what makes many short segments cheap."""
        network = self._load()
        mels, owners = [], []
        for index, (samples, sample_rate) in enumerate(clips):
            wav = preprocess(samples, sample_rate)
            starts = partial_starts(len(wav))
            # Zero-pad so that the last partial is whole, as embed_utterance does.
            wav = np.pad(wav, (0, max(0, (starts[-1] + PARTIAL_FRAMES) * HOP - len(wav))))
            mels.append(mel_frames(wav)[starts[:, None] + np.arange(PARTIAL_FRAMES)])
            owners.append(np.full(len(starts), index))
        if not mels:
            return np.empty((0, EMBEDDING_SIZE), dtype=np.float32)
        all_mels = np.concatenate(mels)
        partials = np.concatenate([network.partial_embeddings(all_mels[first:first + PARTIALS_PER_BATCH])
                                   for first in range(0, len(all_mels), PARTIALS_PER_BATCH)])
        sums = np.zeros((len(clips), EMBEDDING_SIZE), dtype=np.float32)
        np.add.at(sums, np.concatenate(owners), partials)
        # The mean of the partials, normalised: dividing by their count first would not change the direction.
        return sums / np.linalg.norm(sums, axis=1, keepdims=True)


@functools.cache
def shared_encoder() -> VoiceEncoder:
    """One encoder per process (its weights load on first use), shared by every recogniser that attributes mono
    calls."""
    return VoiceEncoder()
