"""Dependencies point one way: core.gan knows nothing of the platform, core's platform modules nothing of torch."""

import subprocess
import sys

PLATFORM_LIBS = ("flask", "celery", "sqlalchemy", "boto3", "botocore")


def _modules_after_import(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {name.split(".")[0] for name in result.stdout.split()}


def test_engine_imports_no_platform_library():
    loaded = _modules_after_import("import core.gan.train, core.gan.sample, core.gan.metrics, core.cli")
    assert "torch" in loaded  # the check is live: the engine really was imported
    assert not loaded & set(PLATFORM_LIBS), f"core.gan pulled in {sorted(loaded & set(PLATFORM_LIBS))}"


def test_settings_import_without_torch():
    assert "torch" not in _modules_after_import("import core.settings")
