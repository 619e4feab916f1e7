"""analysis: joins window entropies, equilibrium integrals, figures."""
