"""Write the top-level competition.yaml: the embedded-set bundle's, with every default
(tests/test_real_series.py checks that it equals what `e2lmc bundle` builds).

Run from the repository root: python scripts/write_competition_yaml.py
"""

from pathlib import Path

from e2lmc.organizer.bundle import default_competition_text

Path("competition.yaml").write_text(default_competition_text(), encoding="utf-8")
print("wrote competition.yaml")
