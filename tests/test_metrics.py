"""learn2hash.metrics.evaluate against brute-force references.

The references here rank by an explicit distance matrix computed from unpacked bits, sort
(stable argsort) or enumerate every ordering of tied items, and apply the AP@k definition
literally. None of them shares code with the counting kernels they check.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from learn2hash import cli
from learn2hash.codes import Codes
from learn2hash.errors import Learn2HashError
from learn2hash.metrics import evaluate, map_key, radius_key, summary


# --------------------------------------------------------------------------- references
def _multihot(labels, n_classes):
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return labels.astype(bool)
    out = np.zeros((len(labels), n_classes), bool)
    out[np.arange(len(labels)), labels] = True
    return out


def _truth(q_bits, ql, db_bits, dl):
    """Distances int[nq, nd] from unpacked bits and relevance bool[nq, nd] from shared labels."""
    n_classes = max(np.max(ql) + 1 if np.ndim(ql) == 1 else np.shape(ql)[1],
                    np.max(dl) + 1 if np.ndim(dl) == 1 else np.shape(dl)[1])
    qm, dm = _multihot(ql, n_classes), _multihot(dl, n_classes)
    dist = (q_bits[:, None, :] != db_bits[None, :, :]).sum(axis=2)
    rel = (qm.astype(int) @ dm.T.astype(int)) > 0
    return dist, rel


def _ap_at_k(ranked_rel, k):
    """AP@k of ranked 0/1 lists (one per row): mean over relevant ranks r <= k of precision@r; 0 if none."""
    top = np.atleast_2d(np.asarray(ranked_rel, dtype=float))[:, :k]
    precision = np.cumsum(top, axis=1) / np.arange(1, top.shape[1] + 1)
    hits = top.sum(axis=1)
    return np.where(hits > 0, (precision * top).sum(axis=1) / np.maximum(hits, 1), 0.0)


def _orderings(dist_row):
    """Every ordering of the database consistent with the distances (ties permuted)."""
    groups = [np.flatnonzero(dist_row == d) for d in np.unique(dist_row)]
    for combo in itertools.product(*(itertools.permutations(g) for g in groups)):
        yield np.concatenate([np.array(c, dtype=int) for c in combo])


def _reference(q_bits, ql, db_bits, dl, topk, ns, radius, ties):
    """Per-query AP@k, P@N and radius precision/recall, by sorting or by enumeration."""
    dist, rel = _truth(q_bits, ql, db_bits, dl)
    nq, nd = dist.shape
    k = nd if topk is None else min(topk, nd)
    ap = np.zeros(nq)
    pn = np.zeros((nq, len(ns)))
    for i in range(nq):
        if ties == "index":
            orders = np.argsort(dist[i], kind="stable")[None, :]
        else:
            orders = np.array(list(_orderings(dist[i])))
        ranked = rel[i][orders]  # one row per ordering
        ap[i] = _ap_at_k(ranked, k).mean()
        for p, n in enumerate(ns):
            pn[i, p] = ranked[:, :n].mean()
    within = dist <= radius
    n_ret = within.sum(axis=1)
    n_rel_ret = (within & rel).sum(axis=1)
    prec = np.where(n_ret > 0, n_rel_ret / np.maximum(n_ret, 1), 0.0)
    rec = np.where(rel.sum(axis=1) > 0, n_rel_ret / np.maximum(rel.sum(axis=1), 1), 0.0)
    return ap, pn, prec, rec, rel.sum(axis=1)


def _random_case(rng, nq, nd, bits, n_classes, multilabel):
    q_bits = rng.random((nq, bits)) < 0.5
    db_bits = rng.random((nd, bits)) < 0.5
    if multilabel:
        ql = rng.random((nq, n_classes)) < 0.3
        dl = rng.random((nd, n_classes)) < 0.3
    else:
        ql = rng.integers(0, n_classes, nq)
        dl = rng.integers(0, n_classes, nd)
    return q_bits, ql, db_bits, dl


# --------------------------------------------------------------------------- ties="index"
@pytest.mark.parametrize("multilabel", [False, True])
@pytest.mark.parametrize("bits", [4, 13, 70])
def test_index_ties_match_stable_argsort(multilabel, bits):
    rng = np.random.default_rng(bits + 100 * multilabel)
    # few bits and many items: every distance is shared by many items
    nq, nd = 25, 300
    q_bits, ql, db_bits, dl = _random_case(rng, nq, nd, bits, 5 if not multilabel else 70, multilabel)
    if bits == 70:  # keep ties plentiful at 70 bits too: items are noisy copies of 3 prototypes
        proto = rng.random((3, bits)) < 0.5
        q_bits = proto[rng.integers(0, 3, nq)] ^ (rng.random((nq, bits)) < 0.02)
        db_bits = proto[rng.integers(0, 3, nd)] ^ (rng.random((nd, bits)) < 0.02)
    ns = (1, 7, 50, 300)
    for topk in (None, 1, 10, 137):
        res = evaluate(Codes.from_bits(q_bits), ql, Codes.from_bits(db_bits), dl,
                       topk=topk, ties="index", precision_at=ns, radius=2)
        ap, pn, prec, rec, _ = _reference(q_bits, ql, db_bits, dl, topk, ns, 2, "index")
        np.testing.assert_allclose(res["per_query"]["ap"], ap, rtol=0, atol=1e-9)
        assert abs(res[map_key(topk)] - ap.mean()) < 1e-9
        for p, n in enumerate(ns):
            assert abs(res["precision_at_n"][n] - pn[:, p].mean()) < 1e-9
        assert abs(res["precision_at_radius2"] - prec.mean()) < 1e-12
        assert abs(res["recall_at_radius2"] - rec.mean()) < 1e-12


# --------------------------------------------------------------------------- ties="expected"
@pytest.mark.parametrize("seed", range(6))
def test_expected_ties_equal_average_over_all_orderings(seed):
    rng = np.random.default_rng(seed)
    bits, nd = 3, 9
    multilabel = seed % 2 == 1
    while True:  # a database whose tie groups have at most 6 * 4 * ... orderings in total
        q_bits, ql, db_bits, dl = _random_case(rng, 4, nd, bits, 3, multilabel)
        dist = (q_bits[:, None] != db_bits[None]).sum(axis=2)
        sizes = [np.bincount(row) for row in dist]
        if max(math.prod(math.factorial(int(s)) for s in row) for row in sizes) <= 3000:
            break
    ns = (1, 2, 5, 9)
    for topk in (None, 1, 2, 3, 4, 5, 6, 8):  # cut-offs fall inside tie groups
        res = evaluate(Codes.from_bits(q_bits), ql, Codes.from_bits(db_bits), dl,
                       topk=topk, ties="expected", precision_at=ns)
        ap, pn, _, _, _ = _reference(q_bits, ql, db_bits, dl, topk, ns, 2, "expected")
        np.testing.assert_allclose(res["per_query"]["ap"], ap, rtol=0, atol=1e-12)
        for p, n in enumerate(ns):
            assert abs(res["precision_at_n"][n] - pn[:, p].mean()) < 1e-12


def _ap_over_patterns(groups, k):
    """Exact mean AP@k over all placements of relevant items inside tie groups.

    ``groups`` is a list of ``(n, m)``: n items at that distance, m relevant. Every relevance
    pattern of a group stands for the same number (m! (n-m)!) of orderings of its items, so the
    mean over patterns is the mean over orderings.
    """
    per_group = []
    for n, m in groups:
        pats = []
        for pos in itertools.combinations(range(n), m):
            row = np.zeros(n, bool)
            row[list(pos)] = True
            pats.append(row)
        per_group.append(np.array(pats))
    big = int(np.argmax([len(p) for p in per_group]))
    others = per_group[:big] + per_group[big + 1:]
    aps = []
    for combo in itertools.product(*others):  # the largest group's patterns are one matrix
        parts = [np.broadcast_to(c, (len(per_group[big]), len(c))) for c in combo]
        parts.insert(big, per_group[big])
        aps.append(_ap_at_k(np.concatenate(parts, axis=1), k))
    return float(np.concatenate(aps).mean())


def _codes_at_distances(groups, bits):
    """A query (all zeros) and database codes with ``n`` codes at distance d for group d."""
    rows, rel = [], []
    for d, (n, m) in enumerate(groups):
        row = np.zeros(bits, bool)
        row[:d] = True
        rows += [row] * n
        rel += [1] * m + [0] * (n - m)
    perm = np.random.default_rng(0).permutation(len(rows))
    db_bits = np.array(rows)[perm]
    dl = np.array(rel)[perm]
    return np.zeros((1, bits), bool), np.array([1]), db_bits, dl


@pytest.mark.parametrize("groups,k", [
    ([(3, 1), (100, 2), (5, 3)], 40),      # cut inside a group of 100 (harmonic-table path)
    ([(3, 1), (100, 2), (5, 3)], None),
    ([(2, 2), (90, 88), (4, 1)], 50),      # nearly all relevant: 88 of 90
    ([(1, 0), (120, 2)], 119),
    ([(70, 2), (3, 1)], 72),
])
def test_expected_ties_large_groups(groups, k):
    q_bits, ql, db_bits, dl = _codes_at_distances(groups, 4)
    nd = len(dl)
    kk = nd if k is None else k
    # groups wholly past the cut-off do not change AP@k
    inside, seen = [], 0
    for n, m in groups:
        if seen >= kk:
            break
        inside.append((n, m))
        seen += n
    expected = _ap_over_patterns(inside, kk)
    res = evaluate(Codes.from_bits(q_bits), ql, Codes.from_bits(db_bits), dl, topk=k, precision_at=(kk,))
    assert abs(res[map_key(k)] - expected) < 1e-11
    # expected hits in the top k: relevant before the cut group + c * m / n inside it
    hits, seen = 0.0, 0
    for n, m in groups:
        take = min(n, max(0, kk - seen))
        hits += take * m / n
        seen += n
    assert abs(res["precision_at_n"][kk] - hits / kk) < 1e-12


def test_expected_and_index_agree_without_ties():
    rng = np.random.default_rng(7)
    bits, nd = 40, 30
    db_bits = np.zeros((nd, bits), bool)
    for j in range(nd):  # database item j at distance j from the all-zero query
        db_bits[j, :j] = True
    db_bits = db_bits[rng.permutation(nd)]
    dl = rng.integers(0, 3, nd)
    q = Codes.from_bits(np.zeros((1, bits), bool))
    for topk in (None, 5, 17):
        a = evaluate(q, [1], Codes.from_bits(db_bits), dl, topk=topk, ties="expected", precision_at=(3, 11))
        b = evaluate(q, [1], Codes.from_bits(db_bits), dl, topk=topk, ties="index", precision_at=(3, 11))
        assert abs(a[map_key(topk)] - b[map_key(topk)]) < 1e-12
        assert a["precision_at_n"] == pytest.approx(b["precision_at_n"], abs=1e-12)


def test_expected_ties_hand_worked():
    # one tie group of 2 items, 1 relevant: AP is 1 or 1/2 with equal chance -> 0.75
    q = Codes.from_bits(np.zeros((1, 2), bool))
    db = Codes.from_bits(np.zeros((2, 2), bool))
    assert evaluate(q, [0], db, [0, 1])["map@all"] == pytest.approx(0.75, abs=1e-15)
    assert evaluate(q, [0], db, [0, 1], ties="index")["map@all"] == 1.0
    assert evaluate(q, [0], db, [1, 0], ties="index")["map@all"] == 0.5
    # top 1 of the same group: relevant first with chance 1/2 (AP 1), else AP 0
    assert evaluate(q, [0], db, [0, 1], topk=1)["map@1"] == pytest.approx(0.5, abs=1e-15)


# --------------------------------------------------------------------------- policies and radius
def test_zero_hit_policies():
    rng = np.random.default_rng(3)
    q_bits, _, db_bits, _ = _random_case(rng, 6, 40, 8, 3, False)
    ql = np.array([0, 1, 2, 3, 0, 3])  # class 3 is absent from the database
    dl = rng.integers(0, 3, 40)
    q, db = Codes.from_bits(q_bits), Codes.from_bits(db_bits)
    zero = evaluate(q, ql, db, dl, ties="index", precision_at=(5,))
    excl = evaluate(q, ql, db, dl, ties="index", zero_hits="exclude", precision_at=(5,))
    ap, pn, prec, rec, n_rel = _reference(q_bits, ql, db_bits, dl, None, (5,), 2, "index")
    keep = n_rel > 0
    assert zero["n_queries_without_relevant"] == excl["n_queries_without_relevant"] == 2
    assert zero["n_queries_evaluated"] == 6 and excl["n_queries_evaluated"] == 4
    assert zero["map@all"] == pytest.approx(ap.sum() / 6, abs=1e-12)
    assert excl["map@all"] == pytest.approx(ap[keep].mean(), abs=1e-12)
    assert excl["precision_at_n"][5] == pytest.approx(pn[keep, 0].mean(), abs=1e-12)
    assert excl["recall_at_radius2"] == pytest.approx(rec[keep].mean(), abs=1e-12)
    assert zero["settings"]["zero_hits"] == "zero" and "left out" in excl["settings"]["policies"]["zero_hits"]
    # no query with a relevant item at all: exclude leaves nothing to average
    none = evaluate(q, np.full(6, 3), db, dl, zero_hits="exclude", precision_at=(5,))
    assert math.isnan(none["map@all"]) and none["n_queries_evaluated"] == 0


@pytest.mark.parametrize("bits", [5, 13, 70])
def test_pr_curve_matches_brute_force(bits):
    rng = np.random.default_rng(bits)
    q_bits, ql, db_bits, dl = _random_case(rng, 30, 200, bits, 6, True)
    dist, rel = _truth(q_bits, ql, db_bits, dl)
    for empty in ("zero", "exclude"):
        res = evaluate(Codes.from_bits(q_bits), ql, Codes.from_bits(db_bits), dl,
                       radius=bits // 3, empty_radius=empty, precision_at=(10,))
        curve = res["pr_curve"]
        assert list(curve["radius"]) == list(range(bits + 1))
        for r in range(bits + 1):
            within = dist <= r
            n_ret = within.sum(axis=1)
            hit = (within & rel).sum(axis=1)
            p = hit / np.maximum(n_ret, 1)
            p_ref = p.mean() if empty == "zero" else (p[n_ret > 0].mean() if (n_ret > 0).any() else np.nan)
            r_ref = np.where(rel.sum(1) > 0, hit / np.maximum(rel.sum(1), 1), 0).mean()
            np.testing.assert_allclose(curve["precision"][r], p_ref, atol=1e-12)
            assert abs(curve["recall"][r] - r_ref) < 1e-12
        assert res[radius_key(bits // 3)] == curve["precision"][bits // 3]
        assert res[radius_key(bits // 3, "recall")] == curve["recall"][bits // 3]
    # at radius K everything is retrieved: recall 1 for every query that has a relevant item
    assert curve["recall"][-1] == pytest.approx((rel.sum(axis=1) > 0).mean(), abs=1e-12)


def test_labels_as_ids_or_multihot_agree_and_threads_do_not_change_results():
    rng = np.random.default_rng(11)
    q_bits, ql, db_bits, dl = _random_case(rng, 21, 150, 16, 4, False)
    q, db = Codes.from_bits(q_bits), Codes.from_bits(db_bits)
    a = evaluate(q, ql, db, dl, topk=50, threads=1)
    b = evaluate(q, np.eye(4, dtype=int)[ql], db, np.eye(4, dtype=bool)[dl], topk=50, threads=2)
    assert a["map@50"] == b["map@50"]
    np.testing.assert_array_equal(a["per_query"]["ap"], b["per_query"]["ap"])
    assert a["settings"]["threads"] == 1 and b["settings"]["threads"] == 2


def test_summary_and_settings():
    rng = np.random.default_rng(5)
    q_bits, ql, db_bits, dl = _random_case(rng, 5, 30, 8, 3, False)
    res = evaluate(Codes.from_bits(q_bits), ql, Codes.from_bits(db_bits), dl, topk=10, radius=1)
    s = summary(res)
    assert list(s)[:4] == ["map@10", "precision@1", "precision@10", "precision_at_radius1"]
    assert res["settings"]["precision_at"] == [1, 10]  # 100 and 1000 exceed the 30 items
    assert res["settings"]["ties"] == "expected" and res["settings"]["topk"] == 10


def test_metric_names_are_one_spelling_for_every_key_form():
    """metrics.json keys, evaluate's summary keys and their parameters map to one display name each."""
    from learn2hash.metrics import metric_name

    assert metric_name("precision_at_radius2") == metric_name("precision@H<=2") == "P@H<=2"
    assert metric_name("recall_at_radius3") == metric_name("recall@H<=3") == "R@H<=3"
    assert metric_name("map@all") == metric_name("map") == "mAP@all"
    assert metric_name("map@1000") == "mAP@1000" and metric_name("precision@100") == "P@100"
    assert metric_name("something_else") == "something_else"
    rng = np.random.default_rng(5)
    q_bits, ql, db_bits, dl = _random_case(rng, 5, 30, 8, 3, False)
    names = [metric_name(k) for k in summary(evaluate(Codes.from_bits(q_bits), ql, Codes.from_bits(db_bits), dl,
                                                      topk=10, radius=1))]
    assert names[:6] == ["mAP@10", "P@1", "P@10", "P@H<=1", "R@H<=1", "queries"]
    assert len(set(names)) == len(names)


