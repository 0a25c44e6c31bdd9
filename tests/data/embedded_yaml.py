"""conf/data/embedded.yaml's values for tests that call the data library directly (the library
has no defaults of its own: one default per key, in YAML)."""

from __future__ import annotations

from deblur.config import compose, to_container
from deblur.data.deadleaves import DeadLeaves

_EMBEDDED = to_container(compose("train", ["data=embedded"]).data.embedded)

BUILD = {
    k: _EMBEDDED[k]
    for k in (
        "long_side",
        "blurs_per_photo",
        "kernel_size",
        "min_length",
        "max_length",
        "noise_sigma",
        "seed",
    )
}
"""The build keys of data.embedded but ``photos`` (tests pass their own photo list)."""

LEAVES = DeadLeaves.from_config({k: v for k, v in _EMBEDDED["procedural"].items() if k != "colors"})
"""The dead-leaves generator as data=embedded configures it."""
