r"""The oracle: trace files of one TRPO update and the verdict on a candidate's trace.

==========================================  ==============================================
what                                        where
==========================================  ==============================================
the schema (every key; drives all below)    :mod:`trpo_ref.oracle.schema`
write (atomically) / read a trace file      :meth:`Trace.save` / :func:`load_trace`
record trpo_ref's own update                :func:`compute_trace`
the stage-wise verdict (default)            :func:`check_trace`, :func:`check_stagewise`
the end-to-end comparison                   :func:`compare_traces`, ``check_trace(mode="end-to-end")``
reference cases and planted bugs            :mod:`trpo_ref.oracle.cases`
==========================================  ==============================================

``docs/trace-format.md`` specifies the file; ``docs/oracle.md`` shows the
workflow.  Loading never unpickles (``allow_pickle=False``).
"""

from .cases import BUGS, candidate_update, golden_cases, golden_trace, realistic_case, synthetic_case
from .check import DRIFT_KEYS, MODES, check_trace, rounding_spread
from .compare import Report, Row, compare_files, compare_traces
from .io import Trace, load_trace, trace_from_arrays
from .record import compute_trace, recompute
from .schema import (DEFAULT_ATOL, DEFAULT_RTOL, FIELDS, FORMAT_NAME, FORMAT_VERSION, INPUT_KEYS, OUTPUT_KEYS,
                     READ_VERSIONS, TOLERANCES, Field, tolerance)
from .stagewise import check_stagewise

__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "READ_VERSIONS", "DEFAULT_RTOL", "DEFAULT_ATOL", "TOLERANCES", "tolerance",
    "FIELDS", "Field", "INPUT_KEYS", "OUTPUT_KEYS", "Trace", "Row", "Report", "compute_trace", "recompute",
    "load_trace", "trace_from_arrays", "compare_traces", "compare_files", "check_trace", "check_stagewise",
    "rounding_spread", "DRIFT_KEYS", "MODES", "synthetic_case", "golden_cases", "golden_trace", "realistic_case",
    "candidate_update", "BUGS",
]
