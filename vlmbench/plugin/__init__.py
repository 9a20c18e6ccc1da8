"""The plugin contracts: what a model, metric or QA generator implements, the requests models answer,
typed plugin options, the lazy registries, the hooks and how plugins are found and loaded."""
