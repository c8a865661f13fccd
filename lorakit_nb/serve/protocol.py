"""Requests the HTTP parser refuses before the app sees them still get the kit's JSON error shape.

Covers: ``JsonErrorsH11``, uvicorn's h11 protocol whose "400 Invalid HTTP request" (a malformed
``Content-Length`` such as ``abc`` or ``-5``, a broken request line, bad header bytes) is
``{"error": {"message", "type", "code": "invalid_http_request"}}`` instead of a plain-text line.
``serve`` passes it to uvicorn as ``http=``.

Does not: change what h11 accepts, answer anything but that 400, or count it in ``/metrics`` (the
request never reaches the app; uvicorn logs one WARNING line).
"""
from __future__ import annotations

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from lorakit_nb.serve.errors import error_body

MESSAGE = ("the request is not valid HTTP/1.1 (check the request line and headers: Content-Length must be "
           "one non-negative integer)")


class JsonErrorsH11(H11Protocol):
    """Example: uvicorn.run(app, http=JsonErrorsH11) -> ``Content-Length: abc`` gets a JSON 400."""

    def send_400_response(self, msg: str) -> None:
        body = error_body(400, "invalid_http_request", MESSAGE)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        try:
            for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body),
                          h11.EndOfMessage()):
                self.transport.write(self.conn.send(event))
        except h11.LocalProtocolError:  # a response was already under way: nothing more can be said
            pass
        finally:
            self.transport.close()