# --------------------------------------------------------------------------- bad input
def _small():
    rng = np.random.default_rng(0)
    return (Codes.from_bits(rng.random((4, 16)) < .5), np.array([0, 1, 2, 0]),
            Codes.from_bits(rng.random((10, 16)) < .5), rng.integers(0, 3, 10))


@pytest.mark.parametrize("change,message", [
    (lambda a: {**a, "db_codes": Codes.from_bits(np.zeros((10, 12), bool))}, "16 bits but database codes have 12"),
    (lambda a: {**a, "query_labels": np.array([0, 1, 2])}, "query labels have 3 rows"),
    (lambda a: {**a, "db_labels": np.zeros((9, 3), bool)}, "database labels have 9 rows"),
    (lambda a: {**a, "query_labels": np.zeros((4, 3)), "db_labels": np.zeros((10, 5))}, "3 classes"),
    (lambda a: {**a, "query_labels": np.array([0, -1, 2, 0])}, ">= 0"),
    (lambda a: {**a, "db_labels": np.full((10, 3), 0.5)}, "only 0 and 1"),
    (lambda a: {**a, "query_codes": np.zeros((4, 16))}, "learn2hash.Codes"),
    (lambda a: {**a, "query_codes": Codes.empty(16), "query_labels": np.zeros(0, int)}, "empty"),
    (lambda a: {**a, "ties": "random"}, "ties must be one of"),
    (lambda a: {**a, "zero_hits": "skip"}, "zero_hits"),
    (lambda a: {**a, "topk": 0}, "topk must be an integer >= 1"),
    (lambda a: {**a, "radius": -1}, "radius"),
    (lambda a: {**a, "precision_at": (5, 11)}, "exceeds the database size 10"),
    (lambda a: {**a, "threads": 0}, "threads"),
])
def test_bad_input_is_a_clear_error(change, message):
    q, ql, db, dl = _small()
    args = change({"query_codes": q, "query_labels": ql, "db_codes": db, "db_labels": dl})
    with pytest.raises(Learn2HashError, match=message.replace("(", r"\(")):
        evaluate(args.pop("query_codes"), args.pop("query_labels"), args.pop("db_codes"), args.pop("db_labels"),
                 **args)


