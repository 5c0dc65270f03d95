"""Kaggle: the client (``api``, the only importer of ``kaggle``), data and weights transfer,
submit/push/status actions, the kernel packer and the kernel's entry point."""
