"""A kube-apiserver simulator: the test double for the demo, the tests and the benchmarks."""
