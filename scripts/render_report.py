"""Look at a report as a participant's browser shows it: headless Chromium, no network.

    python scripts/render_report.py demo_output/detailed_results.html [--out report.png] [--width 1100]

Checks first that the page loads nothing from outside (every src and href is a `data:`
URI or an anchor; no script, stylesheet link, frame or CSS url()), then renders it with
Debian's Chromium (`apt-get install chromium`) with every network request refused, and
writes a full-page screenshot. Not a test: it needs Chromium, which CI does not install.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from e2lmc.scoring.html import ATTRIBUTE, outside_resources


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--out", type=Path, default=Path("report.png"))
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--height", type=int, default=4000, help="the screenshot's height in pixels")
    args = parser.parse_args()
    html = args.report.read_text(encoding="utf-8")
    if outside := outside_resources(html):
        print(f"{args.report} loads from outside: {outside[:5]}", file=sys.stderr)
        return 1
    print(f"{args.report}: no outside resources ({len(ATTRIBUTE.findall(html))} src/href, all data: or anchors)")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("no chromium here: apt-get install chromium", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                        "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",  # any request fails
                        f"--window-size={args.width},{args.height}", "--hide-scrollbars",
                        f"--screenshot={args.out.resolve()}", args.report.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
