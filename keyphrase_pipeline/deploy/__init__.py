"""Running the pipeline somewhere: Airflow standalone on one machine (``airflow_standalone``, ``demo``: ``kp
demo``), the deployed topology natively on localhost (``cluster``, ``topology``: ``make cluster``; the compose
file is generated from the same topology) and its end-to-end and fault checks on the demo world
(``cluster_e2e``, ``cluster_faults``: ``make cluster-e2e``)."""
