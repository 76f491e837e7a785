"""An uploaded image, sent either as the raw request body (any Content-Type: curl's `--data-binary` labels it
x-www-form-urlencoded) or as a multipart form (`curl -F image=@photo.jpg`, a browser's FormData, Python
requests' `files=`).

    data = await read_upload(request, limit, ticket, timeout_s)   # the file's bytes; 413 past `limit`, 400 bad form

A form is parsed as it streams (python-multipart's push parser), within the same byte limit as a raw body plus
room for the form's own headers, and only the image's part is kept: the first part named `image` (or `file`, the
name many clients use). A form whose file comes under another name is refused (400 `bad_form`), as one with no
file is: its other parts are never taken for the image.
"""

from __future__ import annotations

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from .._renamed import renamed_names
from .budget import Ticket
from .errors import ApiError
from .intake import body_chunks, read_body

#: Bytes a form may add around the file: boundaries, part headers, a few small fields.
FORM_OVERHEAD = 64 << 10
IMAGE_FIELDS = (b"image", b"file")


async def read_upload(request: Request, limit: int, ticket: Ticket, timeout_s: float) -> bytes:
    """An uploaded image file's bytes from `request` (a raw body or a multipart form; not decoded: that is
    `samcl.io.read_image`'s, which reads a path or bytes)."""
    kind = request.headers.get("content-type", "")
    if kind.split(";")[0].strip().lower() != "multipart/form-data":
        return await read_body(request, limit, ticket, timeout_s=timeout_s)
    _, options = parse_options_header(kind)
    boundary = options.get(b"boundary")
    if not boundary:
        raise bad_form("a multipart/form-data body needs a boundary in its Content-Type")
    form = ImageForm()
    parser = MultipartParser(boundary, form.callbacks())
    try:
        async for chunk in body_chunks(request, limit + FORM_OVERHEAD, ticket, 2, timeout_s):
            parser.write(chunk)
            if len(form.image) > limit:
                raise ApiError(413, "body_too_large", f"the image exceeds this server's limit of {limit:,} bytes")
        parser.finalize()
    except (MultipartParseError, ValueError) as exc:
        raise bad_form(f"not a readable multipart form ({str(exc)[:120]})") from None
    if not form.found:
        raise bad_form("the form has no field 'image': send the file under that name (curl -F image=@photo.jpg)")
    return bytes(form.image)


def bad_form(message: str) -> ApiError:
    return ApiError(400, "bad_form", message)


class ImageForm:
    """python-multipart callbacks that keep the data of the image's part only."""

    def __init__(self):
        self.image = bytearray()
        self.found = False  # the image's part has begun (later parts are only counted)
        self._field, self._value, self._headers = b"", b"", {}
        self._keeping = False

    def callbacks(self) -> dict:
        return {"on_part_begin": self._part_begin, "on_header_field": self._header_field,
                "on_header_value": self._header_value, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
                "on_part_end": self._part_end}

    def _part_begin(self) -> None:
        self._headers, self._field, self._value = {}, b"", b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        is_image = options.get(b"name") in IMAGE_FIELDS
        self._keeping = is_image and not self.found
        self.found = self.found or self._keeping

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._keeping:
            self.image += data[start:end]

    def _part_end(self) -> None:
        self._keeping = False


__getattr__ = renamed_names(__name__, {"read_image": "read_upload"}, globals())
