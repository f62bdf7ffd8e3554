"""Artifacts a job publishes and others consume: model bundles and index bundles."""
