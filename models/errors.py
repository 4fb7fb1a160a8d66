"""One error type for every bad input the user can give us, with where and what."""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad model or site file: names the file, line, field, what was expected and what was found."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
        expected: str | None = None,
        found: object = None,
    ) -> None:
        self.file = file
        self.line = line
        self.field = field
        self.expected = expected
        self.found = found
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file or "<input>"
        if self.line is not None:
            where += f":{self.line}"
        parts = [f"{where}: {self.message}"]
        if self.field:
            parts.append(f"field '{self.field}'")
        if self.expected is not None:
            parts.append(f"expected {self.expected}")
        if self.found is not None:
            found = repr(self.found)
            if len(found) > 80:
                found = found[:77] + "..."
            parts.append(f"found {found}")
        return "; ".join(parts)
