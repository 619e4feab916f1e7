"""Deck validation: every bad deck exits 2 with one message naming the file, the key and the reason."""
from __future__ import annotations

import pytest

from conftest import rewl_here, run_rewl
from rewl.config import DeckError, load, parse

GOOD = """
[task]
kind = "spiral"
[grid.x]
min = -2.0
max = 2.0
width = 0.1
[windows]
count = 2
"""

MD = "[sampler]\nkind = 'wlmd'\n"

BAD = [
    # (description, deck text, words the message must contain)
    ("unknown key with suggestion", GOOD + "[sampler]\nwalkers_per_rnak = 4\n", ["[sampler] walkers_per_rnak", "walkers_per_rank"]),
    ("unknown table", GOOD + "[sampeler]\nkind = 'wlmc'\n", ["[sampeler]", "[sampler]"]),
    ("wrong type", GOOD + "[sampler]\nwalkers_per_rank = 'many'\n", ["[sampler] walkers_per_rank", "int"]),
    ("non-positive", GOOD + "[sampler]\nwalkers_per_rank = 0\n", ["[sampler] walkers_per_rank", "> 0"]),
    ("negative chunk", GOOD + "[model]\nchunk_points = -5\n", ["[model] chunk_points", ">= 0"]),
    ("chunks and compile", GOOD + "[model]\nchunk_points = 50\ncompile = true\n", ["[model] chunk_points", "compile = true"]),
    ("unknown task", GOOD.replace('"spiral"', '"spirals"'), ["[task] kind", "spiral"]),
    ("overlap out of range", GOOD.replace("count = 2", "count = 2\noverlap = 1.5"), ["[windows] overlap"]),
    ("flatness out of range", GOOD + "[schedule]\nflatness = 1.2\n", ["[schedule] flatness"]),
    ("ln f final above initial", GOOD + "[schedule]\nln_f_final = 2.0\n", ["[schedule] ln_f_final", "ln_f_initial"]),
    ("unknown schedule", GOOD + "[schedule]\nkind = 'quarter'\n", ["[schedule] kind", "1/t", "ramp"]),
    ("grid max below min", GOOD.replace("max = 2.0", "max = -3.0"), ["[grid.x] max", "> min"]),
    ("grid width not whole bins", GOOD.replace("width = 0.1", "width = 0.3"), ["[grid.x] width", "whole number"]),
    ("missing grid", '[task]\nkind = "spiral"\n', ["[grid]", "required"]),
    ("missing task kind", GOOD.replace('kind = "spiral"', ""), ["[task] kind", "required"]),
    ("interval not multiple of sync", GOOD + "[exchange]\ninterval = 150\n", ["[exchange] interval", "sync_interval"]),
    ("too many windows for grid", GOOD.replace("count = 2", "count = 100"), ["[windows] count"]),
    ("box list of wrong length", GOOD + "[model]\nbox = [1.0, 2.0]\n", ["[model] box", "4"]),
    ("hidden not integers", GOOD + "[model]\nhidden = [6, 'a']\n", ["[model] hidden"]),
    ("bad device", GOOD + "[run]\ndevice = 'tpu'\n", ["[run] device", "auto"]),
    ("box m >= n", '[task]\nkind = "box_quadratic"\nn = 3\nm = 3\n[grid.x]\nmin=-1.0\nmax=0.0\nwidth=0.1\n'
     '[grid.y]\nmin=-1.0\nmax=0.0\nwidth=0.1\n', ["[task] m"]),
    ("model table on box task", '[task]\nkind = "box_quadratic"\n[model]\nhidden=[2]\n[grid.x]\nmin=-1.0\nmax=0.0\n'
     'width=0.1\n[grid.y]\nmin=-1.0\nmax=0.0\nwidth=0.1\n', ["[model]", "box_quadratic"]),
    ("toml syntax", "[task\nkind = 1", ["(syntax)", "TOML"]),
    ("nan value", GOOD + "[init]\nlearning_rate = nan\n", ["[init] learning_rate", "finite"]),
    # wlmd keys
    ("dt zero", GOOD + MD + "dt = 0.0\n", ["[sampler] dt", "> 0"]),
    ("dt negative", GOOD + MD + "dt = -1e-3\n", ["[sampler] dt", "> 0"]),
    ("gamma zero", GOOD + MD + "gamma = 0.0\n", ["[sampler] gamma", "(0, 1]"]),
    ("gamma above one", GOOD + MD + "gamma = 1.5\n", ["[sampler] gamma", "(0, 1]"]),
    ("kernel width zero", GOOD + MD + "kernel_width = 0\n", ["[sampler] kernel_width", "> 0"]),
    ("wall strength negative", GOOD + MD + "wall_strength = -3.0\n", ["[sampler] wall_strength", "> 0"]),
    ("unknown integrator", GOOD + MD + "integrator = 'verlet'\n", ["[sampler] integrator", "baoab"]),
    ("a removed key", GOOD + MD + "flatness_of = 'deposits'\n", ["[sampler] flatness_of", "was removed", "delete"]),
    ("wall deposits not a bool", GOOD + MD + "wall_deposits = 1\n", ["[sampler] wall_deposits"]),
    ("wall deposits under wlmc", GOOD + "[sampler]\nwall_deposits = true\n", ["[sampler] wall_deposits", "'wlmd'"]),
    ("unknown sampler", GOOD + "[sampler]\nkind = 'nuts'\n", ["[sampler] kind", "hmc", "wlmd"]),
    ("hmc key under wlmc", GOOD + "[sampler]\nleapfrog_steps = 5\n", ["[sampler] leapfrog_steps", "'hmc'"]),
    ("wlmc key under hmc", GOOD + "[sampler]\nkind = 'hmc'\nsigma_initial = 0.1\n", ["[sampler] sigma_initial", "'wlmc'"]),
    ("no leapfrog steps", GOOD + "[sampler]\nkind = 'hmc'\nleapfrog_steps = 0\n", ["[sampler] leapfrog_steps", "[1, 1000]"]),
    ("wlmc key under wlmd", GOOD + MD + "sigma_initial = 0.1\n", ["[sampler] sigma_initial", "'wlmc'"]),
    ("wlmd key under wlmc", GOOD + "[sampler]\ndt = 0.1\n", ["[sampler] dt", "'wlmd'"]),
    ("ramp key without ramp", GOOD + "[schedule]\nramp_steps = 10\n", ["[schedule] ramp_steps", "'ramp'"]),
    ("plateau before ramp end", GOOD + "[schedule]\nkind = 'ramp'\nramp_steps = 100\nplateau_end = 50\n",
     ["[schedule] plateau_end", "ramp_steps"]),
    ("decay time zero", GOOD + "[schedule]\nkind = 'ramp'\ndecay_time = 0\n", ["[schedule] decay_time", "> 0"]),
    ("key of another task", GOOD.replace('kind = "spiral"', 'kind = "spiral"\nn = 3'), ["[task] n", "'box_quadratic'"]),
    ("regression batch too big", '[task]\nkind = "spiral_regression"\npoints = 40\n[grid.x]\nmin=-1.0\nmax=0.0\n'
     'width=0.1\n[grid.y]\nmin=-1.0\nmax=0.0\nwidth=0.1\n[baseline]\nbatch_size = 30\n', ["[baseline] batch_size", "20"]),
]


