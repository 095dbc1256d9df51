"""Topology files: formats, unit order, validation, the CLI, shipped files, ring consensus."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch

from decentral import topology
from decentral.cli import main
from decentral.errors import UserInputError
from decentral.update import euler_step

SHIPPED = Path(__file__).resolve().parent.parent / "topologies"
FORMATS = [".edgelist", ".txt", ".graphml", ".gml", ".csv", ".npy"]


def _weighted(directed: bool) -> nx.Graph:
    graph = topology.generate("directed" if directed else "small_world", 12, seed=3, weights=(0.1, 2.0))
    graph.add_node(12)  # an isolated node must survive every format
    return graph


def _cli(capsys, *argv):
    rc = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return rc, out, err


# --- formats and conventions ------------------------------------------------------------


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("directed", [False, True])
def test_each_format_round_trips_to_the_same_q(tmp_path, suffix, directed):
    graph = _weighted(directed)
    expected = topology.coupling_matrix(graph)
    path = topology.write_graph(graph, tmp_path / f"g{suffix}")
    with pytest.warns(UserWarning, match="disconnected"):
        q = topology.read_coupling_matrix(path, n_units=13)
    assert q.dtype == np.float64 and q.shape == (13, 13)
    np.testing.assert_array_equal(q, expected)
    assert np.array_equal(q, q.T) != directed


def test_q_convention_is_networkx_adjacency_and_unit_i_moves_toward_j(tmp_path):
    path = tmp_path / "d.edgelist"
    path.write_text("# directed\n0 1 2.5\n1 2\n")
    q = topology.read_coupling_matrix(path)
    graph = topology.read_graph(path)
    np.testing.assert_array_equal(q, nx.to_numpy_array(graph, nodelist=["0", "1", "2"]))
    assert q[0, 1] == 2.5 and q[1, 0] == 0 and q[1, 2] == 1  # missing weight means 1
    theta = torch.tensor([[0.0], [1.0], [1.0]], dtype=torch.float64)
    new = euler_step(theta, torch.zeros_like(theta), torch.from_numpy(q), theta,
                     lr=0.1, sigma=1.0, n_units=3, weight_decay=0.0)  # fmt: skip
    assert new[0, 0] > 0 and new[1, 0] == 1 and new[2, 0] == 1  # 0 pulled toward 1 only


def test_edgelist_optional_weights_comments_and_isolated_nodes(tmp_path):
    path = tmp_path / "g.edges"
    path.write_text("# a comment\n0 1\n1 2 0.5  # trailing comment\n3\n2 0 2\n")
    with pytest.warns(UserWarning, match=r"2 components \{0-2\}, \{3\}"):
        q = topology.read_coupling_matrix(path)
    expected = np.zeros((4, 4))
    expected[0, 1] = expected[1, 0] = 1
    expected[1, 2] = expected[2, 1] = 0.5
    expected[0, 2] = expected[2, 0] = 2
    np.testing.assert_array_equal(q, expected)


@pytest.mark.parametrize("suffix", [".edgelist", ".graphml", ".gml", ".csv", ".npy"])
def test_complete_file_equals_builtin_mean_field(tmp_path, suffix):
    path = topology.write_graph(topology.generate("complete", 7), tmp_path / f"c{suffix}")
    np.testing.assert_array_equal(topology.read_coupling_matrix(path, 7), topology.mean_field(7))


@pytest.mark.parametrize("n", [10, 200])
def test_shipped_complete_file_equals_mean_field(n):
    q = topology.read_coupling_matrix(SHIPPED / f"complete_n{n}.csv", n_units=n)
    np.testing.assert_array_equal(q, topology.mean_field(n))


def test_string_labels_follow_string_order(tmp_path):
    graph = nx.DiGraph([("b", "a"), ("c", "b")])
    path = topology.write_graph(graph, tmp_path / "s.graphml")
    q = topology.read_coupling_matrix(path)
    assert topology.unit_order(topology.read_graph(path)) == ["a", "b", "c"]
    np.testing.assert_array_equal(q, [[0, 0, 0], [1, 0, 0], [0, 1, 0]])


def test_integer_labels_sort_numerically_not_as_text():
    graph = nx.path_graph(12)
    graph = nx.relabel_nodes(graph, {i: str(i) for i in graph})  # as an edge list reads them
    assert topology.unit_order(graph) == [str(i) for i in range(12)]
    np.testing.assert_array_equal(topology.coupling_matrix(graph), nx.to_numpy_array(nx.path_graph(12)))


def test_describe_matrix_and_graph_agree_and_digest_is_sha256():
    path = SHIPPED / "ring_n10.edgelist"
    info = topology.describe(topology.read_graph(path), lr=0.01)
    from_q = topology.describe(topology.read_coupling_matrix(path), lr=0.01)
    for key in ("nodes", "edges", "directed", "lambda_max", "spectral_gap", "sigma_max_stable"):
        assert info[key] == pytest.approx(from_q[key])
    assert info["spectral_gap"] == pytest.approx(2 - 2 * np.cos(2 * np.pi / 10))
    assert info["sigma_max_stable"] == pytest.approx(2 * 10 / (0.01 * 4))
    assert topology.file_digest(path) == hashlib.sha256(path.read_bytes()).hexdigest()


# --- shipped files ----------------------------------------------------------------------


def _expected_edges(path: Path, kind: str, n: int) -> int:
    formula = {"complete": n * (n - 1) // 2, "ring": n, "star": n - 1, "small_world": 2 * n,
               "weighted": 2 * n, "scale_free": 2 * (n - 2), "lattice": {10: 13, 200: 370}[n]}  # fmt: skip
    if kind in formula:
        return formula[kind]
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return len(lines)


SHIPPED_FILES = sorted(p for p in SHIPPED.iterdir() if p.suffix in (".csv", ".edgelist"))


def test_every_kind_is_shipped_at_both_sizes():
    names = {p.name for p in SHIPPED_FILES}
    for kind in ("complete", "ring", "star", "lattice", "erdos_renyi", "small_world",
                 "scale_free", "weighted", "directed"):  # fmt: skip
        for n in (10, 200):
            assert any(name.startswith(f"{kind}_n{n}.") for name in names), (kind, n)


@pytest.mark.parametrize("path", SHIPPED_FILES, ids=lambda p: p.name)
def test_cli_reports_node_and_edge_counts_of_shipped_files(capsys, path):
    kind, n = re.fullmatch(r"(\w+)_n(\d+)", path.stem).groups()
    rc, out, err = _cli(capsys, "topology", path, "--json", "--nodes", n)
    assert rc == 0 and err == ""
    info = json.loads(out)
    assert info["nodes"] == int(n) and info["edges"] == _expected_edges(path, kind, int(n))
    assert info["components"] == 1 and info["sha256"] == topology.file_digest(path)
    assert info["directed"] == (kind == "directed") and info["weighted"] == (kind == "weighted")
    for key in ("lambda_max", "spectral_gap", "sigma_max_stable"):
        assert info[key] > 0


@pytest.mark.parametrize("path", [p for p in SHIPPED_FILES if p.suffix == ".edgelist"], ids=lambda p: p.name)
def test_shipped_files_regenerate_from_their_header(path):
    kind, n, seed = re.match(r"# (\w+) N=(\d+) seed=(\d+)", path.read_text()).groups()
    graph = topology.generate(kind, int(n), int(seed))
    np.testing.assert_array_equal(topology.read_coupling_matrix(path), topology.coupling_matrix(graph))


# --- CLI --------------------------------------------------------------------------------


def test_cli_generate_to_stdout_and_to_file(tmp_path, capsys):
    rc, out, _ = _cli(capsys, "topology", "generate", "ring", "--nodes", 5)
    assert rc == 0 and out.splitlines()[1:] == ["0 1", "0 4", "1 2", "2 3", "3 4"]
    target = tmp_path / "sw.graphml"
    rc, out, _ = _cli(capsys, "topology", "generate", "small_world", "--nodes", 30, "--seed", 4,
                      "--degree", 6, "--out", target, "--json")  # fmt: skip
    info = json.loads(out)
    assert rc == 0 and info["nodes"] == 30 and info["edges"] == 90 and target.exists()
    rc, out, _ = _cli(capsys, "topology", target, "--lr", 0.01)
    assert rc == 0 and "unit order" in out and "lambda_max" in out and "at lr=0.01" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "--nodes", "5"], "needs KIND and --nodes"),
        (["generate", "ring"], "needs KIND and --nodes"),
        (["generate", "torus", "--nodes", "5"], "unknown topology kind 'torus'"),
        (["generate", "ring", "--nodes", "5", "--weights", "2,1"], "--weights must be LOW,HIGH"),
        (["x.edgelist", "--seed", "3"], "--seed only go with 'generate'"),
        (["x.edgelist", "--lr", "0"], "--lr must be > 0"),
    ],
)
def test_cli_argument_errors(capsys, argv, message):
    rc, out, err = _cli(capsys, "topology", *argv)
    assert rc == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1


# --- bad files --------------------------------------------------------------------------

BAD_FILES = [
    ("missing.edgelist", None, "cannot read .*missing.edgelist: No such file"),
    ("bad.edgelist", "0 1 abc\n", "cannot read .* as edge list: .*abc"),
    ("bad.edgelist", "0 1 2 3\n", "cannot read .* as edge list"),
    ("bad.graphml", "<graphml><oops", "cannot read .* as GraphML"),
    ("bad.gml", "graph [ node [ id 0 ", "cannot read .* as GML"),
    ("bad.csv", "0,1\n1\n", "cannot read .* as CSV matrix"),
    ("bad.csv", "0,1,1\n1,0,1\n", "adjacency matrix must be square, got shape \\(2, 3\\)"),
    ("empty.edgelist", "# nothing\n", "graph has no nodes"),
    ("neg.edgelist", "0 1\n1 2 -0.5\n", "edge 1 -- 2 has weight -0.5; weights must be finite and >= 0"),
    ("nan.edgelist", "0 1 nan\n", "edge 0 -- 1 has weight nan"),
    ("inf.edgelist", "# directed\n0 1 inf\n", "edge 0 -> 1 has weight inf"),
    ("nan.csv", "0,nan\nnan,0\n", "has weight nan"),
    ("loop.edgelist", "0 1\n1 2\n2 2\n", "self-loop on node 2 rejected"),
    ("loop.csv", "1,1\n1,0\n", "self-loop on node 0 rejected"),
    ("g.xyz", "0 1\n", "unknown topology file extension \\('.xyz'\\)"),
    ("g", "0 1\n", "unknown topology file extension \\(no extension\\)"),
    ("gaps.edgelist", "0 1\n1 3\n", "labels must be exactly 0..2: missing 2, unexpected 3"),
    ("onebased.edgelist", "1 2\n2 3\n", "missing 0, unexpected 3 \\(renumber 1..N as 0..N-1\\)"),
    ("dup.edgelist", "0 1\n01 2\n", "node labels '1' and '01' both mean unit 1"),
]


@pytest.mark.parametrize("name, text, message", BAD_FILES, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD_FILES)])
def test_bad_files_give_one_line_error_and_exit_code_2(tmp_path, capsys, name, text, message):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    rc, out, err = _cli(capsys, "topology", path)
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("decentral: error: ")
    assert re.search(message, err), err


def test_node_count_mismatch(capsys):
    path = SHIPPED / "ring_n10.edgelist"
    rc, _, err = _cli(capsys, "topology", path, "--nodes", 12)
    assert rc == 2 and "has 10 nodes but there are 12 units" in err
    with pytest.raises(UserInputError, match="has 10 nodes but there are 9 units"):
        topology.read_coupling_matrix(path, n_units=9)


def test_disconnected_graph_is_allowed_with_a_warning_naming_components(tmp_path, capsys):
    path = tmp_path / "two.edgelist"
    path.write_text("0 1\n1 2\n3 4\n4 5\n5 3\n6\n")
    with pytest.warns(UserWarning, match=r"disconnected: 3 components \{0-2\}, \{3-5\}, \{6\}"):
        rc, out, _ = _cli(capsys, "topology", path, "--json")
    info = json.loads(out)
    assert rc == 0 and info["components"] == 3 and info["spectral_gap"] == 0.0


def test_disconnected_warning_names_string_labels(tmp_path):
    path = tmp_path / "named.edgelist"
    path.write_text("alice bob\ncarol dave\n")
    with pytest.warns(UserWarning, match=r"\{alice, bob\}, \{carol, dave\}"):
        topology.read_coupling_matrix(path)


# --- dynamics: consensus on a ring ------------------------------------------------------


def _consensus_distance(theta: torch.Tensor) -> float:
    return float(((theta - theta.mean(dim=0)) ** 2).sum(dim=1).mean())


def _run_ring(theta: torch.Tensor, q: np.ndarray, steps: int, lr: float, sigma: float) -> list[float]:
    q_rows, distances = torch.from_numpy(q), [_consensus_distance(theta)]
    for _ in range(steps):
        theta = euler_step(theta, torch.zeros_like(theta), q_rows, theta,
                           lr=lr, sigma=sigma, n_units=len(q), weight_decay=0.0)  # fmt: skip
        distances.append(_consensus_distance(theta))
    return distances


@pytest.fixture
def ring20(tmp_path):
    path = topology.write_graph(topology.generate("ring", 20), tmp_path / "ring20.edgelist")
    return topology.read_coupling_matrix(path, n_units=20)


def test_ring_slowest_mode_decays_exactly_at_the_spectral_gap_rate(ring20):
    n, lr, sigma = 20, 0.1, 40.0  # h = lr*sigma/N = 0.2, h*lambda_max = 0.8 < 2
    gap = topology.spectral_gap(ring20)
    assert gap == pytest.approx(2 - 2 * np.cos(2 * np.pi / n))
    mode = np.cos(2 * np.pi * np.arange(n) / n)  # slowest Laplacian eigenvector
    direction = np.random.default_rng(0).normal(size=4)
    theta = torch.from_numpy(np.outer(mode, direction) + 3.0)  # plus a consensus offset
    distances = np.array(_run_ring(theta, ring20, 50, lr, sigma))
    factor = (1 - lr * sigma * gap / n) ** 2
    np.testing.assert_allclose(distances[1:] / distances[:-1], factor, rtol=1e-9)


def test_ring_random_state_decays_asymptotically_at_the_spectral_gap_rate(ring20):
    n, lr, sigma = 20, 0.1, 40.0
    theta = torch.from_numpy(np.random.default_rng(1).normal(size=(n, 5)))
    mean0 = theta.mean(dim=0).clone()
    distances = np.array(_run_ring(theta, ring20, 400, lr, sigma))
    factor = (1 - lr * sigma * topology.spectral_gap(ring20) / n) ** 2
    assert distances[1] / distances[0] < factor  # faster modes decay first
    np.testing.assert_allclose(distances[-1] / distances[-2], factor, rtol=1e-6)
    np.testing.assert_allclose(distances[-1] / distances[-101], factor**100, rtol=1e-4)
    assert torch.allclose(_final_mean(theta, ring20, lr, sigma), mean0)  # symmetric Q keeps the mean


def _final_mean(theta: torch.Tensor, q: np.ndarray, lr: float, sigma: float) -> torch.Tensor:
    new = euler_step(theta, torch.zeros_like(theta), torch.from_numpy(q), theta,
                     lr=lr, sigma=sigma, n_units=len(q), weight_decay=0.0)  # fmt: skip
    return new.mean(dim=0)


def test_directed_graph_without_a_single_leader_group_warns(tmp_path, capsys):
    path = tmp_path / "two_leaders.edgelist"
    path.write_text("# directed\n0 1\n1 0\n2 1\n2 3\n3 4\n4 3\n")  # 2 follows both {0,1} and {3,4}
    with pytest.warns(UserWarning, match=r"cannot reach consensus: 2 groups .* \{0-1\}, \{3-4\}"):
        rc, out, _ = _cli(capsys, "topology", path, "--json")
    info = json.loads(out)
    assert rc == 0 and info["components"] == 1 and not info["reaches_consensus"]
    assert info["spectral_gap"] == 0.0 and info["strong_components"] == 3
    assert topology.describe(topology.generate("directed_ring", 6))["reaches_consensus"]
    assert topology.leader_groups(np.array([[0, 1.0], [0, 0]])) == [[1]]  # 0 follows 1


def test_exact_euler_bound_is_tighter_for_a_complex_spectrum():
    q, lr = topology.coupling_matrix(topology.generate("directed_ring", 3)), 0.01
    assert topology.sigma_max_stable(q, lr) == pytest.approx(6 / (lr * np.sqrt(3)))
    assert topology.sigma_max_euler(q, lr) == pytest.approx(3 / lr)
    theta = torch.from_numpy(np.random.default_rng(2).normal(size=(3, 2)))
    for sigma, grows in ((0.95 * 3 / lr, False), (1.05 * 3 / lr, True)):  # both pass lambda_max's test
        distances = _run_ring(theta, q, 400, lr, sigma)
        assert (distances[-1] > distances[0]) == grows


def test_gml_without_labels_uses_ids(tmp_path):
    path = tmp_path / "ids.gml"
    path.write_text("graph [\n directed 1\n node [ id 0 ]\n node [ id 1 ]\n node [ id 2 ]\n"
                    " edge [ source 0 target 1 weight 0.5 ]\n edge [ source 2 target 0 ]\n]\n")  # fmt: skip
    np.testing.assert_array_equal(topology.read_coupling_matrix(path), [[0, 0.5, 0], [0, 0, 0], [1, 0, 0]])


@pytest.mark.parametrize("kind", sorted(topology.KINDS))
def test_every_kind_generates_a_valid_graph_and_is_seed_deterministic(kind):
    q = topology.coupling_matrix(topology.generate(kind, 16, seed=5))
    np.testing.assert_array_equal(q, topology.coupling_matrix(topology.generate(kind, 16, seed=5)))
    assert q.shape == (16, 16) and np.all(np.diag(q) == 0) and np.all(q >= 0)
    assert np.array_equal(q, q.T) == (not kind.startswith("directed"))


def test_networkx_is_imported_only_where_a_graph_is_built_or_read():
    """`decentral run --help` and a mean-field run never need networkx (its import is start-up time)."""
    import subprocess
    import sys

    probe = ("import sys\nfrom decentral import cli, simulation, topology, forms, problem\n"
             "from decentral.config import RunConfig\n"
             "topology.load_coupling(None, RunConfig().validate().units)\n"
             "print('networkx' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "False"
