"""lm-evaluation-harness over the one Transformer: `IsoLM`, a `TemplateLM` for every family (lm-eval 0.4).
Details: docs/workloads.md#workloadsjobslm_eval_adapter."""

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tokenizers import Tokenizer

from workloads.models.transformer import Transformer

Scored = tuple[float, bool]  # (sum of the continuation's log-probs, whether greedy decoding produces it)
DEFAULT_MAX_GEN_TOKS = 256


class IsoLM(TemplateLM):
    """`model` in eval mode, `tokenizer` the job's BPE, `eot_id` its document separator (the context of an
    empty-context request). batch_size: requests per forward; max_length: tokens per forward (default the
    model's max_seq_len)."""

    backend = "causal"

    def __init__(
        self,
        model: Transformer,
        tokenizer: Tokenizer,
        eot_id: int,
        batch_size: int = 16,
        max_length: int | None = None,
    ):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        limit = model.config.max_seq_len
        if max_length is not None and not 2 <= max_length <= limit:
            raise ValueError(f"max_length must lie in [2, {limit}] (model max_seq_len), got {max_length}")
        self.model, self.tok, self.eot_id = model.eval(), tokenizer, eot_id
        self.batch_size, self.max_length = batch_size, max_length or limit
        self._device = next(model.parameters()).device
        self.tok.encode_special_tokens = True  # as the data pipeline tokenized: "<|endoftext|>" is text

    @property
    def eot_token_id(self) -> int:
        return self.eot_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.tok.encode(string, add_special_tokens=False).ids

    def tok_decode(self, tokens: Sequence[int]) -> str:
        return self.tok.decode(list(tokens), skip_special_tokens=False)

    # -- scoring ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def _score_batch(self, pairs: list[tuple[list[int], list[int]]]) -> list[Scored]:
        """One forward over right-padded inputs: per (context, continuation) its log-prob sum and greedy."""
        inputs, spans = [], []
        for context, continuation in pairs:
            if not continuation:
                raise ValueError("a loglikelihood request needs a non-empty continuation")
            whole = (context + continuation)[-(self.max_length + 1) :]
            inputs.append(whole[:-1])
            spans.append((len(whole) - 1 - len(continuation), continuation))
        width = max(map(len, inputs))
        x = torch.full((len(inputs), width), self.eot_id, dtype=torch.long)
        for i, ids in enumerate(inputs):
            x[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        logits, _ = self.model(x.to(self._device))  # (B, width, vocab)
        logprobs = F.log_softmax(logits.float(), dim=-1)
        out = []
        for i, (start, continuation) in enumerate(spans):
            rows = logprobs[i, start : start + len(continuation)]  # (n, vocab): predicts each continuation id
            target = torch.tensor(continuation, device=rows.device)
            total = rows.gather(1, target[:, None]).sum().item()
            out.append((float(total), bool((rows.argmax(-1) == target).all().item())))
        return out

    def _batched(self, items: list, size: Callable[[object], int], fn: Callable[[list], list]) -> list:
        """fn over batches of `items` taken longest first; results back in the order of `items`."""
        order = sorted(range(len(items)), key=lambda i: -size(items[i]))
        out: list = [None] * len(items)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            for i, value in zip(chunk, fn([items[i] for i in chunk]), strict=True):
                out[i] = value
        return out

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[Scored]:
        pairs = [(list(context), list(continuation)) for _, context, continuation in requests]
        return self._batched(pairs, lambda p: len(p[0]) + len(p[1]), self._score_batch)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Each string's log-likelihood as a whole: disjoint windows of max_length tokens, each scored with
        as much preceding text as fits (the first after the separator), summed (lm-eval's recipe)."""
        windows, owner = [], []
        for index, request in enumerate(requests):
            (string,) = request.args
            rolling = get_rolling_token_windows(
                token_list=self.tok_encode(string),
                prefix_token=self.eot_id,
                max_seq_len=self.max_length,
                context_len=1,
            )
            for window in map(make_disjoint_window, rolling):
                windows.append((list(window[0]), list(window[1])))
                owner.append(index)
        scores = self._batched(windows, lambda p: len(p[0]) + len(p[1]), self._score_batch)
        totals = [0.0] * len(requests)
        for index, (logprob, _) in zip(owner, scores, strict=True):
            totals[index] += logprob
        return totals

    # -- generation -------------------------------------------------------------------------------------
    @torch.no_grad()
    def _greedy(self, contexts: list[list[int]], max_new: int) -> list[list[int]]:
        """Greedy continuations of equal-length contexts (one batch, KV cache), max_new tokens each."""
        x = torch.tensor(contexts, dtype=torch.long, device=self._device)  # (B, P)
        P = x.shape[1]
        max_new = min(max_new, self.max_length - P)
        if max_new <= 0:
            return [[] for _ in contexts]
        cache = self.model.new_cache(len(contexts), P + max_new)
        logits, _ = self.model(x, cache)
        out = [logits[:, -1].argmax(-1)]
        for t in range(1, max_new):
            logits, _ = self.model(out[-1][:, None], cache, start_pos=P + t - 1)
            out.append(logits[:, -1].argmax(-1))
        return torch.stack(out, dim=1).tolist()  # (B, max_new)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy decoding until any of `until` (default: the separator's text) or max_gen_toks tokens;
        do_sample / temperature are refused (the scores would not be reproducible)."""
        out: list = [None] * len(requests)
        groups: dict[tuple, list[tuple[int, list[int], list[str]]]] = {}
        for index, request in enumerate(requests):
            context, kwargs = request.args
            kwargs = dict(kwargs or {})
            if kwargs.pop("do_sample", False) or kwargs.pop("temperature", 0.0):
                raise ValueError("generate_until: only greedy decoding (do_sample false, temperature 0)")
            until = kwargs.pop("until", None) or [self.tok_decode([self.eot_id])]
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kwargs.pop("max_gen_toks", DEFAULT_MAX_GEN_TOKS))
            ids = (self.tok_encode(context) or [self.eot_id])[-(self.max_length - 1) :]
            groups.setdefault((len(ids), max_new), []).append((index, ids, until))
        for (_, max_new), members in groups.items():
            for start in range(0, len(members), self.batch_size):
                chunk = members[start : start + self.batch_size]
                generated = self._greedy([ids for _, ids, _ in chunk], max_new)
                for (index, _, until), tokens in zip(chunk, generated, strict=True):
                    out[index] = _cut(self.tok_decode(tokens), until)
        return out


def _cut(text: str, until: Iterable[str]) -> str:
    """`text` up to the first stop string (the earliest one in the text)."""
    cuts = [text.find(stop) for stop in until if stop and stop in text]
    return text[: min(cuts)] if cuts else text
