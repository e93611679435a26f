"""The Opta flow: photo + goal → clarifying questions → optimized answer (issue #7)."""
