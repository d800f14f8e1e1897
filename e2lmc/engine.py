"""The trusted evaluation engine: compute a task's recorded requests on one checkpoint.

It sees request texts and model weights, never submission code. For now it calls
lm-eval's own Hugging Face backend, so responses equal what lm-eval computes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .tasks import RequestKey

KINDS = ("loglikelihood", "loglikelihood_rolling", "generate_until")


def hf_responses(checkpoint: Path, requests: list[RequestKey], batch_size: int = 64,
                 progress: bool = False) -> list[Any]:
    """Responses of lm-eval's HFLM on `checkpoint`, in the order of `requests`."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(checkpoint), device="cpu", dtype="float32", batch_size=batch_size)
    responses: list[Any] = [None] * len(requests)
    for kind in KINDS:
        indices = [i for i, (k, _) in enumerate(requests) if k == kind]
        if indices:
            instances = [Instance(kind, {}, tuple(json.loads(requests[i][1])), i) for i in indices]
            for i, response in zip(indices, getattr(lm, kind)(instances, disable_tqdm=not progress), strict=True):
                responses[i] = response
    return responses
