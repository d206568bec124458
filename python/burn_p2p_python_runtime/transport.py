"""Framing for the worker protocol: an 8-byte big-endian u64 length, then that many bytes.

Only framing lives here; what the bytes mean is dispatch's business.
"""

import socket
import struct

_HEADER = struct.Struct(">Q")
HEADER_BYTES = _HEADER.size
DEFAULT_MAX_FRAME_BYTES = 256 * 1024 * 1024
MAX_FRAME_ENV = "BURN_P2P_WORKER_MAX_FRAME_BYTES"
"""Environment variable with the largest frame body, both ways (the client passes its ``maxFrameBytes``)."""


class FrameError(ConnectionError):
    """The byte stream broke the framing; it cannot be resynchronised."""


class OversizeFrameError(FrameError):
    def __init__(self, length, max_bytes):
        super().__init__(f"frame length {length} exceeds the limit of {max_bytes} bytes")
        self.length = length
        self.max_bytes = max_bytes


def connect(host, port):
    """A blocking TCP connection with Nagle off, so replies leave at once.

    A numeric IPv4 host (the client's ``127.0.0.1``) is connected to directly,
    without the resolver round of ``create_connection``.
    """
    try:
        socket.inet_pton(socket.AF_INET, host)
    except (OSError, TypeError, ValueError):
        sock = socket.create_connection((host, port))
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
    sock.setblocking(True)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_frame(sock, max_bytes=DEFAULT_MAX_FRAME_BYTES):
    """Reads one frame body as a bytearray (not copied into bytes: json.loads takes it as is).

    Returns None on a clean EOF before the first header byte. Raises
    OversizeFrameError before allocating a body above ``max_bytes``, and
    FrameError on EOF inside a frame.
    """
    header = bytearray(HEADER_BYTES)
    if not _recv_exactly(sock, memoryview(header), allow_eof=True):
        return None
    (length,) = _HEADER.unpack(header)
    if length > max_bytes:
        raise OversizeFrameError(length, max_bytes)
    body = bytearray(length)
    _recv_exactly(sock, memoryview(body), allow_eof=False, length=length)
    return body


def write_frame(sock, payload):
    # One sendall for header and body: two writes let Nagle hold the body until
    # the peer's delayed ACK fires, about 44 ms per call (see PROTOCOL.md).
    sock.sendall(b"".join((_HEADER.pack(len(payload)), payload)))


def _recv_exactly(sock, view, allow_eof, length=None):
    """Fills ``view`` from the socket. Returns False on EOF before any byte when ``allow_eof``."""
    received = 0
    total = len(view)
    while received < total:
        count = sock.recv_into(view[received:])
        if count == 0:
            if received == 0 and allow_eof:
                return False
            what = "frame header" if length is None else f"frame body of {length} bytes"
            raise FrameError(f"connection closed after {received} of {total} bytes of the {what}")
        received += count
    return True
