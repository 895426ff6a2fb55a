"""Interventions tab: ablation and activation patching."""
