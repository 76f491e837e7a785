"""The authors' released SAMCL modules, read without running their pickles (`unpickle`) and written as a samcl
store whose modules keep the authors' forward (`importer`; the "reference" heat mode of `samcl.method.augmodule`)."""

from .._renamed import renamed_names
from .importer import REFERENCE_DOMAINS, SELECTOR_FILE, import_reference
from .unpickle import ReferenceFileError, load_reference_file

__all__ = ["REFERENCE_DOMAINS", "SELECTOR_FILE", "import_reference", "load_reference_file", "ReferenceFileError"]
__getattr__ = renamed_names(__name__, {"REFERENCE_CLASSES": "REFERENCE_DOMAINS"}, globals())
