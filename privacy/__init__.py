"""Privacy boundary: keyed pseudonyms, field policies, Presidio scrubbing, audit chain."""
