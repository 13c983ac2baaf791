"""Built-in tasks: each module registers itself on import."""
import importlib
import pkgutil

ROBERTA_PLUGIN_PACKAGE = True

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
