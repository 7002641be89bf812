"""Small helpers shared by every script: atomic file writes and distributed bookkeeping."""
