"""Loaded by pytest before its plugins (`-p tests.startup` in pyproject's addopts).

jsonschema, which nbval reaches through nbformat, imports the optional package
rfc3987_syntax when it is installed (JupyterLab's dependencies install it) to
check the "iri" string format, and that import builds a Lark grammar: ~1 s of
CPU in every pytest process (the controller and each xdist worker), before any
test runs. No schema the tests validate (notebooks: nbformat's) uses that
format, so the package is hidden here and jsonschema goes on without it, as it
does where the package is not installed."""
import sys

sys.modules.setdefault("rfc3987_syntax", None)
