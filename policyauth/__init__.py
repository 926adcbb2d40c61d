"""policyauth."""
