"""mmray: multimodal learning on Ray."""
