"""The after-training workflow: ensembles of prediction folders and the search for the best configuration.

ensemble_folders.py   `xtlunet ensemble`: the mean of CASE.npz probabilities of several prediction folders
models.py             the trained models of a dataset and their cross-validation exports
select.py             `xtlunet find-best-configuration`: score, choose, learn post-processing
instructions.py       inference_instructions.json / .txt with the exact commands
"""
