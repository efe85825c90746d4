"""What the stages know about labels: the label store (``store``: pair keys, staging, quarantine, reading), the
shard lease (``lease``), the LLM judges (``judges``), the training frames built from CTR and LLM labels
(``training_data``) and the teacher-scored pairs the student distils on (``kd_pairs``)."""
