"""Exported graphs, running them on images, video and behind an HTTP server."""
