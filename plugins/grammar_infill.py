"""`grammar-infill`: infilling whose result always parses, or says it could not.

Generation runs left to right from the FIM prompt (or the prefix, on models without FIM
tokens). Every candidate stop point (a line boundary, a dedent, end of generation, a stop
string) is accepted only where prefix + middle + suffix parses (Python: `ast` and tree-sitter;
other languages: tree-sitter) and the middle is non-empty. A token that would end the middle
where the file does not parse (end of generation, or the newline that closes a single-line
hole) is rejected and the next best token taken from the same logits (sample-then-check
rejection as in the CFG-infilling paper, no extra forward pass). If an attempt ends without a
valid middle, the second attempt stays greedy but lets invalid line ends through (the middle goes
on over several lines, e.g. a body under an `if ...:`), and further attempts sample (seeded)
with grammar-aligned ASAp reweighting, which steers them away from prefixes earlier attempts
showed to end invalid; when all fail, finish_reason is
"no_valid_infill" and the text is empty rather than broken code. The middle never repeats the
suffix (the suffix guard trims it and a repeated suffix does not parse).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from assistant import hookimpl
from assistant.decoding import Run, Strategy, option, require
from assistant.errors import PluginError


class AsapNode:
    """A prefix in the trie of attempts (grammar-aligned sampling, ASAp, arXiv 2405.21047).

    `p` is the model's probability (temperature 1) of the token leading here; `efg` the
    estimated expected future grammaticality, 1 until an attempt through this prefix fails.
    Sampling multiplies each child's probability by its efg, so later attempts move away from
    prefixes that ended in invalid files, approaching the distribution conditioned on validity."""

    __slots__ = ("children", "efg", "p")

    def __init__(self, p: float | None):
        self.p = p
        self.efg = 1.0
        self.children: dict[int, AsapNode] = {}

    def child(self, token: int, p: float | None) -> AsapNode:
        node = self.children.get(token)
        if node is None:
            node = self.children[token] = AsapNode(p)
        elif node.p is None:
            node.p = p
        return node

    def reweight(self, x: np.ndarray) -> None:
        for token, child in self.children.items():
            x[token] += np.log(max(child.efg, 1e-12))

    @staticmethod
    def failed(path: list[AsapNode]) -> None:
        """The attempt along `path` gave no valid file: its leaf is worth 0; update ancestors."""
        path[-1].efg = 0.0
        for node in reversed(path[:-1]):
            known = [c for c in node.children.values() if c.p is not None]
            seen = sum(c.p for c in known)
            node.efg = sum(c.p * c.efg for c in known) + max(0.0, 1.0 - seen)


@dataclass
class GrammarInfillOptions:
    attempts: int = option(3, "tries: greedy resampling line ends, greedy over several lines, then sampled (ASAp)")
    temperature: float = option(0.7, "temperature of the sampled retries")
    max_rejections: int = option(100, "end-of-generation rejections per step before giving up the attempt")
    rejection_budget: int = option(16, "tokens an attempt may write after refusing a line end before it gives up")
    line_rejections: int = option(3, "alternatives tried at an invalid line end before the middle goes on a new line")

    def __post_init__(self):
        require(self.attempts >= 1, "attempts", self.attempts, ">= 1")
        require(self.temperature > 0, "temperature", self.temperature, "> 0")
        require(self.max_rejections >= 1, "max_rejections", self.max_rejections, ">= 1")
        require(self.rejection_budget >= 0, "rejection_budget", self.rejection_budget, ">= 0")
        require(self.line_rejections >= 0, "line_rejections", self.line_rejections, ">= 0")


class GrammarInfill(Strategy):
    name = "grammar-infill"
    summary = "Infill that stops only where prefix + middle + suffix parses; never returns broken code."
    Options = GrammarInfillOptions
    reads_temperature = False
    needs_syntax_guard = True

    def generate(self, run: Run):
        o = self.options
        guard = run.stops.guard
        if not run.request.is_infill or guard is None or not hasattr(guard, "would_accept_end"):
            raise PluginError("grammar-infill needs an infill request (a prefix and a suffix)")
        ops = run.ops
        rejections = 0
        trie = AsapNode(1.0)  # shared by all attempts: what earlier attempts learned
        seed = run.request.sampling.seed
        rng = np.random.default_rng(0 if seed is None else seed)  # same file, same answer
        for attempt in range(o.attempts):
            if attempt:
                run.restart()
            node, path = trie, [trie]
            sampled = attempt >= 2
            line_rejections = 0 if attempt == 1 else o.line_rejections
            first_rejection = None  # token count when a line end was first refused
            logits = run.start()
            while logits is not None:
                x = run.constrain(logits)
                raw_logp = None
                if sampled:
                    raw_logp = np.asarray(ops.to_numpy(ops.log_softmax(x)))
                    x = np.array(ops.to_numpy(ops.apply_temperature(x, o.temperature)), copy=True)
                    node.reweight(x)  # ASAp: discount continuations known to lead to invalid files
                token = ops.sample(x, rng) if sampled else ops.argmax(x)
                tries, first_line_end = 0, None
                while (verdict := self._invalid_stop(run, guard, token)) is not None:
                    if verdict == "line" and first_line_end is None:
                        first_line_end = token
                    if tries >= (o.max_rejections if verdict == "eog" else line_rejections):
                        if verdict == "line":  # let the line end; the middle goes on below it
                            token = first_line_end
                        break
                    x = np.array(ops.to_numpy(x), copy=True)
                    x[token] = -np.inf  # reject the invalid stop and resample from the same logits
                    tries += 1
                    if not np.isfinite(x).any():
                        break
                    token = ops.sample(x, rng) if sampled else ops.argmax(x)
                rejections += tries
                if tries and first_rejection is None and first_line_end is not None:
                    first_rejection = len(run.tokens)
                p = float(np.exp(raw_logp[token])) if raw_logp is not None else None
                node = node.child(token, p)
                path.append(node)
                yield from run.take(token)  # the syntax guard holds all text until a valid stop
                if run.finished:
                    break
                if first_rejection is not None and len(run.tokens) - first_rejection > o.rejection_budget:
                    yield from _as_events(run.finish("length"))  # this line leads nowhere: next attempt
                    break
                logits = run.step(token)
            if run.finish_reason != "no_valid_infill":
                break
            AsapNode.failed(path)
        run.extra_stats.update(attempts=attempt + 1, eos_rejections=rejections, syntax_checks=guard.checks)
        yield run.done()

    @staticmethod
    def _invalid_stop(run: Run, guard, token: int) -> str | None:
        """ "eog" / "line" when this token would end the middle (end of generation, or a stop string
        such as the newline closing a single-line hole) where the file does not parse; else None.
        End of generation is rejected up to max_rejections times; a line end line_rejections
        times, after which the line ends anyway and the middle continues on the next line (the
        stop string is then skipped, see StopRules)."""
        if run.model.is_eog(token):
            return None if guard.would_accept_end(run.text) else "eog"
        stops = run.request.stop
        if not stops:
            return None
        text = run.text + run.model.piece(token).decode("utf-8", "ignore")
        for stop in stops:
            i = text.find(stop, max(0, len(run.text) - len(stop) + 1))
            if i >= 0:
                return None if guard.valid(text[:i]) else "line"
        return None


def _as_events(event):
    return [event] if event is not None else []


@hookimpl
def register_strategies(register):
    register(GrammarInfill)
