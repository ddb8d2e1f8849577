"""Built-in synthetic example datasets in nnU-Net v2 raw format (deterministic, written in seconds).

`make_example("brain-ms", raw_root)` writes `raw_root/Dataset501_BrainMS`; see documentation/examples.md.
"""
from __future__ import annotations

from pathlib import Path

from xtlunet.dataset.examples import brain_ms, mammo, prostate
from xtlunet.dataset.examples._writer import Example, replace_folder
from xtlunet.errors import XtlunetError, look_up_option

EXAMPLES: dict[str, Example] = {e.name: e for e in (brain_ms.EXAMPLE, prostate.EXAMPLE, mammo.EXAMPLE)}

__all__ = ["EXAMPLES", "Example", "make_example"]


def make_example(name: str, out_dir: str | Path, cases: int | None = None, seed: int = 0,
                 test_cases: int | None = None) -> Path:
    """Write example dataset `name` as out_dir/DatasetNNN_Name (replacing any previous one); return that folder.
    `test_cases` sizes the labelled test set of an example that has one (brain-ms)."""
    example = EXAMPLES[look_up_option(name, list(EXAMPLES), "example dataset")]
    n = example.default_cases if cases is None else cases
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise XtlunetError(f"--cases must be a positive whole number, got {cases!r}",
                           fix=f"e.g. --cases {example.default_cases} (the default)")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise XtlunetError(f"the seed must be a whole number ≥ 0, got {seed!r}", fix="e.g. --seed 0")
    extra: dict[str, int] = {}
    if test_cases is not None:
        if not example.default_test_cases:
            with_test = ", ".join(e.name for e in EXAMPLES.values() if e.default_test_cases)
            raise XtlunetError(f"the {example.name} example has no test set, so --test-cases does not apply",
                               fix=f"leave --test-cases out (examples with a test set: {with_test})")
        if isinstance(test_cases, bool) or not isinstance(test_cases, int) or test_cases < 1:
            raise XtlunetError(f"--test-cases must be a positive whole number, got {test_cases!r}",
                               fix=f"e.g. --test-cases {example.default_test_cases} (the default)")
        extra["test_cases"] = test_cases
    final = Path(out_dir).expanduser() / example.folder
    return replace_folder(final, lambda tmp: example.build(tmp, n, seed, **extra))
