"""Inference backends behind one `Engine` protocol, and the pre/post-processing around them.

This package must import without torch: it is what the daemon runs on an embedded CPU.
"""
