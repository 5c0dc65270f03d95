"""Kaggle, by task: ``download`` the competition data, stage and upload the ``weights``
dataset, build/push/follow ``kernels`` (``pack`` makes the script, ``kernel`` is what runs on
Kaggle), and ``submissions``; ``api`` (the only importer of ``kaggle``) and ``credentials``
underneath. Library modules return results and log progress; the CLI prints."""
