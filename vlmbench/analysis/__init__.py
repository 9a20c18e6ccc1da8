"""Reading finished runs: leaderboards, paired comparisons and their gates, figures and report pages."""