# --------------------------------------------------------------------------- CLI
def _write_inputs(tmp_path, q_bits=None):
    rng = np.random.default_rng(2)
    q_bits = rng.random((12, 13)) < 0.5 if q_bits is None else q_bits
    db_bits = rng.random((80, 13)) < 0.5
    ql, dl = rng.integers(0, 4, len(q_bits)), rng.integers(0, 4, 80)
    Codes.from_bits(q_bits).save(tmp_path / "q.npy")
    Codes.from_bits(db_bits).save(tmp_path / "db.npy")
    np.save(tmp_path / "ql.npy", ql)
    np.save(tmp_path / "dl.npy", np.eye(4, dtype=np.uint8)[dl])
    files = ["--query-codes", str(tmp_path / "q.npy"), "--query-labels", str(tmp_path / "ql.npy"),
             "--db-codes", str(tmp_path / "db.npy"), "--db-labels", str(tmp_path / "dl.npy")]
    return files, (q_bits, ql, db_bits, dl)


def test_cli_evaluate_prints_table_and_writes_json(tmp_path, capsys):
    files, (q_bits, ql, db_bits, dl) = _write_inputs(tmp_path)
    out = tmp_path / "metrics.json"
    rc = cli.main(["evaluate", *files, "--topk", "20", "--ties", "index", "--radius", "3",
                   "--precision-at", "5,10", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    ap, pn, prec, rec, _ = _reference(q_bits, ql, db_bits, dl, 20, (5, 10), 3, "index")
    assert "mAP@20" in text and f"{ap.mean():.4f}" in text
    saved = json.loads(out.read_text())
    assert saved["map@20"] == pytest.approx(ap.mean(), abs=1e-12)
    assert saved["precision_at_n"]["10"] == pytest.approx(pn[:, 1].mean(), abs=1e-12)
    assert saved["settings"]["ties"] == "index" and saved["settings"]["radius"] == 3
    assert len(saved["pr_curve"]["precision"]) == 14


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["evaluate", "--help"])
    assert exc.value.code == 0
    assert "--query-codes" in capsys.readouterr().out


@pytest.mark.parametrize("edit,message", [
    (lambda f, p: f[:6], "--db-labels"),
    (lambda f, p: f[:2] + ["--query-labels", str(p / "missing.npy")] + f[4:], "missing.npy"),
    (lambda f, p: f + ["--topk", "ten"], "--topk"),
    (lambda f, p: f + ["--ties", "random"], "ties"),
    (lambda f, p: f + ["--precision-at", "5,x"], "--precision-at"),
    (lambda f, p: f + ["--precision-at", "500"], "exceeds the database size"),
    (lambda f, p: f[:6] + ["--db-labels", str(p / "ql.npy")], "database labels have 12 rows"),
    (lambda f, p: f[:4] + ["--db-codes", str(p / "other.npy")] + f[6:], "13 bits but database codes have 9"),
    (lambda f, p: f[:2] + ["--query-labels", str(p / "bad.npy")] + f[4:], "bad.npy"),
    (lambda f, p: f + ["--json", str(p / "no" / "such" / "out.json")], "--json"),
])
def test_cli_user_errors_are_one_line(tmp_path, capsys, edit, message):
    files, _ = _write_inputs(tmp_path)
    Codes.from_bits(np.zeros((80, 9), bool)).save(tmp_path / "other.npy")
    (tmp_path / "bad.npy").write_bytes(b"not an npy file")
    rc = cli.main(["evaluate", *edit(files, tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("learn2hash evaluate: error:")
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize("ties", ["expected", "index"])
def test_several_cutoffs_in_one_pass_equal_separate_evaluations(ties):
    """map_at: every cutoff from the same passes over the database, each value exactly (to the bit) what an
    evaluation at that cutoff alone gives; the rest of the result is that of topk alone."""
    rng = np.random.default_rng(11)
    for bits, multilabel in ((6, False), (16, True), (70, False)):
        q_bits, ql, db_bits, dl = _random_case(rng, 21, 300, bits, 4 if not multilabel else 9, multilabel)
        q, db = Codes.from_bits(q_bits), Codes.from_bits(db_bits)
        cutoffs = [None, 1, 7, 100, 299, 300, 5000]
        for zero_hits in ("zero", "exclude"):
            both = evaluate(q, ql, db, dl, topk=50, ties=ties, zero_hits=zero_hits, map_at=cutoffs)
            alone = evaluate(q, ql, db, dl, topk=50, ties=ties, zero_hits=zero_hits)
            assert list(both["map_at"]) == [50] + cutoffs
            assert both["map@50"] == both["map_at"][50] == alone["map@50"]
            np.testing.assert_array_equal(both["per_query"]["ap"], alone["per_query"]["ap"])
            assert both["precision_at_n"] == alone["precision_at_n"]
            assert both["settings"] == alone["settings"]
            for c in cutoffs:
                single = evaluate(q, ql, db, dl, topk=c, ties=ties, zero_hits=zero_hits)[map_key(c)]
                assert both["map_at"][c] == single or (math.isnan(single) and math.isnan(both["map_at"][c])), c


def test_old_key_spellings_are_read_as_the_one_spelling():
    from learn2hash.metrics import current_key

    assert current_key("map") == "map@all" and current_key("n_queries") == "n_query"
    assert current_key("precision@H<=2") == "precision_at_radius2" and current_key("recall@H<=3") == "recall_at_radius3"
    for key in ("map@all", "map@1000", "precision_at_radius2", "n_query", "precision@100", "ties"):
        assert current_key(key) == key


def test_evaluate_names_its_values_with_the_one_spelling():
    """evaluate()'s scalar values sit under the keys summary(), metrics.json and every table use: map_key(topk)
    and radius_key(radius); the summary is exactly those values, and no key of the older spelling is left."""
    rng = np.random.default_rng(8)
    q_bits, ql, db_bits, dl = _random_case(rng, 9, 60, 10, 3, False)
    q, db = Codes.from_bits(q_bits), Codes.from_bits(db_bits)
    for topk, radius, mk in ((None, 2, "map@all"), (25, 3, "map@25"), (1000, 0, "map@1000")):
        res = evaluate(q, ql, db, dl, topk=topk, radius=radius, ties="index")
        ap, _, prec, rec, _ = _reference(q_bits, ql, db_bits, dl, topk, (1, 10), radius, "index")
        assert map_key(topk) == mk and res[mk] == pytest.approx(ap.mean(), abs=1e-12)
        assert res[f"precision_at_radius{radius}"] == pytest.approx(prec.mean(), abs=1e-12)
        assert res[f"recall_at_radius{radius}"] == pytest.approx(rec.mean(), abs=1e-12)
        assert not {"map", "precision_at_radius", "recall_at_radius"} & set(res)
        s = summary(res)
        assert {k: s[k] for k in (mk, radius_key(radius), radius_key(radius, "recall"))} == \
            {k: res[k] for k in (mk, f"precision_at_radius{radius}", f"recall_at_radius{radius}")}


def test_key_helpers():
    assert (map_key(None), map_key(1000), map_key(np.int64(7))) == ("map@all", "map@1000", "map@7")
    assert (radius_key(0), radius_key(2, "recall")) == ("precision_at_radius0", "recall_at_radius2")
    for bad, call in (("topk", lambda: map_key(0)), ("topk", lambda: map_key("10")),
                      ("radius", lambda: radius_key(-1)), ("which", lambda: radius_key(2, "f1"))):
        with pytest.raises(Learn2HashError, match=bad):
            call()
