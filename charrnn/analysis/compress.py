"""Prediction is compression: a text coded under a model's predicted distribution.

A model that predicts a text at 2.1 bits per character can store it in about 2.1 bits per
character. The text is cut into a few parallel streams; at each step the model reads every
stream's previous character (one step of a batch, on one CPU thread) and a range coder
(constriction's, never a hand-written one) codes each stream's next character under the
softmax of its logits. The decoder repeats exactly the same steps, so it computes exactly the
same probabilities: the same path, the same batch layout, the same thread count. A character the
model does not know is coded as an escape symbol and then its code point.

The file: a header (magic, format, mode, the model's fingerprint, the stream layout, the
text's length and sha256; in adapt mode the learning settings too), then the coder's words.
With --adapt both sides learn as they read (charrnn.analysis.adapt): after every window of characters a
stream has coded, encoder and decoder take the same gradient step on the same text (the window
just coded, known to both), so their weights stay identical. The decoder checks the sha256 of what it
restored, so a machine whose arithmetic differs fails loudly, never with a wrong text.
With --scratch there is no model file: both sides build the same model from a seed and learn
as they read (charrnn.analysis.scratch); the header records the plan and the alphabet.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import struct
from dataclasses import dataclass

import torch

from charrnn.analysis.adapt import Adapter, AdaptSettings
from charrnn.errors import CharRNNError, DataError

MAGIC = b"CHARRNNZ"
FORMAT = 1
MODES = {"static": 0, "adapt": 1, "scratch": 2}
STREAM_CHARS = 8192  # characters per stream at least: each stream starts without context
MAX_STREAMS = 64
ESCAPE_MASS = 1e-6  # probability kept for a character the model does not know
CODE_POINT_BYTES = 3  # an escaped character's code point, byte by byte (0x10FFFF fits)
_HEADER = struct.Struct("<8sHBBIQQ32s32sQ")  # magic, format, mode, threads, streams, chars,
# bytes, text sha256, model fingerprint, coder words
_ADAPT = struct.Struct("<ddI")  # in adapt mode, after the header: lr, decay, window
_SCRATCH = struct.Struct("<I")  # in scratch mode, after the header: the description's bytes


class CompressError(CharRNNError):
    """A compressed file that cannot be restored: not one, truncated, another model's."""


@dataclass(frozen=True)
class Header:
    mode: str
    threads: int
    streams: int
    chars: int
    size: int  # bytes of the original
    text_sha256: bytes
    model_fingerprint: bytes
    words: int
    adapt: "AdaptSettings | None" = None  # mode "adapt": how both sides learn
    scratch: bytes = b""  # mode "scratch": the model and its learning (scratch.describe)

    @property
    def nbytes(self) -> int:
        extra = {"adapt": _ADAPT.size, "scratch": _SCRATCH.size + len(self.scratch)}
        return _HEADER.size + extra.get(self.mode, 0)

    def pack(self) -> bytes:
        packed = _HEADER.pack(MAGIC, FORMAT, MODES[self.mode], self.threads, self.streams,
                              self.chars, self.size, self.text_sha256, self.model_fingerprint,
                              self.words)
        if self.mode == "adapt":
            packed += _ADAPT.pack(self.adapt.lr, self.adapt.decay, self.adapt.window)
        if self.mode == "scratch":
            packed += _SCRATCH.pack(len(self.scratch)) + self.scratch
        return packed

    @classmethod
    def unpack(cls, data: bytes) -> "Header":
        if len(data) < len(MAGIC) or data[:len(MAGIC)] != MAGIC:
            raise CompressError("not a charrnn compressed file (no CHARRNNZ header)")
        if len(data) < _HEADER.size:
            raise CompressError("the compressed file is truncated (its header is incomplete)")
        magic, fmt, mode, threads, streams, chars, size, text_sha, fingerprint, words = \
            _HEADER.unpack_from(data)
        if fmt != FORMAT:
            raise CompressError(f"compressed file format {fmt}; this charrnn reads format "
                                f"{FORMAT}")
        names = {code: name for name, code in MODES.items()}
        if mode not in names:
            raise CompressError(f"unknown compression mode {mode}")
        adapt, scratch = None, b""
        if names[mode] == "adapt":
            lr, decay, window = _unpack_after(_ADAPT, data)
            try:
                adapt = AdaptSettings(lr=lr, decay=decay, window=window,
                                      streams=min(max(streams, 1), 1024))
            except CharRNNError as exc:
                raise CompressError(f"the compressed file's header is corrupt ({exc})") from None
        if names[mode] == "scratch":
            length, = _unpack_after(_SCRATCH, data)
            scratch = data[_HEADER.size + _SCRATCH.size:_HEADER.size + _SCRATCH.size + length]
            if len(scratch) != length:
                raise CompressError("the compressed file is truncated (its header is incomplete)")
        return cls(names[mode], threads, streams, chars, size, text_sha, fingerprint, words,
                   adapt, scratch)


