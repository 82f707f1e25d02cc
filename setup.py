"""Build of the optional C extension `pipeline._ctrees` (everything else is in pyproject.toml).

The extension scores the trained booster exactly as XGBoost does, without its fixed cost per call
(pipeline/compiled_model.py). It needs only gcc and Python's headers. `optional=True`: where it
cannot be built (no compiler, an agent-only install) the install still succeeds and the pipeline
scores through XGBoost and numpy instead. No -ffast-math: the float operations must stay in the
order XGBoost performs them.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pipeline._ctrees",
            sources=["pipeline/_ctrees.c"],
            extra_compile_args=["-O2", "-fno-fast-math", "-ffp-contract=off"],
            optional=True,
        )
    ]
)
