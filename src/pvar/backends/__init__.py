"""Model back-ends: where the offline models come from and how they are loaded."""
