"""Documents parsed once, read back by later passes (see `Spool`)."""

from __future__ import annotations

import marshal
import struct
import tempfile
from collections.abc import Callable, Iterator
from typing import IO

from mlgate.manifests import DocRef, Document, InputError, Source

_LENGTH = struct.Struct("<I")


class Spool:
    """Documents parsed by one pass, kept in temporary files for the next passes, so that `mlgate
    check` parses each document once and memory still stays flat however long the input is.

    Kept with marshal, many times faster to read back than YAML and exact for what a document
    holds (JSON values, shared and recursive ones from YAML aliases included). Close it (or use
    it as a context manager) to delete the files.
    """

    def __init__(self) -> None:
        self._files: dict[Source, IO[bytes]] = {}
        self._complete: set[Source] = set()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()
        self._complete.clear()

    def has(self, source: Source) -> bool:
        return source in self._complete

    def writer(self, source: Source) -> Callable[[Document | InputError], None] | None:
        """Recording starts over: a pass abandoned half way leaves nothing to replay. None when
        no temporary file can be made: later passes then parse the source again."""
        self._drop(source)
        try:
            # Closed by close(), not here: it lives from the first pass to the last.
            handle = tempfile.TemporaryFile(prefix="mlgate-parsed-")  # noqa: SIM115
        except OSError:
            return None
        self._files[source] = handle

        def keep(item: Document | InputError) -> None:
            if handle.closed:  # dropped: this source is parsed again
                return
            record = (
                (item.ref.source, item.ref.document, item.ref.item, item.ref.line, item.obj)
                if isinstance(item, Document)
                else (str(item), item.source)
            )
            try:
                data = marshal.dumps(record)
                handle.write(_LENGTH.pack(len(data)) + data)
            except (OSError, ValueError):  # a full disk, a value marshal refuses: parse again
                self._drop(source)

        return keep

    def _drop(self, source: Source) -> None:
        self._complete.discard(source)
        handle = self._files.pop(source, None)
        if handle is not None:
            handle.close()

    def done(self, source: Source) -> None:
        if source in self._files:
            self._complete.add(source)

    def replay(self, source: Source) -> Iterator[Document | InputError]:
        handle = self._files[source]
        handle.flush()
        handle.seek(0)
        while header := handle.read(_LENGTH.size):
            # What `keep` wrote, in an unnamed file of this process: trusted as its own.
            record = marshal.loads(handle.read(_LENGTH.unpack(header)[0]))  # noqa: S302
            if len(record) == 2:
                yield InputError(*record)
            else:
                name, document, item, line, obj = record
                yield Document(DocRef(name, document, item, line), obj)
