"""Collect human preferences on audio: a listening-test app whose answers become preference datasets."""

from .._lazy import lazy_exports


# Imported on first use (PEP 562), so that `hfpref --help` stays fast.
_SOURCES = {
    "AnnotationApp": ".app",
    "Session": ".storage",
    "annotation_report": ".report",
    "append_answer": ".storage",
    "build_preference_dataset": ".export",
    "export_annotations": ".export",
    "judgments": ".export",
    "load_items": ".items",
    "make_server": ".app",
    "read_answers": ".storage",
    "render_report_markdown": ".report",
    "serve": ".app",
}
__all__ = sorted(_SOURCES)

__getattr__, __dir__ = lazy_exports(__name__, _SOURCES, globals())
