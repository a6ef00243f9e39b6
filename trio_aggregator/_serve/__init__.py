"""The ``trio-aggregator`` command line app, ``serve`` and ``demo``, apart from the library.

``serve`` is a line collector: many clients connect over TCP or a Unix socket and send
newline-delimited records; every complete line goes, whole, into one output through one
`trio_aggregator.Aggregator`. The app is built on the public API of `trio_aggregator`
only, and ``import trio_aggregator`` imports none of it. One module per part:

* ``_cli``: the ``trio-aggregator`` command (`main`), its arguments and their parsing
  (``_argtypes``: the types of the arguments);
* ``_options``: `ServeOptions`, what ``serve`` is told, checked at construction;
* ``_checks``: the rules every setting follows, the options' and the arguments' alike;
* ``_server``: `LineServer`, which puts the parts below together (outputs,
  listeners, collector, signals, status line, summary);
* ``_outputs``: the output file and the ``--forward`` targets, each with its own
  aggregator (its own buffer and ``when_full``); SIGHUP's reopening of the file;
* ``_forward_args``: the ``--forward*`` arguments;
* ``_collector``: `LineCollector` accepts connections and hands the complete lines of
  each chunk read to the aggregator, as one write;
* ``_lines``: `LineSplitter` cuts one connection's bytes into lines, truncating the
  over-long ones, and counts what it did;
* ``_framing``: ``--framing``, syslog's octet-counted and traditional frames
  (`FrameSplitter`), escaping, framing errors; ``_binary``: binary records counted, or
  rejected;
* ``_listeners``: ``HOST:PORT`` addresses, and the TCP and Unix listeners;
* ``_statistics``: the collector's counters and the summary printed at the end;
* ``_losses``: what was read and not written, in lines and bytes, by reason;
* ``_metrics``: ``--metrics``, the aggregator's Prometheus metrics over HTTP (with
  `trio_aggregator.prometheus`, which needs the ``prometheus`` extra);
* ``_demo``: ``trio-aggregator demo``, the server under load, checked line by line.
"""

from __future__ import annotations
