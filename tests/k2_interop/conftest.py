"""Tests of gtn_py.k2 against k2 itself (the directory is not named ``k2``: on sys.path it
would shadow the real package as a namespace package). They run in the k2 environment (Python 3.10, torch
1.13.1, k2 1.23.4) that `make test` builds with tools/k2_env.sh; in an environment without k2
this directory is not collected (tests/test_k2_optional.py covers that case)."""

import importlib.util

_spec = importlib.util.find_spec("k2")
if _spec is None or _spec.origin is None:  # absent, or only a namespace package
    collect_ignore_glob = ["*.py"]
