"""Ray itself: connecting (embedded or an existing cluster), submitting jobs, and the Ray internals mmray relies on."""
