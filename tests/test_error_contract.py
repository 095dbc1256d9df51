"""Issue 18's cases: every bad input is one `decentral: error:` line, exit code 2, no traceback."""

from __future__ import annotations

import pytest

from tests.contract import assert_one_line_error

RUN = ["run", "--data-root", "/nonexistent-data-root"]  # refused before the data is looked at


@pytest.mark.parametrize("text,pattern", [
    ("units = true", "--units: expected int, got True"),
    ("sigma = true", "--sigma: expected float, got True"),
    ("depth = 99999999999999999999999", "--depth: .* too large"),
    ("seed = 1e300", "--seed: .* too large"),
    ("download = 3", "--download: expected bool"),
    ("topology = [1, 2]", "--topology: expected str"),
    ("units = {a = 1}", "--units: expected int"),
    ("units = [", "malformed"),
])
def test_toml_values_are_strictly_typed(tmp_path, capsys, text, pattern):
    config = tmp_path / "c.toml"
    config.write_text(text + "\n")
    assert_one_line_error([*RUN, "--config", config], capsys, pattern)


@pytest.mark.parametrize("text,pattern", [
    ("units: [\n", "malformed"),
    ("units: !!python/object/apply:os.system ['echo hi']\n", "malformed.*constructor"),
    ("- 1\n- 2\n", "mapping"),
])
def test_yaml_is_parsed_safely(tmp_path, capsys, text, pattern):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    assert_one_line_error([*RUN, "--config", config], capsys, pattern)


def test_yaml_aliases_in_sweep_lists(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("sigma: [&a [&b [1, 1], *b], *a, *a]\n")  # nested (alias-expanding) lists
    assert_one_line_error(["sweep", "--config", config, "--out", tmp_path / "s"], capsys,
                          "--sigma: expected a list of numbers")


def test_binary_config_file(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_bytes(bytes(range(256)) * 4)
    assert_one_line_error([*RUN, "--config", config], capsys, "malformed")


@pytest.mark.parametrize("args", [["--units", "100000"], ["--depth", "100000000"], ["--width", "10000000"]])
def test_sizes_that_cannot_fit_are_refused_before_work(capsys, args):
    assert_one_line_error([*RUN, *args], capsys, "needs about .* GiB of memory")


def test_huge_flag_integers(capsys):
    assert_one_line_error([*RUN, "--units", "9" * 50], capsys, "--units: .* too large")


@pytest.mark.parametrize("args,pattern", [
    (["erdos_renyi", "--nodes", "10", "--degree", "-1"], "--degree must be > 0"),
    (["small_world", "--nodes", "10", "--rewire", "2"], "--rewire must be"),
])
def test_topology_generate_refuses_bad_sizes(capsys, args, pattern):
    assert_one_line_error(["topology", "generate", *args], capsys, pattern)


def test_theory_cost_growing_with_sigma_is_refused_or_warned(capsys):
    from decentral.theory import TheoryConfig
    from decentral.theory.protocols import check_cost

    base = ["theory", "--depth", "0", "--realizations", "2", "--units", "3", "--workers", "1"]
    assert_one_line_error([*base, "--sigma", "1e9"], capsys, "RK45 steps.*lower --sigma or --t-end")
    with pytest.warns(RuntimeWarning, match="RK45 steps"):  # warned before the time is spent
        check_cost(TheoryConfig(depths=(0,), sigmas=[1e5], realizations=2, n_units=3))


@pytest.mark.slow
def test_download_without_internet_is_one_line(tmp_path, capsys):
    """Where the download cannot reach its mirrors (no network here): one line, exit 2."""
    import socket

    try:
        socket.create_connection(("ossci-datasets.s3.amazonaws.com", 443), timeout=3).close()
        pytest.skip("the internet is reachable here")
    except OSError:
        pass
    assert_one_line_error(["run", "--data-root", tmp_path, "--download", "--units", "4"], capsys,
                          "MNIST files missing .* download .* failed")
