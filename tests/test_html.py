"""The one HTML helper both reports use."""

from __future__ import annotations

import base64
from pathlib import Path

from rnnguard.utils.html import escape, image, page, table


def test_table_escapes_the_header_and_keeps_cells_as_html() -> None:
    out = table(["a<b", "c"], [["<code>x</code>", escape("1 & 2")]])
    assert out.startswith("<table><tr><th>a&lt;b</th><th>c</th></tr>")
    assert "<td><code>x</code></td><td>1 &amp; 2</td>" in out and out.endswith("</table>")


def test_page_and_embedded_image(tmp_path: Path) -> None:
    png = tmp_path / "p.png"
    png.write_bytes(b"\x89PNG fake")
    tag = image(png, 'a "plot"')
    assert base64.b64encode(b"\x89PNG fake").decode() in tag and "&quot;plot&quot;" in tag
    doc = page("t<1>", "<p>body</p>", "p{}")
    assert "<title>t&lt;1&gt;</title>" in doc and "<style>p{}</style>" in doc
    assert "<p>body</p>" in doc and doc.rstrip().endswith("</html>")
