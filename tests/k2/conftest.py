"""Tests of gtn_py.k2 against k2 itself. They run in the k2 environment (Python 3.10, torch
1.13.1, k2 1.23.4) that `make test` builds with tools/k2_env.sh; in an environment without k2
this directory is not collected (tests/test_k2_optional.py covers that case)."""

import importlib.util

if importlib.util.find_spec("k2") is None:
    collect_ignore_glob = ["*.py"]
