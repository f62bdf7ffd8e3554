"""Serving: plain classes with the logic (usable without Serve), thin Ray Serve deployments, the
FastAPI ingress and the application builder."""