def _unpack_after(part: struct.Struct, data: bytes) -> tuple:
    """The fields of the header part `part` that follows the fixed header."""
    if len(data) < _HEADER.size + part.size:
        raise CompressError("the compressed file is truncated (its header is incomplete)")
    return part.unpack_from(data, _HEADER.size)


def model_fingerprint(model, vocab) -> bytes:
    """sha256 of the vocab and every weight: the decoder must hold exactly the encoder's model."""
    digest = hashlib.sha256("\x00".join(vocab.chars).encode("utf-8", "surrogatepass"))
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.digest()


def stream_layout(chars: int, streams: int | None = None) -> tuple[int, int]:
    """(streams, characters per stream): a few long streams, since each starts cold."""
    if chars == 0:
        return 0, 0
    wanted = streams or max(1, min(MAX_STREAMS, chars // STREAM_CHARS))
    length = math.ceil(chars / wanted)
    return math.ceil(chars / length), length


class _Coder:
    """The step-by-step path encoder and decoder share: the model's probabilities for each
    stream's next symbol (the vocab plus one escape), given the characters before it. Steps go
    through the family's one-step path (its stepper), which for the built-in families is several
    times faster per step on a CPU than the fused module."""

    def __init__(self, model, vocab, streams: int):
        self.model, self.vocab, self.streams = model, vocab, streams
        self.escape = len(vocab)  # the symbol after the vocab's last
        self.filler = vocab.index.get(" ", 0)  # what the model reads for an unknown character
        self.restart(model.initial_state(max(streams, 1), torch.device("cpu")))

    def restart(self, hidden) -> None:
        """Step on from `hidden` with the model's weights as they are now."""
        with torch.inference_mode():
            self.step = self.model.stepper(hidden)

    def inputs(self, symbols: torch.Tensor) -> torch.Tensor:
        """What the model reads for `symbols`: the filler for an escape."""
        return torch.where(symbols == self.escape, self.filler, symbols)

    def first(self):
        """Every stream's first character: nothing read yet, so a uniform distribution."""
        import numpy as np
        return np.full((self.streams, self.escape + 1), 1.0 / (self.escape + 1))

    @torch.inference_mode()
    def after(self, symbols: torch.Tensor):
        """The distributions of the next symbols after each stream read `symbols` (S,)."""
        ids = self.inputs(symbols).view(-1, 1)
        probs = torch.softmax(self.step(ids).double(), dim=-1) * (1 - ESCAPE_MASS)
        return torch.cat([probs, torch.full((probs.size(0), 1), ESCAPE_MASS,
                                            dtype=torch.float64)], dim=1).numpy()


@contextlib.contextmanager
def _coding_context():
    """One thread (the same arithmetic whatever the machine's core count), torch's own CPU
    kernels for one-step inference."""
    from charrnn.device import fast_step_context
    from charrnn.models.stepper import one_thread
    cpu = torch.device("cpu")
    with one_thread(cpu), fast_step_context(cpu):
        yield


class _Streams:
    """The layout both sides share: `streams` rows of `length` characters, the text in row
    order; every row is full but the last, so the rows still read at step t are a prefix."""

    def __init__(self, model, vocab, chars: int, streams: int | None = None, learner=None):
        """`learner` (an Adapter or a scratch Learner: its `model` is the one coded with, and
        it learns every `window` columns) or None (`model` codes, as it is)."""
        import constriction
        self.chars = chars
        self.streams, self.length = stream_layout(chars, streams)
        self.last = chars - (self.streams - 1) * self.length  # the last row's length
        self.learner = learner
        self.coder = _Coder(learner.model if learner else model.cpu().eval(), vocab,
                            self.streams)
        self.categorical = constriction.stream.model.Categorical(perfect=False)
        self.byte = constriction.stream.model.Uniform(256)
        self.symbols = None  # (streams, length): the encoder's text, or what the decoder read

    def live(self, t: int) -> slice:
        return slice(0, self.streams if t < self.last else self.streams - 1)

    def steps(self):
        """(t, the rows read at t, their probabilities); `symbols` (streams, length) must hold
        column t before the next step is taken."""
        probs = self.coder.first()
        start, before = 0, self.coder.step.hidden  # the state before reading column `start`
        for t in range(self.length):
            yield t, self.live(t), probs
            if t + 1 < self.length:
                if self.learner and t - start == self.learner.window:
                    self._learn(start, t, before)
                    start, before = t, self.coder.step.hidden
                    self.coder.restart(before)
                probs = self.coder.after(torch.from_numpy(self.symbols[:, t]))

    def _learn(self, start: int, end: int, before) -> None:
        """The learning model's step on the window both sides know: reading columns start ..
        end - 1 from `before`, predicting columns start + 1 .. end of every row that has them
        (an escaped character is read as the filler and never a target)."""
        from charrnn.device import onednn
        from charrnn.models.family import map_hidden
        coder = self.coder
        x = coder.inputs(torch.from_numpy(self.symbols[:, start:end]))
        y = torch.from_numpy(self.symbols[:, start + 1:end + 1].copy())
        keep = y != coder.escape
        keep[-1, max(0, self.last - start - 1):] = False  # past the end of the last row
        y[~keep] = 0
        with onednn(enabled=True):  # oneDNN: 2-4x faster over a window
            self.learner.learn_window(x, y, map_hidden(torch.clone, before), keep)


def _symbols(text: str, vocab, escape: int):
    """The symbol of each character (`escape` where the vocab lacks it) and its code point,
    for the whole text at once."""
    import numpy as np
    from charrnn.text.vocab import code_points

    points = (code_points(text).numpy().astype(np.int64) if text  # (torch reads no empty buffer)
              else np.zeros(0, dtype=np.int64))
    codes = np.array([ord(c) for c in vocab.chars], dtype=np.int64)
    table = np.full(max(int(codes.max(initial=0)), int(points.max(initial=0))) + 1, escape,
                    dtype=np.int64)
    table[codes] = np.arange(len(codes))
    return table[points], points


@dataclass
class _Model:
    """What codes a text, as both sides build it: the model (or the learner holding it), its
    vocab, the stream count, and what the header records of it."""

    mode: str
    vocab: object
    streams: int | None
    fingerprint: bytes
    model: object = None
    learner: object = None
    adapt: AdaptSettings | None = None
    scratch: bytes = b""

    def layout(self, chars: int) -> "_Streams":
        return _Streams(self.model, self.vocab, chars, self.streams, self.learner)

    def header(self, layout: "_Streams", data: bytes, words: int) -> Header:
        return Header(self.mode, 1, layout.streams, layout.chars, len(data),
                      hashlib.sha256(data).digest(), self.fingerprint, words, self.adapt,
                      self.scratch)


def _given_model(model, vocab, streams: int | None, adapt: AdaptSettings | None,
                 fingerprint: bytes) -> _Model:
    """A trained model (`fingerprint`: its model_fingerprint), as it is or adapting (in a copy:
    `model` is left as it is)."""
    return _Model("adapt" if adapt else "static", vocab, streams or (adapt and adapt.streams),
                  fingerprint, model=model,
                  learner=Adapter(model.cpu(), adapt) if adapt else None, adapt=adapt)


def _scratch_model(description: bytes) -> _Model:
    """The untrained model a scratch file's description names, learning as it reads."""
    from charrnn.analysis.scratch import Learner, read_description
    from charrnn.text.vocab import Vocab

    plan, alphabet, _ = read_description(description)
    learner = Learner(plan, len(alphabet))
    return _Model("scratch", Vocab(list(alphabet)), plan.streams,
                  hashlib.sha256(description).digest(), learner=learner, scratch=description)


def compress(data: bytes, model=None, vocab=None, *, streams: int | None = None,
             adapt: AdaptSettings | None = None, scratch=None) -> bytes:
    """`data` (UTF-8 text, as its bytes) coded under `model`: the header and the coder's words.
    With `adapt` the model learns as it reads (in a copy: `model` is left as it is), in
    `adapt.streams` streams unless `streams` says otherwise. With `scratch` (a ScratchPlan)
    there is no model: one is built from the plan's seed and learns as it reads."""
    import constriction
    import numpy as np

    text = decode_utf8(data)
    encoder = constriction.stream.queue.RangeEncoder()
    with _coding_context():
        if scratch is not None:
            from charrnn.analysis.scratch import describe
            coding = _scratch_model(describe(scratch.with_streams(streams),
                                             "".join(sorted(set(text)))))
        else:
            coding = _given_model(model, vocab, streams, adapt, model_fingerprint(model, vocab))
        layout = coding.layout(len(text))
        escape = layout.coder.escape
        flat, points = _symbols(text, coding.vocab, escape)
        size = layout.streams * layout.length
        layout.symbols = np.zeros(size, dtype=np.int64)
        layout.symbols[:len(flat)] = flat
        layout.symbols = layout.symbols.reshape(layout.streams, layout.length)
        for t, live, probs in layout.steps():
            column = layout.symbols[live, t]
            encoder.encode(column.astype(np.int32), layout.categorical, probs[live])
            for row in np.flatnonzero(column == escape):  # rare: characters the model lacks
                point = int(points[row * layout.length + t])
                encoder.encode(np.array(_code_point_bytes(point), dtype=np.int32), layout.byte)
    words = encoder.get_compressed()
    return coding.header(layout, data, len(words)).pack() + words.astype("<u4").tobytes()


def needs_model(blob: bytes) -> bool:
    """Whether decompressing `blob` needs the model file it was made with (all but scratch)."""
    return Header.unpack(blob).mode != "scratch"


def decompress(blob: bytes, model=None, vocab=None) -> bytes:
    """The original bytes of `blob`; an error if the model, the file or the result is wrong.
    A scratch file needs no model (`model` is then ignored)."""
    import constriction
    import numpy as np

    header = Header.unpack(blob)
    body, expected = blob[header.nbytes:], 4 * header.words
    if len(body) != expected:
        raise CompressError(f"the compressed file is "
                            f"{'truncated' if len(body) < expected else 'longer than its header says'}"
                            f" ({len(body):,} bytes of coded data, its header says {expected:,})")
    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(body, dtype="<u4")
                                                     .astype(np.uint32))
    try:
        with _coding_context():
            coding = _decoding_model(header, model, vocab)
            layout = coding.layout(header.chars)
            escape = layout.coder.escape
            layout.symbols = np.zeros((layout.streams, layout.length), dtype=np.int64)
            escaped = {}  # position in the text -> code point
            for t, live, probs in layout.steps():
                column = decoder.decode(layout.categorical, probs[live])
                layout.symbols[live, t] = column
                for row in np.flatnonzero(column == escape):
                    escaped[int(row) * layout.length + t] = _from_code_point_bytes(
                        decoder.decode(layout.byte, CODE_POINT_BYTES))
    except (ValueError, OverflowError, AssertionError) as exc:  # constriction: invalid data
        raise CompressError(f"the compressed data is corrupt ({exc})") from None
    data = _text_of(layout.symbols.reshape(-1)[:header.chars], escaped, coding.vocab)
    if hashlib.sha256(data).digest() != header.text_sha256 or len(data) != header.size:
        raise CompressError("the restored text does not match the original's sha256: the file "
                            "is corrupt, or this machine's arithmetic differs from the one "
                            f"that compressed it{_versions_note(header)} (nothing was written)")
    return data


def _decoding_model(header: Header, model, vocab) -> _Model:
    """The model the file's header names: built from its description (scratch), else `model`
    once its fingerprint is the file's."""
    if header.mode == "scratch":
        if hashlib.sha256(header.scratch).digest() != header.model_fingerprint:
            raise CompressError("the compressed file's header is corrupt (its model description "
                                "does not match its hash)")
        try:
            return _scratch_model(header.scratch)
        except CharRNNError as exc:
            raise CompressError(str(exc)) from None
    if model is None:
        raise CompressError("this file was compressed with a model: give it (-c MODEL)")
    fingerprint = model_fingerprint(model, vocab)
    if fingerprint != header.model_fingerprint:
        raise CompressError(f"the file was compressed with another model (its fingerprint "
                            f"{header.model_fingerprint.hex()[:16]}, this model's "
                            f"{fingerprint.hex()[:16]}): decompress it with that model")
    return _given_model(model, vocab, header.streams, header.adapt, fingerprint)


def _versions_note(header: Header) -> str:
    """For a scratch file made by another charrnn or torch: which (the likely cause)."""
    if header.mode != "scratch":
        return ""
    import torch

    import charrnn
    from charrnn.analysis.scratch import read_description
    _, _, made = read_description(header.scratch)
    here = {"charrnn": charrnn.__version__, "torch": torch.__version__}
    differ = [f"{name} {made[name]} there, {here[name]} here" for name in here
              if made.get(name) != here[name]]
    return f" ({'; '.join(differ)})" if differ else ""


def _text_of(symbols, escaped: dict, vocab) -> bytes:
    """UTF-8 bytes of decoded symbols, the escaped ones by their code points, all at once."""
    import numpy as np
    codes = np.array([ord(c) for c in vocab.chars] + [0], dtype=np.int64)
    points = codes[symbols]
    for position, point in escaped.items():
        points[position] = point
    return (points.astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")
            .encode("utf-8", "surrogatepass"))


def decode_utf8(data: bytes) -> str:
    """The text of `data`; a byte-order mark and CR LF are characters like any other."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"the input is not UTF-8 text: byte {exc.start:,} "
                        f"(0x{data[exc.start]:02x}) starts no UTF-8 character") from None


def _code_point_bytes(point: int) -> list[int]:
    return [(point >> shift) & 0xFF for shift in (16, 8, 0)]


def _from_code_point_bytes(parts) -> int:
    point = (int(parts[0]) << 16) | (int(parts[1]) << 8) | int(parts[2])
    if point > 0x10FFFF:
        raise ValueError(f"code point {point:#x} out of range")
    return point
