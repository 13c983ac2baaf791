"""`python -m roberta.cli.sweep`: the same as the roberta-sweep command."""
from roberta.cli.sweep import cli_main

cli_main()
