"""Training on pinned kernels: the same embedded set whatever the environment says.

Left to itself, torch picks its CPU kernels by the processor: ATen's vector code by the
widest instruction set there (AVX2, AVX-512), Intel MKL's matrix products and vector maths
by vendor and model. Each rounds differently, training amplifies the difference, and two
machines built two sets with the same seed (docs/zoo.md, *Pinned kernels and the
organizers' set*: another SQ by 0.09). So the set is trained in a child process whose
kernels are pinned before torch starts:

- ATen's vector code at AVX2 (`ATEN_CPU_CAPABILITY=avx2`, also on AVX-512 machines):
  plain IEEE arithmetic and FMA, the same on any processor that has them; a processor
  without AVX2 gets the scalar code, and another set (its digest says so);
- MKL's CNR branch `COMPATIBLE` (`MKL_CBWR`) for the matrix products: SSE2 without the
  approximate reciprocal instructions, fixed blocking and reductions, the branch Intel
  documents as reproducible on Intel and other processors alike (measured: the same
  products on an AMD EPYC and two Intel Xeons); oneDNN capped at AVX2;
- a fixed number of threads (`THREADS`), as reductions split by thread.

MKL's vector maths, which ATen calls for torch.sqrt, exp, log, tanh … of float tensors, is
not pinned that far: plain AdamW, whose only operation outside IEEE arithmetic is that
square root, trained differently on an AMD EPYC and an Intel Xeon under COMPATIBLE. So the
training calls none of it (a test checks): its optimizer is the fused AdamW (zoo.adamw),
whose square root is the processor's IEEE instruction.
The weights' digest (`weights_digest`) goes into the set's manifest, so that a run can
say whether its set is the organizers' (`sets.ORGANIZERS_DIGESTS`).
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from pathlib import Path

from ..errors import UserError

THREADS = 2  # the reference machine's cores; 1 thread trains the default set 1.6x slower
MARKER = "E2LMC_PINNED_KERNELS"  # set in the child: its kernels are pinned
OPTIMIZER = "AdamW, fused"  # zoo.adamw, named in the build record: a set trained before it is another set
OVERRIDDEN = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA",
              "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def cpu_flags() -> set[str]:
    """The processor's instruction-set flags (/proc/cpuinfo); empty where it cannot say."""
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return set()
    return set(flags.partition(":")[2].split())


def has_avx2() -> bool:
    """Whether this is an x86-64 processor with AVX2 and FMA (ATen's AVX2 code needs both)."""
    return {"avx2", "fma"} <= cpu_flags()


def pinned_environment(base: dict[str, str]) -> dict[str, str]:
    """`base` with the kernels pinned (whatever `base` said of them)."""
    env = {k: v for k, v in base.items() if k not in OVERRIDDEN}
    if platform.machine() in ("x86_64", "AMD64"):
        env.update(ATEN_CPU_CAPABILITY="avx2" if has_avx2() else "default", MKL_CBWR="COMPATIBLE",
                   ONEDNN_MAX_CPU_ISA="AVX2")
    env.update(OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS), **{MARKER: "1"})
    return env


def kernels_pinned() -> bool:
    return os.environ.get(MARKER) == "1"


def describe_kernels(native: bool = False) -> dict[str, str]:
    """What the set trains with (its build record): the pinned child's kernels, or `native`ly
    (a study of the recipe across seeds) whatever torch picks on this processor."""
    if native:
        return {"machine": platform.machine(), "aten": "native", "mkl": "native",
                "threads": os.environ.get("OMP_NUM_THREADS", "torch's default")}
    env = pinned_environment(dict(os.environ))
    return {"machine": platform.machine(), "aten": env.get("ATEN_CPU_CAPABILITY", "native"),
            "mkl": env.get("MKL_CBWR", "native"), "threads": env["OMP_NUM_THREADS"]}


def run_pinned(argv: list[str], what: str) -> None:
    """`python argv…` in a child with the kernels pinned; one sentence if it fails (the
    child has printed its own message above)."""
    done = subprocess.run([sys.executable, *argv], env=pinned_environment(dict(os.environ)))
    if done.returncode != 0:
        raise UserError(f"{what} failed (exit code {done.returncode}; its message is above)")


def weights_digest(folder: Path) -> str:
    """SHA-256 over every safetensors file under `folder`, by relative path: equal digests,
    bit-identical weights."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.safetensors")):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        with open(path, "rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()
