"""The pgqueuer benchmark tool: ``python -m benchmarks --help`` (see README.md here)."""
