"""Table-served f-gram embeddings equal A_fgram's (eval mode, float32), on every placement, incl. decoding."""

import time

import pytest
import torch

from workloads.scone.serve import FgramTable, serve_fgrams
from workloads.scone.tagging import SuffixMatcher


@pytest.fixture(scope="module")
def setup(fgrams, corpus, model_for):
    model = model_for(fgrams)
    seqs = torch.stack([torch.from_numpy(corpus(0)[i][:24]).long() for i in (1, 2)])  # (2, 24)
    matcher = SuffixMatcher(fgrams)
    tags = torch.stack([torch.from_numpy(matcher.tag(s.numpy())) for s in seqs])
    with torch.no_grad():
        want, _ = model(seqs, fgram_ids=tags)  # A_fgram computes every embedding
    return model, matcher, seqs, tags, want


@pytest.mark.parametrize("placement", ["device", "host", "disk"])
def test_table_served_logits_equal_a_fgram_logits(setup, placement, tmp_path):
    model, matcher, seqs, tags, want = setup
    server = serve_fgrams(model, matcher, placement, path=tmp_path / "F.npy")
    try:
        with torch.no_grad():
            got, _ = model(seqs)  # tags found by the server's own suffix lookup
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
            cache = model.new_cache(2, 24)
            model(seqs[:, :7], cache)
            for t in range(7, 24):  # one token per step: the lookup must use the history
                step, _ = model(seqs[:, t : t + 1], cache, start_pos=t)
                torch.testing.assert_close(step[:, 0], want[:, t], rtol=1e-4, atol=1e-5)
        s = server.stats
        assert s.positions == 2 * 24 * 2 and s.matched == 2 * int((tags >= 0).sum())
        lengths = torch.from_numpy(matcher.fgrams.lengths)[tags[tags >= 0]]
        assert s.mean_match_len == pytest.approx(float(lengths.float().mean()))
        assert server.table_bytes == matcher.fgrams.n_fgrams * 32 * 4
    finally:
        server.remove()
    with pytest.raises(ValueError, match="needs fgram_ids"):
        model(seqs)


def test_serving_checks_its_input(setup):
    model, matcher, seqs, _, _ = setup
    with pytest.raises(ValueError, match="placement must be one of"):
        serve_fgrams(model, matcher, "gpu")
    with pytest.raises(ValueError, match="needs path="):
        serve_fgrams(model, matcher, "disk")
    server = serve_fgrams(model, matcher, "host")
    try:
        with pytest.raises(ValueError, match="already serves"):
            serve_fgrams(model, matcher, "host")
        with torch.no_grad(), pytest.raises(ValueError, match="continue a history"):
            model(seqs[:1, :3], model.new_cache(1, 8), start_pos=0)
            model(seqs[:, 3:4], model.new_cache(2, 8), start_pos=3)
    finally:
        server.remove()


def test_fgram_table_writes_its_file_once(setup, tmp_path):
    model, matcher, seqs, _, want = setup
    table = FgramTable(matcher, model.precompute_fgram_table(), path=tmp_path / "F.npy")
    mtimes = []
    for _ in range(2):
        server = table.serve(model, "disk")
        try:
            with torch.no_grad():
                torch.testing.assert_close(model(seqs)[0], want, rtol=1e-5, atol=1e-5)
        finally:
            server.remove()
        mtimes.append((tmp_path / "F.npy").stat().st_mtime_ns)
        time.sleep(0.01)  # a rewrite would get a later mtime
    assert mtimes[0] == mtimes[1]
