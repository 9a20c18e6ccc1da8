"""Tasks: the YAML spec, reading samples and images, prompts and candidates, and the answer filters a
task names."""
