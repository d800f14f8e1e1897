"""The trusted evaluation engine: compute a task's recorded requests on one checkpoint.

It sees request texts and model weights, never submission code. For now it calls
lm-eval's own Hugging Face backend, so responses equal what lm-eval computes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .tasks import RequestKey


def hf_responses(checkpoint: Path, requests: list[RequestKey], batch_size: int = 64) -> dict[RequestKey, Any]:
    """Responses of lm-eval's HFLM on `checkpoint` to every request."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(checkpoint), device="cpu", dtype="float32", batch_size=batch_size)
    responses: dict[RequestKey, Any] = {}
    for kind in ("loglikelihood", "loglikelihood_rolling", "generate_until"):
        keys = [key for key in requests if key[0] == kind]
        if keys:
            instances = [Instance(kind, {}, tuple(json.loads(args)), i) for i, (_, args) in enumerate(keys)]
            responses.update(zip(keys, getattr(lm, kind)(instances, disable_tqdm=True)))
    return responses
