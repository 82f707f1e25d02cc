"""Model artifacts and adapters: the provisional rule scorer and the loader for the trained XGBoost model.

When `model.ubj` and `model.json` are present here, `pipeline.scoring.load_model` serves them;
otherwise it serves `provisional.ProvisionalRules`, whose version says `provisional`.
"""
