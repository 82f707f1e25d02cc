"""Build of the optional C extensions of the pipeline's compute core (everything else is in pyproject.toml).

- `pipeline._ctrees` scores the trained booster exactly as XGBoost does, without its fixed cost per
  call (pipeline/compiled_model.py). No -ffast-math: the float operations must stay in XGBoost's order.
- `pipeline._cring` is `Ring`, a process's evidence records as one int64 buffer (pipeline/_ring.h, which
  `_cforest`, `_cfeatures` and `_cstate` read it through).
- `pipeline._cforest` applies the common case of `DeviceForest.apply` (pipeline/tree.py).
- `pipeline._cfeatures` computes the rows of `feature_matrix` (pipeline/features.py); no -ffast-math
  either: its float32 sums follow numpy's order, so the matrices are equal byte for byte.
- `pipeline._cstate` writes a device's process rows of the state records in one call (evidence packed and
  base64ed, rows re-encoded from their previous bytes; pipeline/tree_state.py).
- `schemas._cfastcodec` proves an events record canonical and valid in one pass over its bytes, so
  `schemas.fastcodec` skips its re-encoding proof (the Python proof stays, tested equal).

They need only gcc and Python's headers (`_cforest`, `_cfeatures` and `_cstate` share pipeline/_slots.h).
`optional=True`: where they cannot be built (no compiler, an agent-only install) the install still
succeeds and the pipeline runs the Python and numpy paths, which compute the same values
(tests/unit/test_compiled_model.py, tests/unit/test_tree_compiled.py, tests/unit/test_features_compiled.py,
tests/unit/test_cfastcodec.py, tests/unit/test_tree_state_compiled.py).
"""

from setuptools import Extension, setup

_EXACT_FLOATS = ["-O2", "-fno-fast-math", "-ffp-contract=off"]

setup(
    ext_modules=[
        Extension(
            "pipeline._ctrees",
            sources=["pipeline/_ctrees.c"],
            extra_compile_args=_EXACT_FLOATS,
            optional=True,
        ),
        Extension("pipeline._cring", sources=["pipeline/_cring.c"], depends=["pipeline/_ring.h"], optional=True),
        Extension(
            "pipeline._cforest",
            sources=["pipeline/_cforest.c"],
            depends=["pipeline/_slots.h", "pipeline/_ring.h"],
            optional=True,
        ),
        Extension(
            "pipeline._cfeatures",
            sources=["pipeline/_cfeatures.c"],
            depends=["pipeline/_slots.h", "pipeline/_ring.h"],
            extra_compile_args=_EXACT_FLOATS,
            optional=True,
        ),
        Extension(
            "pipeline._cstate",
            sources=["pipeline/_cstate.c"],
            depends=["pipeline/_slots.h", "pipeline/_ring.h"],
            optional=True,
        ),
        Extension("schemas._cfastcodec", sources=["schemas/_cfastcodec.c"], optional=True),
    ]
)
