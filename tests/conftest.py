"""Settings shared by every test.

Hypothesis runs without its per-example deadline: these machines are shared
and noisy, and a slow example is not a wrong one (speed is measured by
``bench/``, never by a test).  Every other hypothesis default stays.
"""

from hypothesis import settings

settings.register_profile("karpor", deadline=None)
settings.load_profile("karpor")
