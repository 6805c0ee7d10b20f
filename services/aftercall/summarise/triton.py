"""The Triton summariser backend: the redacted transcript goes to the `call_summariser` model over Triton's gRPC
API (`tritonclient`), the summary fields come back. Same interface as EmbeddedSummariser, so the pipeline, its
redaction re-check and the summary contract do not change with the backend.

tritonclient's asyncio client, on an event loop of its own: the pipeline's stages run in worker threads (and the
CLI has no loop), so `summarise` stays a plain call while every thread's requests share one channel.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import weakref
from typing import Any

import numpy as np

from aftercall.core.config import existing_file, uses_tls
from aftercall.core.errors import BackendUnavailableError, ConfigError, UserError
from aftercall.core.transcript import Transcript
from aftercall.summarise.config import TritonConfig
from aftercall.summarise.taxonomy import Disposition, taxonomy_to_toml

logger = logging.getLogger(__name__)


def client_tls(config: TritonConfig) -> dict[str, Any]:
    """tritonclient's TLS arguments. It opens the certificate files itself: it is given their paths, checked here."""
    return {"ssl": uses_tls(config, "tls_"),
            "root_certificates": existing_file(config.tls_ca_file, "triton.tls_ca_file"),
            "private_key": existing_file(config.tls_key_file, "triton.tls_key_file"),
            "certificate_chain": existing_file(config.tls_cert_file, "triton.tls_cert_file")}


class TritonSummariser:
    def __init__(self, config: TritonConfig):
        self._config = config
        tls = client_tls(config)
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="triton-client", daemon=True).start()
        self._client = self._call(self._connect(tls))
        self._ready = False
        self._ready_lock = asyncio.Lock()
        # Closed with the object (or at exit): the channel, then the loop and its thread.
        self.close = weakref.finalize(self, _shut_down, self._loop, self._client)

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _connect(self, tls: dict[str, Any]):
        import tritonclient.grpc.aio as grpcclient

        return grpcclient.InferenceServerClient(self._config.url, **tls)  # its channel belongs to this loop

    def summarise(self, transcript: Transcript, taxonomy: tuple[Disposition, ...]) -> dict:
        return self._call(self._summarise(transcript, taxonomy))

    async def _wait_for_model(self) -> None:
        """Once per process: the server up and the model loaded, within triton.ready_timeout_s."""
        async with self._ready_lock:
            if self._ready:
                return
            deadline = time.monotonic() + self._config.ready_timeout_s
            problem = "not reachable"
            while True:
                try:
                    if not await self._client.is_server_live(client_timeout=5):
                        problem = "not live"
                    elif not await self._client.is_model_ready(self._config.model, client_timeout=5):
                        problem = f"model {self._config.model!r} is not loaded"
                    else:
                        self._ready = True
                        return
                except Exception as exc:  # noqa: BLE001 - tritonclient raises its own exception types
                    problem = f"not reachable ({str(exc).splitlines()[0][:200]})"
                if time.monotonic() >= deadline:
                    raise BackendUnavailableError(f"Triton at {self._config.url}: {problem} after "
                                                  f"{self._config.ready_timeout_s:g} s (triton.ready_timeout_s)")
                await asyncio.sleep(0.5)

    async def _summarise(self, transcript: Transcript, taxonomy: tuple[Disposition, ...]) -> dict:
        import tritonclient.grpc.aio as grpcclient
        from tritonclient.utils import InferenceServerException

        await self._wait_for_model()
        document = {"turns": [t.to_json() for t in transcript.turns], "call_id": transcript.call_id}
        # The taxonomy always goes along: the server's own default may come from another aftercall release.
        inputs = [_bytes_input(grpcclient, "TRANSCRIPT_JSON", json.dumps(document, ensure_ascii=False)),
                  _bytes_input(grpcclient, "TAXONOMY_TOML", taxonomy_to_toml(taxonomy))]
        try:
            result = await self._client.infer(self._config.model, inputs,
                                              outputs=[grpcclient.InferRequestedOutput("SUMMARY_JSON")],
                                              client_timeout=self._config.timeout_s)
        except InferenceServerException as exc:
            status = exc.status() or ""
            if "INVALID_ARGUMENT" in status:
                raise UserError(f"Triton model {self._config.model} refused the transcript: {exc.message()}") from exc
            if "NOT_FOUND" in status:
                raise ConfigError(f"config triton.model: {exc.message()}") from exc
            self._ready = False  # look again before the next call
            raise BackendUnavailableError(f"Triton at {self._config.url}: {status}: {exc.message()}") from exc
        return json.loads(result.as_numpy("SUMMARY_JSON").reshape(-1)[0])


def _shut_down(loop: asyncio.AbstractEventLoop, client) -> None:
    if loop.is_running():
        asyncio.run_coroutine_threadsafe(client.close(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)


def _bytes_input(grpcclient, name: str, text: str):
    tensor = grpcclient.InferInput(name, [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[text.encode("utf-8")]], dtype=np.object_))
    return tensor
