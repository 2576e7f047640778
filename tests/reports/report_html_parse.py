"""A small structural reading of the report with the standard library's HTML parser."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Cell:
    tag: str  # th or td
    text: str
    attrs: dict[str, str]


@dataclass
class Table:
    id: str | None
    section: str | None
    caption: str = ""
    rows: list[list[Cell]] = field(default_factory=list)

    def header(self) -> list[str]:
        return [c.text for c in self.rows[0]] if self.rows else []

    def body(self) -> list[list[Cell]]:
        return [r for r in self.rows[1:]] if self.rows and all(c.tag == "th" for c in self.rows[0]) else self.rows


class ReportParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[str] = []
        self.tables: list[Table] = []
        self.images: list[dict[str, str]] = []
        self.tags: list[str] = []
        self.ids: dict[str, str] = {}  # element id -> its text
        self._section: str | None = None
        self._table: Table | None = None
        self._row: list[Cell] | None = None
        self._cell: Cell | None = None
        self._caption = False
        self._id_stack: list[tuple[str, str, list[str]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs_list: list[tuple[str, str | None]]) -> None:
        attrs = {k: v or "" for k, v in attrs_list}
        self.tags.append(tag)
        if tag == "section":
            self._section = attrs.get("id")
            self.sections.append(self._section or "")
        elif tag == "table":
            self._table = Table(attrs.get("id"), self._section)
            self.tables.append(self._table)
        elif tag == "caption":
            self._caption = True
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.rows.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = Cell(tag, "", attrs)
            self._row.append(self._cell)
        elif tag == "img":
            self.images.append(attrs)
        if "id" in attrs and tag not in ("section", "table"):
            self._id_stack.append((tag, attrs["id"], []))

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag == "caption":
            self._caption = False
        elif tag in ("td", "th"):
            if self._cell is not None:
                self._cell.text = " ".join(self._cell.text.split())
            self._cell = None
        if self._id_stack and self._id_stack[-1][0] == tag:
            _, ident, parts = self._id_stack.pop()
            self.ids[ident] = " ".join("".join(parts).split())

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.text += data
        if self._caption and self._table is not None:
            self._table.caption += data
        for _, _, parts in self._id_stack:
            parts.append(data)

    def table(self, ident: str) -> Table:
        matches = [t for t in self.tables if t.id == ident]
        assert matches, f"no table with id {ident!r}; tables: {[t.id for t in self.tables]}"
        return matches[0]


def parse(html: str) -> ReportParser:
    parser = ReportParser()
    parser.feed(html)
    parser.close()
    return parser