def test_good_deck_defaults():
    cfg = parse(GOOD, "good.toml")
    assert cfg.windows.overlap == 0.75 and cfg.schedule.flatness == 0.8
    assert cfg.grid.y.bins == 101                      # one bin per accuracy value k / 100
    assert cfg.world_size == 2


def test_hmc_defaults():
    """HMC: acceptance target 0.65, ten leapfrog steps, ln f from 1 / M per visit (as WLMD)."""
    cfg = parse(GOOD + "[sampler]\nkind = 'hmc'\nwalkers_per_rank = 32\n", "hmc.toml")
    s = cfg.sampler
    assert (s.target_acceptance, s.step_size, s.leapfrog_steps, s.adapt_interval) == (0.65, 0.1, 10, 1000)
    assert cfg.schedule.ln_f_initial == 1 / 32


@pytest.mark.parametrize("name,text,words", BAD, ids=[b[0] for b in BAD])
def test_bad_deck_messages(name, text, words):
    with pytest.raises(DeckError) as info:
        parse(text, "deck.toml")
    message = str(info.value)
    assert message.startswith("deck.toml: ")
    for word in words:
        assert word in message, message


@pytest.mark.mpi
def test_bad_decks_exit_2_through_cli(tmp_path, capsys):
    """Ten kinds of bad deck through `rewl check` (in this process: the command's own main) and
    two through `rewl run` (its process): exit 2, the key named once, no traceback."""
    from rewl.cli import main
    for k, (name, text, words) in enumerate(BAD[:10]):
        deck = tmp_path / f"bad{k}.toml"
        deck.write_text(text)
        if k < 2:
            proc = run_rewl(["run", str(deck)])
            code, err = proc.returncode, proc.stderr
        else:
            code, err = main(["check", str(deck)]), capsys.readouterr().err
        assert code == 2, (name, err)
        assert str(deck) in err and words[0] in err, (name, err)
        assert "Traceback" not in err and err.count(words[0]) == 1, (name, err)


@pytest.mark.mpi
def test_bad_deck_under_mpiexec_reported_once(tmp_path):
    deck = tmp_path / "bad.toml"
    deck.write_text(BAD[0][1])
    proc = run_rewl(["run", str(deck)], ranks=2)
    assert proc.returncode == 2
    assert proc.stderr.count("walkers_per_rnak") == 1, proc.stderr


def test_missing_deck_file(tmp_path):
    with pytest.raises(DeckError, match="cannot be read"):
        load(tmp_path / "nope.toml")


@pytest.mark.mpi
def test_shipped_decks_validate():
    from conftest import ROOT
    for deck in sorted((ROOT / "inputs").glob("*.toml")):
        proc = rewl_here(["check", str(deck)])
        assert proc.returncode == 0, (deck, proc.stderr)
        assert "window" in proc.stdout and "ln f      per walker visit: at ln f" in proc.stdout
        # a deck whose task can be built gets its rank's memory, measured on one step of 4 walkers
        assert ("  memory    a rank's" in proc.stdout) == ("NOT READY" not in proc.stdout), (deck, proc.stdout)
