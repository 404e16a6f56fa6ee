"""The request path: routing, header rewriting, upstream pools, streaming and splicing."""
