"""Torch modules and weight loading (TV-L1 solver, pose and detector models). No Beam here."""
