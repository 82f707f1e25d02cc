"""Build of the optional C extensions of the pipeline's compute core (everything else is in pyproject.toml).

- `pipeline._ctrees` scores the trained booster exactly as XGBoost does, without its fixed cost per
  call (pipeline/compiled_model.py). No -ffast-math: the float operations must stay in XGBoost's order.
- `pipeline._cforest` applies the common case of `DeviceForest.apply` (pipeline/tree.py).

They need only gcc and Python's headers. `optional=True`: where they cannot be built (no compiler,
an agent-only install) the install still succeeds and the pipeline runs the Python and numpy paths,
which compute the same values (tests/unit/test_compiled_model.py, tests/unit/test_tree_compiled.py).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pipeline._ctrees",
            sources=["pipeline/_ctrees.c"],
            extra_compile_args=["-O2", "-fno-fast-math", "-ffp-contract=off"],
            optional=True,
        ),
        Extension("pipeline._cforest", sources=["pipeline/_cforest.c"], optional=True),
    ]
)
