"""Loss functions and modules: representation (contrastive, triplet, InfoNCE, SigLIP), prediction heads, generation."""
