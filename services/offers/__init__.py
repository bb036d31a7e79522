"""offers: triggers to rewards, holdouts, contact policy, offer lifecycle."""
