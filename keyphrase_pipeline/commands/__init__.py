"""``kp`` commands an operator runs by hand, outside the daily DAG: ``inputs`` (is a day's input there, within
contract; also the DAG's sensor), ``promote``, ``rollback``, ``score``, ``eval_labels`` (the transfer protocol on
a judged file) and ``label_reviews`` (human verdicts as a labels file)
and ``devices`` (what a worker has). Each has ``add_arguments`` and ``main``."""
