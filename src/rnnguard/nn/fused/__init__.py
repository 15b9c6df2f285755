"""Fused fast paths of the recurrent layers."""
