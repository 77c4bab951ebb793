"""What collectors capture and renderers read: plain data beside the model.

Collectors (which read the process) build these; renderers (which only format) import them from
here and never import a collector, so the layers stay readable from the imports
(tests/test_layering.py checks it).
"""
