"""The Amazon Berkeley Objects (ABO) dataset plugin: the single-word QA pipeline.

``download`` fetches the public archives, ``reader`` streams product listings with their main image,
``curation`` validates generated question-answer pairs and writes the curation report, ``splits``
assigns images to train/val/test, ``export`` writes the CSV files and the Hugging Face dataset, and
``prepare`` runs all of it for the ``abo_single_word`` task. ``commands`` holds ``vlmbench data
download abo`` and ``vlmbench data prepare abo_single_word``. See docs/data.md.
"""
