"""A small reader for Alloy configuration syntax: blocks, attributes, literals and references.

Enough to follow the pipeline wiring (`output { traces = [...] }`) and read literal settings; any
other expression (function call, map, ...) is kept as its source text.
"""

import json
import re


class AlloyError(Exception):
    pass


class Ref(str):
    """An identifier expression such as otelcol.processor.batch.default.input."""


class Block:
    def __init__(self, name, label, line):
        self.name = name
        self.label = label
        self.line = line
        self.attrs = {}
        self.blocks = []

    @property
    def id(self):
        return f"{self.name}.{self.label}" if self.label is not None else self.name

    def attr(self, key, default=None):
        return self.attrs.get(key, default)

    def child(self, name):
        for b in self.blocks:
            if b.name == name:
                return b
        return None

    def children(self, name):
        return [b for b in self.blocks if b.name == name]

    def walk(self):
        yield self
        for b in self.blocks:
            yield from b.walk()


TOKEN_RE = re.compile(
    r"""
    (?P<ws>[ \t\r]+)
  | (?P<nl>\n)
  | (?P<lcomment>//[^\n]*)
  | (?P<bcomment>/\*.*?\*/)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<op>==|!=|<=|>=|&&|\|\||[{}\[\]()=,:+\-*/%^<>!?.])
    """,
    re.VERBOSE | re.DOTALL,
)


def tokenize(text):
    tokens, pos, line = [], 0, 1
    while pos < len(text):
        m = TOKEN_RE.match(text, pos)
        if not m:
            raise AlloyError(f"line {line}: unexpected character {text[pos]!r}")
        kind, val = m.lastgroup, m.group(0)
        if kind == "nl":
            tokens.append(("nl", val, line))
        elif kind == "bcomment":
            if "\n" in val:
                tokens.append(("nl", "\n", line))
        elif kind not in ("ws", "lcomment"):
            tokens.append((kind, val, line))
        line += val.count("\n")
        pos = m.end()
    tokens.append(("eof", "", line))
    return tokens


def unquote(tok):
    kind, val, _ = tok
    if kind == "raw":
        return val[1:-1]
    return json.loads(val) if val.startswith('"') else val


class AlloyFile:
    def __init__(self, text):
        self.text = text
        self.tokens = tokenize(text)
        self.pos = 0
        self.root = Block("<root>", None, 0)
        self._body(self.root, top=True)

    # parsing ----------------------------------------------------------------------------------

    def _peek(self, skip_nl=True):
        p = self.pos
        while skip_nl and self.tokens[p][0] == "nl":
            p += 1
        return self.tokens[p], p

    def _next(self, skip_nl=True):
        tok, p = self._peek(skip_nl)
        self.pos = p + 1
        return tok

    def _body(self, block, top=False):
        while True:
            tok = self._next()
            if tok[0] == "eof":
                if not top:
                    raise AlloyError(f"unclosed block {block.id} opened on line {block.line}")
                return
            if tok[1] == "}" and tok[0] == "op":
                if top:
                    raise AlloyError(f"line {tok[2]}: unmatched '}}'")
                return
            if tok[0] != "ident":
                raise AlloyError(f"line {tok[2]}: expected an attribute or block name, got {tok[1]!r}")
            nxt = self._next(skip_nl=False)
            if nxt[1] == "=" and nxt[0] == "op":
                if tok[1] in block.attrs:
                    raise AlloyError(f"line {tok[2]}: attribute {tok[1]} set twice in {block.id}")
                block.attrs[tok[1]] = self._expr()
            elif nxt[0] in ("string", "raw") or (nxt[0] == "op" and nxt[1] == "{"):
                label = None
                if nxt[0] in ("string", "raw"):
                    label = unquote(nxt)
                    brace = self._next(skip_nl=False)
                    if brace[1] != "{":
                        raise AlloyError(f"line {brace[2]}: expected '{{' after block label")
                child = Block(tok[1], label, tok[2])
                block.blocks.append(child)
                self._body(child)
            else:
                raise AlloyError(f"line {nxt[2]}: expected '=' or '{{' after {tok[1]!r}, got {nxt[1]!r}")

    def _expr(self):
        """Collect the tokens of one expression (up to a newline at bracket depth 0)."""
        toks, depth = [], 0
        while True:
            tok, p = self._peek(skip_nl=depth > 0)
            if tok[0] == "eof":
                break
            if depth == 0 and (tok[0] == "nl" or (tok[0] == "op" and tok[1] == "}")):
                break
            self.pos = p + 1
            if tok[0] == "op" and tok[1] in "[({":
                depth += 1
            elif tok[0] == "op" and tok[1] in "])}":
                depth -= 1
                if depth < 0:
                    raise AlloyError(f"line {tok[2]}: unbalanced {tok[1]!r}")
            toks.append(tok)
        if not toks:
            raise AlloyError(f"line {self.tokens[self.pos][2]}: attribute without a value")
        return self._value(toks)

    def _value(self, toks):
        if len(toks) == 1:
            kind, val, _ = toks[0]
            if kind in ("string", "raw"):
                return unquote(toks[0])
            if kind == "number":
                return float(val) if any(c in val for c in ".eE") else int(val)
            if kind == "ident":
                return {"true": True, "false": False, "null": None}.get(val, Ref(val))
        if toks[0][1] == "[" and toks[-1][1] == "]":
            items, cur, depth = [], [], 0
            for t in toks[1:-1]:
                if t[0] == "op" and t[1] in "[({":
                    depth += 1
                elif t[0] == "op" and t[1] in "])}":
                    depth -= 1
                if depth == 0 and t[0] == "op" and t[1] == ",":
                    if cur:
                        items.append(self._value(cur))
                    cur = []
                else:
                    cur.append(t)
            if cur:
                items.append(self._value(cur))
            return items
        return "".join(t[1] for t in toks)  # an expression we do not evaluate (function call, map, ...)

    # queries ----------------------------------------------------------------------------------

    def components(self):
        return {b.id: b for b in self.root.blocks}

    def find(self, name):
        return [b for b in self.root.blocks if b.name == name]

    def all_blocks(self):
        for b in self.root.blocks:
            yield from b.walk()
