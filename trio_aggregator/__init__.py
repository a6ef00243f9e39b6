"""Many Trio tasks write; one task hands each write, whole and in order, to a single writer."""

from __future__ import annotations

from ._aggregator import Aggregator as Aggregator
from ._aggregator import connect_aggregator as connect_aggregator
from ._aggregator import open_aggregator as open_aggregator
from ._config import AggregatorConfig as AggregatorConfig
from ._errors import AggregatorClosedError as AggregatorClosedError
from ._errors import AggregatorError as AggregatorError
from ._errors import InvalidWriterError as InvalidWriterError
from ._errors import StillRunningError as StillRunningError
from ._forward import TcpForwardSink as TcpForwardSink
from ._forward import TcpForwardStatistics as TcpForwardStatistics
from ._logging_handler import AggregatorHandler as AggregatorHandler
from ._sender import AggregatorSender as AggregatorSender
from ._sinks import FileSink as FileSink
from ._sinks import RotatingFileSink as RotatingFileSink
from ._sinks import StreamSink as StreamSink
from ._statistics import AggregatorStatistics as AggregatorStatistics

__version__ = "0.1.0"
