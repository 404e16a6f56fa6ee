"""The running gateway: settings assembly, the service tree, supervisor and workers, the demo.

Only :mod:`karpor.cli` and the ``twistd`` plugin import it.
"""
